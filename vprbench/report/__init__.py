"""Stage 5 of the data flow: run records (and profiles) -> one pandas DataFrame -> tables (LaTeX,
Markdown, CSV) and matplotlib figures (PNG and PDF). Every table and figure is a function of that frame.

``records`` (which records, and the frame), ``tables`` (recall tables, baseline tests, LaTeX/Markdown/
CSV), ``figures`` (curves, efficiency, training, mosaics), ``write`` (``write_report``: one report).
"""
