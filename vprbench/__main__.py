"""``python -m vprbench``: the command line (vprbench.cli)."""

from vprbench.cli import main

if __name__ == "__main__":  # not when a spawned loader process imports it
    main()
