"""`vprbench reproduce MODEL | --table NAME | --list`: published recall against measured, with the
verdict (vprbench.reproduce)."""

from __future__ import annotations

from pathlib import Path

import click

from vprbench.cli.common import cache_option, json_mode, results_option, root_option
from vprbench.errors import VPRBenchError


@click.command("reproduce")
@click.argument("model", required=False)
@click.option("--dataset", "protocols", multiple=True, help="Only the entries on this protocol.")
@click.option("--weights", "weights", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A released weights file (by its official name); repeatable.")  # fmt: skip
@click.option("--table", default=None, help="A named table of published.yaml (e.g. d2vpr-readme).")
@click.option("--list", "show_list", is_flag=True, help="List the entries and their sources.")
@click.option("--download", is_flag=True, help="Download weights that have an official URL.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--close", "close", type=float, default=1.0, show_default=True,
              help="Points within which a recall outside its interval is 'close'.")  # fmt: skip
@click.option("--no-audit", is_flag=True, help="Do not audit the open settings of a 'differs'.")
@click.option("--registry", "registry_path", default=None,
              help="Another published-results file (default: vprbench/published.yaml).")  # fmt: skip
@root_option
@cache_option
@results_option
@click.option("--json", "as_json", is_flag=True, help="Print the outcomes as JSON on stdout only.")
def reproduce_cmd(model, protocols, weights, table, show_list, download, device, close, no_audit,
                  registry_path, root, cache_dir, results_dir, as_json) -> None:  # fmt: skip
    """Run each published entry whose data and weights are here with the settings that produced it,
    and say whether the published recall is reproduced (inside the measured 95% interval), close
    (within --close points) or differs (with the audit rows of the settings the source leaves open).
    Entries that cannot run are listed with the command that gets what they lack."""
    from vprbench.reproduce.registry import load_published

    registry = load_published(registry_path)
    with json_mode(as_json) as emit:
        if show_list:
            emit(_list(registry))
            return
        entries = _select(registry, model, protocols, table)
        emit(_run(entries, weights, download, device, close, not no_audit, root, cache_dir,
                  results_dir, registry.path))  # fmt: skip


def _select(registry, model, protocols, table) -> list:
    if (model is None) == (table is None):
        raise VPRBenchError("reproduce: name a MODEL or a --table NAME (or --list)")
    if table is not None:
        chosen = [registry.entries[e] for e in registry.table(table).entries]
    else:
        from vprbench.models.registry import get_card

        get_card(model)  # an unknown name: the registry's error, with suggestions
        chosen = [e for e in registry.entries.values() if e.model == model]
        if not chosen:
            why = registry.no_published.get(model)
            raise VPRBenchError(f"reproduce: no published entry for '{model}'"
                                + (f" ({why})" if why else ""))  # fmt: skip
    if protocols:
        chosen = [e for e in chosen if e.protocol in protocols]
        if not chosen:
            raise VPRBenchError(f"reproduce: no entry on {', '.join(protocols)}")
    return chosen


def _list(registry) -> dict:
    from rich.table import Table

    from vprbench.ui import console, print_table

    table = Table(title=f"Published results ({registry.path})")
    for column in ("entry", "model", "weights", "protocol", "published R@k", "stage"):
        table.add_column(column, overflow="fold")
    for e in registry.entries.values():
        recall = ", ".join(f"R@{k} {v:g}" for k, v in sorted(e.published.items()))
        stage = e.stage + (f" ({e.settings['rerank']})" if e.settings.get("rerank") else "")
        table.add_row(e.id, e.model, e.weights or "-", e.protocol, recall, stage)
    print_table(table)
    for e in registry.entries.values():  # whole lines: a source survives any width
        third = f" (third party: {e.third_party})" if e.third_party else ""
        console.print(f"{e.id}: {e.where}{third}", soft_wrap=True, highlight=False)
    for t in registry.tables.values():
        console.print(f"table {t.name}: {len(t.entries)} entries; {t.description} ({t.source})",
                      soft_wrap=True)  # fmt: skip
    return {
        "entries": [e.as_json() for e in registry.entries.values()],
        "tables": {t.name: list(t.entries) for t in registry.tables.values()},
    }  # fmt: skip


def _run(entries, weights, download, device, close, audit, root, cache_dir, results_dir,
         registry_path=None) -> dict:  # fmt: skip
    from vprbench.paths import cache_root, data_root, results_root
    from vprbench.reproduce.run import availability, reproduce_entry
    from vprbench.ui import console, err_console, print_table, progress_bars, reproduce_table

    data, cache, results = data_root(root), cache_root(cache_dir), results_root(results_dir)
    given = [Path(w) for w in weights]
    for path in given:
        if not path.is_file():
            raise VPRBenchError(f"--weights {path}: not a file")
    from rich.markup import escape

    done, missing, failed = [], [], []
    for entry in entries:
        here = availability(entry, data, cache, given, download)
        if not (here.data and here.weights_ready):
            lacks = ([f"data: {here.data_hint}"] if not here.data else []) + (
                [f"weights: {here.weights_hint}"] if not here.weights_ready else [])  # fmt: skip
            missing.append({"entry": entry.id, "lacks": lacks, "protocol": entry.protocol,
                            "data": None if here.data else here.data_hint,
                            "weights": None if here.weights_ready else here.weights_hint})  # fmt: skip
            continue
        err_console.print(f"reproducing {entry.id} ...")
        try:
            with progress_bars() as bars:
                done.append(reproduce_entry(entry, here.weights, data, cache, results, device,
                                            close, audit, bars, err_console.print,
                                            registry_path))  # fmt: skip
        except VPRBenchError as exc:  # one entry's failure: the others still run and print
            failed.append({"entry": entry.id, "error": str(exc)})
            err_console.print(f"[red]{entry.id} failed:[/] {escape(str(exc))}", soft_wrap=True)
    if done:
        print_table(reproduce_table(done))
    for outcome in done:
        audit = outcome["audit"]
        if audit and audit.get("rows"):
            shown = "; ".join(
                f"{r['setting']} {r['baseline']} -> {r['audited']}: "
                + ", ".join(f"R@{c['k']} {100 * c['difference']:+.2f}" for c in r["comparisons"])
                for r in audit["rows"]
            )
            console.print(f"{outcome['entry']['id']} differs; audited {shown} ({audit['path']})",
                          soft_wrap=True)  # fmt: skip
        elif audit:
            console.print(f"{outcome['entry']['id']}: audit not run: {audit['skipped']}",
                          soft_wrap=True)  # fmt: skip
        console.print(f"record: {outcome['path']}", soft_wrap=True)
    if missing:
        _print_missing(missing, console)
    for item in failed:
        console.print(f"failed: {item['entry']}: {escape(item['error'])}", soft_wrap=True)
    return {"outcomes": done, "missing": missing, "failed": failed}


def _print_missing(missing: list[dict], console) -> None:
    """What the entries that did not run lack, once per dataset and per weights file."""
    console.print(f"not run: {len(missing)} entries, for want of:", soft_wrap=True)
    for kind in ("data", "weights"):
        groups: dict[str, list[str]] = {}
        for item in missing:
            if item[kind] is not None:
                groups.setdefault(item[kind], []).append(item["entry"])
        for hint, names in groups.items():
            console.print(f"  {kind} {hint} ({len(names)}: {', '.join(names)})", soft_wrap=True)
