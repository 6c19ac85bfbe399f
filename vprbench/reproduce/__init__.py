"""`vprbench reproduce`: the registry of published results (``registry``: vprbench/published.yaml),
measured against published (``verdict``), and running an entry with its recorded settings through
the extract and evaluate functions (``run``)."""
