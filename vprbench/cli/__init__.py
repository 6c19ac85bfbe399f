"""The ``vprbench`` command line: the root group and the commands assembled from one module per
command group (``vprbench/cli/<group>.py``), and the entry point that turns bad input into one-line
errors. The modules parse, call library functions and render with rich; no logic here."""

from __future__ import annotations

import sys
import warnings

import click

from vprbench import __version__
from vprbench.errors import RandomInitWarning, VPRBenchError
from vprbench.ui import err_console


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, RandomInitWarning):
        err_console.print(f"[bold red]WARNING:[/] {message}")
    else:
        err_console.print(f"[yellow]warning:[/] {message}")


@click.group()
@click.version_option(__version__, prog_name="vprbench")
def cli() -> None:
    """vprbench: protocols, cached descriptors, recall@k and ablations for Visual Place Recognition."""


def _register_groups() -> None:
    from vprbench.cli.ablate import ablate_cmd
    from vprbench.cli.audit import audit_cmd
    from vprbench.cli.compare import compare_cmd
    from vprbench.cli.datasets import datasets
    from vprbench.cli.extract import evaluate_cmd, extract_cmd
    from vprbench.cli.models import models
    from vprbench.cli.profile import profile_cmd
    from vprbench.cli.quickstart import quickstart_cmd
    from vprbench.cli.report import report_cmd
    from vprbench.cli.reproduce import reproduce_cmd
    from vprbench.cli.train import train_group

    for command in (datasets, models, extract_cmd, evaluate_cmd, profile_cmd, quickstart_cmd,
                    train_group, ablate_cmd, report_cmd, compare_cmd, audit_cmd,
                    reproduce_cmd):  # fmt: skip
        cli.add_command(command)


_register_groups()


def main() -> None:
    """Console entry point: one-line errors and a non-zero exit for bad input."""
    warnings.showwarning = _show_warning
    warnings.simplefilter("always", RandomInitWarning)
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except VPRBenchError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
