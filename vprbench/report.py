"""Reports: run records (and profiles) -> one pandas DataFrame -> tables (LaTeX, Markdown, CSV) and
matplotlib figures (PNG and PDF). Every table and figure is a function of that frame.

The LaTeX table goes through pandas' Styler (booktabs rules, the best value of each column in bold,
names escaped), so it is a file a paper can ``\\input``.
"""

from __future__ import annotations

import glob
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from vprbench.errors import VPRBenchError

KS = (1, 5, 10)  # the table's columns by default (--k); the CSV has every recorded k


def load_records(
    results_dir: Path,
    runs: str | None = None,
    recipe: str | None = None,
    left_out: list[dict] | None = None,
) -> list[dict]:
    """Run records under ``results_dir/runs`` (or matching the glob ``runs``), of ``recipe`` if given.
    With a recipe whose ablation state is on disk, only the records of its current outcomes are kept:
    a variant removed or renamed in the recipe file, or whose last run failed, is left out, and
    appended to ``left_out`` ({variant, seed, protocol, reason}) when a list is given."""
    pattern = runs or str(Path(results_dir) / "runs" / "*.json")
    records = []
    for path in sorted(glob.glob(pattern)):
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise VPRBenchError(f"{path}: not a readable run record ({exc})") from exc
        if "results" not in record or "protocol" not in record:
            continue  # predictions and other JSON files
        tags = record.get("ablation") or {}
        if recipe is None or tags.get("recipe") == recipe:
            record["_path"] = path
            records.append(record)
    records = _latest(records)
    if recipe is not None:
        current, reasons = current_outcomes(results_dir, recipe)
        if current is not None:
            kept = []
            for r in records:
                tags = r.get("ablation") or {}
                if Path(r["_path"]).name in current:
                    kept.append(r)
                elif left_out is not None:
                    why = reasons.get((tags.get("variant"), tags.get("seed")),
                                      "not a current outcome of the recipe's ablation")  # fmt: skip
                    left_out.append({"variant": tags.get("variant"), "seed": tags.get("seed"),
                                     "protocol": r["protocol"]["name"], "reason": why})  # fmt: skip
            records = kept
    if not records:
        raise VPRBenchError(
            f"no run records matched {pattern}" + (f" for recipe '{recipe}'" if recipe else "")
        )
    return records


def current_outcomes(results_dir: Path, recipe: str) -> tuple[set[str] | None, dict]:
    """(file names of the run records of ``recipe``'s current outcomes, {(variant, seed): why one is
    not current}), from its ablation state and recipe file; (None, {}) without a state file. An
    outcome is current if its variant and seed are still in the recipe file and its last run did not
    fail."""
    from vprbench.ablate import state_path
    from vprbench.recipe import expand, load_recipe

    path = state_path(Path(results_dir), recipe)
    if not path.is_file():
        return None, {}
    try:
        state = json.loads(path.read_text())
        outcomes = state["outcomes"]
    except (OSError, ValueError, KeyError) as exc:
        raise VPRBenchError(f"{path}: not an ablation state ({exc})") from None
    try:
        wanted = {(v.name, v.seed) for v in expand(load_recipe(state["file"]))}
    except (OSError, VPRBenchError, KeyError):
        wanted = None  # the recipe file moved or no longer parses: the state alone decides
    latest = {(o["variant"], o["seed"]): o for o in outcomes}  # in run order: the last one wins
    names, reasons = set(), {}
    for key, outcome in latest.items():
        if wanted is not None and key not in wanted:
            reasons[key] = f"no longer in {state['file']}"
        elif outcome.get("error"):
            reasons[key] = f"its last run failed ({str(outcome['error']).splitlines()[0][:80]})"
        else:
            names.update(Path(r).name for r in outcome["records"])
    return names, reasons


def _latest(records: list[dict]) -> list[dict]:
    """One record per (recipe, variant, seed, protocol): the newest by the record's own ``created``
    (a copy, rsync or checkout changes file times, not that), ties broken by run id. An ablation run
    again with other settings leaves its older records on disk; a report shows the current ones."""
    newest: dict = {}
    for r in records:
        key = _key_of(r)
        if key not in newest or _age(r) > _age(newest[key]):
            newest[key] = r
    return [r for r in records if newest.get(_key_of(r)) is r]


def _age(record: dict) -> tuple:
    """(creation time as a UTC timestamp, run id): the order of :func:`_latest`."""
    from datetime import datetime

    created = str(record.get("created") or "")
    try:
        when = datetime.fromisoformat(created).timestamp()
    except ValueError:
        try:  # "%z" as written before sub-second times ("+0000", which 3.10 cannot parse)
            when = datetime.strptime(created, "%Y-%m-%dT%H:%M:%S%z").timestamp()
        except ValueError as exc:
            raise VPRBenchError(
                f"{record.get('_path')}: 'created' must be an ISO 8601 time, got {created!r}"
            ) from exc
    return when, str(record.get("run_id"))


def _key_of(r: dict) -> tuple:
    tags = r.get("ablation") or {}
    # a plain `evaluate` run has no seed: the newest of one configuration (another --k, a re-run)
    # is its record, never a second "seed" of it
    return (tags.get("recipe"), tags.get("variant"), tags.get("seed"), r["protocol"]["name"],
            None if tags else _configuration(r))  # fmt: skip


def load_profiles(results_dir: Path) -> dict[str, list[dict]]:
    """Profiles under ``results_dir/profiles``, grouped by model name, options and input size (a
    group can hold profiles of several devices, dtypes, batch sizes and thread counts)."""
    out: dict[str, list[dict]] = {}
    for path in sorted((Path(results_dir) / "profiles").glob("*.json")):
        record = json.loads(path.read_text())
        key = _profile_key(record["model"], record["options"], record.get("image_size"))
        out.setdefault(key, []).append(record)
    return out


def pick_profile(candidates: list[dict], device: str, dtype: str) -> dict | None:
    """The profile a row's cost columns come from: one of the record's device and dtype if there is
    one (else any), then batch size 1, then the newest; the CSV names its device, threads and batch."""
    if not candidates:
        return None
    kind = str(device).split(":")[0]

    def rank(p: dict) -> tuple:
        s = p.get("settings") or {}
        return (str(s.get("device", "")).split(":")[0] == kind, s.get("dtype") == dtype,
                s.get("batch_size") == 1, str(p.get("created", "")))  # fmt: skip

    return max(candidates, key=rank)


def _profile_key(model: str, options: dict, image_size) -> str:
    return json.dumps([model, options, list(image_size) if image_size else None], sort_keys=True)


def _training_steps(train_dirs: list[str]) -> int:
    """Optimiser steps of the finished training runs a record names."""
    steps = 0
    for folder in train_dirs:
        summary = Path(folder) / "summary.json"
        if summary.is_file():
            steps += json.loads(summary.read_text())["steps"]
    return steps


def frame(records: list[dict], profiles: dict[str, list[dict]] | None = None) -> pd.DataFrame:
    """One row per run record: variant, seed, protocol, R@k (percent) for every recorded k, with its
    interval, settings, cost (and which profile measured it)."""
    from vprbench.clusters import describe_record

    rows = []
    all_ks = sorted({int(k) for r in records for k in r["results"]["recall"]})
    for r in records:
        tags = r.get("ablation") or {}
        settings = r["settings"]
        size = settings["preprocess"]["image_size"]
        profile = pick_profile(
            (profiles or {}).get(_profile_key(r["model"]["name"], r["model"]["options"], size), []),
            settings.get("device", "cpu"),
            settings.get("dtype"),
        )
        measured = (profile or {}).get("settings") or {}
        steps = _training_steps(tags.get("train", []))
        row = {
            "recipe": tags.get("recipe"),
            "variant": tags.get("variant") or r["model"]["name"],
            "order": tags.get("variant_index", 0),
            "seed": tags.get("seed", 0),
            "model": r["model"]["name"],
            "protocol": r["protocol"]["name"],
            "image_size": f"{size[0]}x{size[1]}" if size else "native",
            "batch_size": settings["batch_size"] if r["model"]["batch_dependent"] else None,
            "pca": (settings.get("pca") or {}).get("dim"),
            "policy": settings["no_positive_policy"],
            # a backbone-only checkpoint (DINOv2) leaves the DRM and aggregator random: marked too
            "random_init": r["model"]["weights"]["random_init"]
            or r["model"]["weights"].get("kind") == "backbone-init",
            "params_m": profile["params"]["total"] / 1e6 if profile else np.nan,
            "gflops": profile["flops"]["gflops_per_image"] if profile else np.nan,
            "latency_ms": profile["latency"]["image_ms_median"] if profile else np.nan,
            "latency_device": measured.get("device"),
            "latency_dtype": measured.get("dtype"),
            "latency_batch": measured.get("batch_size"),
            "latency_threads": measured.get("threads"),
            "train_steps": steps,
            "run_id": r.get("run_id"),
            "search": settings.get("search", {}).get("kind", "exact"),
            "per_city": bool(settings.get("per_city")),
            "dim": r["model"].get("descriptor_dim"),
            "dtype": settings.get("dtype"),
            "weights": (r["model"]["weights"].get("sha256") or "")[:12] or None,
            "config": _configuration(r),
            "cluster": _cluster_spec(r),
            "resampling": describe_record(r),
            "interval_method": ((r["results"].get("resampling") or {}).get("interval")
                                or "percentile bootstrap over independent queries"),
            "record": r["_path"],
        }  # fmt: skip
        for k in all_ks:
            value = r["results"]["recall"].get(str(k))
            row[f"R@{k}"] = 100 * value if value is not None else np.nan
            interval = (r["results"].get("ci95") or {}).get(str(k))
            row[f"R@{k} low"], row[f"R@{k} high"] = (
                (100 * np.array(interval)) if interval else (np.nan, np.nan)
            )
        rows.append(row)
    df = pd.DataFrame(rows)
    df["variant"] = _row_labels(df)
    # recipe order (then seed); records of plain `evaluate` runs keep their file order
    return df.sort_values(["order", "seed"], kind="stable").reset_index(drop=True)


# The settings a row label names when two configurations share a variant name, in this order.
_LABELLED = ("recipe", "model", "weights", "image_size", "dtype", "pca", "search", "per_city",
             "batch_size", "policy", "dim", "cluster")  # fmt: skip


def _cluster_spec(record: dict) -> str:
    """The cluster rule a record's intervals used, as --cluster writes it ('blocks:10', 'place')."""
    info = (record.get("results") or {}).get("resampling") or {}
    rule = info.get("rule", "iid")
    return f"blocks:{info.get('length')}" if rule == "blocks" else rule


def _configuration(record: dict) -> str:
    """Digest of everything in a run record that changes its numbers but the seed: model, options,
    weights, preprocessing, dtype, batch size and order, PCA, search, per-city, policy, recipe and
    variant. Two records with the same digest are seeds of one configuration (one table row)."""
    from vprbench.cache import key_digest

    tags = dict(record.get("ablation") or {})
    settings = dict(record["settings"])
    model = record["model"]
    return key_digest({
        "recipe": tags.get("recipe"), "variant": tags.get("variant"),
        "model": model["name"], "options": model["options"],
        "weights": model["weights"].get("sha256"), "random_init": model["weights"]["random_init"],
        "descriptor_dim": model.get("descriptor_dim"),
        **{k: settings.get(k) for k in ("preprocess", "dtype", "batch_size", "batch_order",
                                        "no_positive_policy", "per_city")},
        "search": {k: v for k, v in (settings.get("search") or {}).items() if k != "backend"},
        "pca": {k: v for k, v in (settings.get("pca") or {}).items() if k != "file"} or None,
        # the intervals' cluster rule: the same recall, other intervals (two records, two rows)
        **({"cluster": _cluster_spec(record)} if _cluster_spec(record) != "iid" else {}),
    })  # fmt: skip


def _row_labels(df: pd.DataFrame) -> pd.Series:
    """The variant name, and where several configurations share it, the settings that tell them
    apart: 'pixels (pca 8)', 'distill + finetune (recipe distill)'. Configurations that differ
    only in settings no column shows are numbered."""
    labels = df["variant"].astype(str).copy()
    for name, group in df.groupby("variant", sort=False):
        configs = list(dict.fromkeys(group["config"]))
        if len(configs) < 2:
            continue
        first = group.drop_duplicates("config").set_index("config")
        differing = [c for c in _LABELLED if first[c].map(_shown).nunique() > 1]
        for n, config in enumerate(configs, 1):
            shown = ", ".join(f"{c.replace('_', ' ')} {_shown(first.loc[config, c])}"
                              for c in differing)  # fmt: skip
            labels[group.index[group["config"] == config]] = f"{name} ({shown or f'config {n}'})"
    return labels


def _shown(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def table_ks(df: pd.DataFrame) -> list[int]:
    """The k of the table's columns: ``df.attrs['ks']`` (report --k) or KS, where any row has one."""
    ks = df.attrs.get("ks") or KS
    return [k for k in ks if f"R@{k}" in df and df[f"R@{k}"].notna().any()]


def recall_table(df: pd.DataFrame) -> pd.DataFrame:
    """Variants (rows, in first-seen order) x (protocol, R@k) columns: the mean over seeds. Attached
    as attrs: ``std`` (sample sd, ddof 1, where a cell has several seeds), ``n`` (seeds per cell),
    ``ci`` (interval bounds, shown for one-seed cells) and ``p`` (the p-value each cell's mark uses)."""
    order = list(dict.fromkeys(df["variant"]))
    protocols = list(dict.fromkeys(df["protocol"]))
    metrics = [f"R@{k}" for k in table_ks(df)]
    grouped = df.groupby(["variant", "protocol"], sort=False)
    columns = pd.MultiIndex.from_tuples(
        [(p, m) for p in protocols for m in metrics], names=["protocol", "metric"]
    )

    def wide(part: pd.DataFrame) -> pd.DataFrame:
        part = part.rename(columns=lambda c: c.split(" ", 1)[0]).unstack("protocol")
        return part.swaplevel(axis=1).reindex(columns=columns).reindex(order)

    mean = wide(grouped[metrics].mean())
    n = wide(grouped[metrics].count())
    std = wide(grouped[metrics].std(ddof=1))
    mean.attrs["n"] = n
    mean.attrs["std"] = std.where(n > 1) if (n > 1).any().any() else None
    bounds = {}
    for side in (
        ("low", "high")
        if all(f"{m} {side}" in df for m in metrics for side in ("low", "high"))
        else ()
    ):
        bounds[side] = wide(grouped[[f"{m} {side}" for m in metrics]].mean()).where(n == 1)
    mean.attrs["ci"] = bounds or None
    column = df.attrs.get("p_column", "p")
    p_cols = [f"{m} {column}" for m in metrics]
    if all(c in df for c in p_cols):
        mean.attrs["p"] = wide(grouped[p_cols].first())
        flags = wide(grouped[[f"{m} untested" for m in metrics]].any())
        mean.attrs["untested"] = flags.fillna(False).astype(bool)
        mean.attrs["baseline"] = df.attrs.get("baseline")
    else:
        mean.attrs["p"] = None
    mean.attrs["seeds"] = (
        df.groupby("variant", sort=False)["seed"].nunique().reindex(order).to_dict()
    )
    mean.index.name = "variant"
    return mean


_TEX_SPECIALS = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": "\\textasciitilde{}", "^": "\\textasciicircum{}", "\\": "\\textbackslash{}",
}  # fmt: skip


def tex_escape(text: str) -> str:
    """``text`` as LaTeX prints it literally (names in captions: ``pitts30k_test`` -> ``pitts30k\\_test``)."""
    return "".join(_TEX_SPECIALS.get(c, c) for c in text)


# Settings a table states once in its caption when every row shares them, or per row in brackets
# when rows differ: (frame column, caption name, how a row shows its value).
_ROW_SETTINGS = (
    ("image_size", "Input", lambda v: v),
    ("pca", "PCA", lambda v: "no PCA" if v == "none" else f"PCA {v}"),
    ("search", "search", lambda v: f"{v} search"),
    ("dtype", "dtype", lambda v: v),
    (
        "batch_size",
        "inference batch of batch-dependent models",
        lambda v: "" if v == "none" else f"batch {v}",
    ),
    ("policy", "queries without positives", lambda v: f"no-positive {v}"),
    ("per_city", "per-city retrieval", lambda v: "per city" if v == "True" else "merged cities"),
)


def _varying(df: pd.DataFrame) -> list[str]:
    """The row settings whose value differs between the table's rows."""
    return [c for c, _, _ in _ROW_SETTINGS if c in df and df[c].map(_shown).nunique() > 1]


def caption(df: pd.DataFrame, ci: bool = False, latex: bool = True) -> str:
    """Protocols, the settings every number depends on (one value, or 'each row's in brackets'),
    what a cell is (n seeds, sample sd), the intervals' method and the marks' test (LaTeX: escaped)."""
    esc = tex_escape if latex else str

    def values(column):
        found = sorted({_shown(v) for v in df[column].dropna()})
        return esc(", ".join(found)) if found else "none"

    varying = _varying(df)

    def stated(column: str) -> str:
        return "each row's in brackets" if column in varying else values(column)

    parts = []
    for column, name, _ in _ROW_SETTINGS:
        if column not in df or column in ("dtype", "per_city") and column not in varying:
            continue  # fp32 and merged cities unless some row differs
        separator = ": " if column in ("dtype", "policy", "per_city") else " "
        parts.append(f"{name}{separator}{stated(column)}")
    text = f"Recall@k (\\%) on {values('protocol')}. " + "; ".join(parts) + "."
    table = recall_table(df)
    n = table.attrs["n"]
    counts = sorted({int(v) for v in n.to_numpy().ravel() if v > 0})
    if counts and counts[-1] > 1:
        seeds = (
            f"n = {counts[-1]}" if len(counts) == 1 else f"n = {counts[0]} to {counts[-1]} per cell"
        )
        text += (f" Mean over training seeds ({seeds}) $\\pm$ their sample standard deviation "
                 "(ddof 1).")  # fmt: skip
        if counts[0] == 1:
            text += " A cell without $\\pm$ has one seed."
    if ci and table.attrs.get("ci") is not None and (n == 1).any().any():
        if "interval_method" not in df:  # a frame from elsewhere: the records' own words unknown
            df = df.assign(interval_method="95% interval of each record")
        methods = df.groupby("protocol", sort=False)["interval_method"].agg(
            lambda v: "; ".join(dict.fromkeys(v))
        )
        shown = "; ".join(f"{esc(p)}: {esc(m)}" for p, m in methods.items())
        text += (f" In brackets: the 95\\% interval over queries ({shown})"
                 + (", for one-seed cells." if counts and counts[-1] > 1 else "."))  # fmt: skip
    if df.attrs.get("baseline") is not None:
        tests = df.attrs.get("tests") or {}
        how = []
        if tests.get("queries"):
            how.append("one run each: " + esc("; ".join(sorted(tests["queries"])))
                       + " on the same queries (query sampling only)")  # fmt: skip
        if tests.get("seeds"):
            how.append("several seeds each: Welch's t-test across seeds")
        corrected = (f"Holm-Bonferroni over the {tests.get('family', 0)} cells tested"
                     if df.attrs.get("p_column") == "p_holm" else "uncorrected")  # fmt: skip
        text += (f" $^\\dagger$: not significantly different from {esc(df.attrs['baseline'])} "
                 f"($p \\geq 0.05$, {corrected}; {'; '.join(how) or 'no cell tested'}).")  # fmt: skip
        if tests.get("untested"):
            text += (f" $^\\ddagger$: not tested ({tests['untested']} cell(s): one seed on one side "
                     "and several on the other, or no seed-to-seed variation on either).")  # fmt: skip
    if df["random_init"].any():
        text += (" Rows marked * ran at random initialisation, in whole or in part (backbone-only "
                 "weights leave the DRM and aggregator random).")  # fmt: skip
    if not latex:  # plain text (Markdown, the terminal)
        for tex, plain in (("\\%", "%"), ("$\\pm$", "±"), ("$^\\dagger$", "†"),
                           ("$^\\ddagger$", "‡"), ("$p \\geq 0.05$", "p ≥ 0.05")):  # fmt: skip
            text = text.replace(tex, plain)
    return text


def _cells(table: pd.DataFrame, latex: bool, ci: bool = False) -> pd.DataFrame:
    std = table.attrs.get("std")
    pm = " $\\pm$ " if latex else " ± "
    out = table.map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
    bounds = table.attrs.get("ci")
    if ci and bounds is not None:
        for col in out.columns:
            for i in out.index:
                low, high = bounds["low"].loc[i, col], bounds["high"].loc[i, col]
                if out.loc[i, col] and not pd.isna(low):
                    out.loc[i, col] = f"{out.loc[i, col]} [{low:.1f}, {high:.1f}]"
    if std is not None:
        out = out.combine(
            std, lambda a, b: a.combine(b, lambda x, s: x if pd.isna(s) else f"{x}{pm}{s:.1f}")
        )
    p_values = table.attrs.get("p")
    if p_values is not None:
        dagger = "$^\\dagger$" if latex else "†"
        untested_mark = "$^\\ddagger$" if latex else "‡"
        untested = table.attrs.get("untested")
        for col in out.columns:
            for i in out.index:
                p = p_values.loc[i, col]
                if out.loc[i, col] and not pd.isna(p) and p >= 0.05:
                    out.loc[i, col] += dagger
                elif out.loc[i, col] and untested is not None and untested.loc[i, col]:
                    out.loc[i, col] += untested_mark
    return out


def against_baseline(df: pd.DataFrame, baseline: str, correction: str = "holm") -> pd.DataFrame:
    """``df`` with columns ``R@k p`` (and ``R@k p_holm``): each cell tested against the ``baseline``
    variant's on the same protocol. One run on each side: the paired test on the same queries under
    the runs' cluster rule (vprbench/compare.py; different queries or ground truth are refused).
    Several seeds on each side: Welch's t-test across seeds. Otherwise the cell is not tested (NaN).
    ``correction`` "holm": Holm-Bonferroni over every cell tested; the marks use ``p_holm``."""
    from scipy.stats import ttest_ind

    from vprbench.compare import compare_with_resampling
    from vprbench.metrics import holm

    if correction not in ("holm", "none"):
        raise VPRBenchError(f"--correction must be holm or none, got {correction!r}")
    if baseline not in set(df["variant"]):
        raise VPRBenchError(
            f"--baseline {baseline!r} is not a row of this report; the rows are "
            + ", ".join(dict.fromkeys(df["variant"]))
        )
    out = df.copy()
    ks = table_ks(df)
    for k in ks:
        out[f"R@{k} p"] = np.nan
        out[f"R@{k} untested"] = False
    tests: dict = {"queries": set(), "seeds": False, "untested": 0}
    cells = []  # (row indices, k, p) of every tested cell
    for protocol, rows in df.groupby("protocol", sort=False):
        base = rows[rows["variant"] == baseline]
        if base.empty:
            raise VPRBenchError(f"--baseline {baseline!r} has no run on {protocol}")
        for variant, runs in rows[rows["variant"] != baseline].groupby("variant", sort=False):
            if len(runs) == 1 and len(base) == 1:
                record = json.loads(Path(runs["record"].iloc[0]).read_text())
                base_record = json.loads(Path(base["record"].iloc[0]).read_text())
                try:
                    found, resampling = compare_with_resampling(record, base_record, ks)
                except VPRBenchError as exc:
                    raise VPRBenchError(f"{variant} vs {baseline} on {protocol}: {exc}") from None
                tests["queries"].add(f"{resampling.method()['test']} ({resampling.describe()})")
                cells += [(runs.index, c.k, c.p_value) for c in found]
            elif len(runs) > 1 and len(base) > 1:
                for k in ks:
                    a, b = runs[f"R@{k}"].dropna(), base[f"R@{k}"].dropna()
                    # no seed-to-seed variation on either side: Welch's statistic is undefined
                    # (scipy gives p = 0 for different constants), so there is nothing to test
                    varies = len(a) > 1 < len(b) and (a.std() > 0 or b.std() > 0)
                    p = float(ttest_ind(a, b, equal_var=False).pvalue) if varies else np.nan
                    if np.isnan(p):
                        out.loc[runs.index, f"R@{k} untested"] = True
                        tests["untested"] += 1
                        continue
                    tests["seeds"] = True
                    cells.append((runs.index, k, p))
            else:
                tests["untested"] += len(ks)
                for k in ks:
                    out.loc[runs.index, f"R@{k} untested"] = True
    adjusted = holm([p for _, _, p in cells]) if correction == "holm" else [p for _, _, p in cells]
    if correction == "holm":
        for k in ks:
            out[f"R@{k} p_holm"] = np.nan
    for (index, k, p), q in zip(cells, adjusted, strict=True):
        out.loc[index, f"R@{k} p"] = p
        if correction == "holm":
            out.loc[index, f"R@{k} p_holm"] = q
    tests["family"] = len(cells)
    out.attrs.update(df.attrs)
    out.attrs.update(baseline=baseline, tests=tests,
                     p_column="p_holm" if correction == "holm" else "p")  # fmt: skip
    return out


def to_latex(df: pd.DataFrame, label: str = "tab:ablation", ci: bool = False) -> str:
    """The recall table as LaTeX through pandas' Styler: booktabs rules with a \\cmidrule under each
    protocol, numbers right-aligned, the best printed value of each column in bold (ties all bold),
    names escaped; random-init rows marked *."""
    table = recall_table(df)
    # bold on the printed (rounded) values, so that equal printed values are bold alike
    printed = table.map(lambda v: v if pd.isna(v) else float(f"{v:.1f}"))  # as _cells prints
    best = printed.max()
    random_rows = set(df.loc[df["random_init"], "variant"])

    def bold(column: pd.Series) -> list[str]:
        values = printed[column.name]
        return ["font-weight: bold;" if v == best[column.name] else "" for v in values]

    cells = _cells(table, latex=True, ci=ci)
    cells.index = _row_names(df, cells.index, random_rows)
    cells.index.name = None
    cells.columns.names = [None, None]
    styler = cells.style.apply(bold, axis=0)
    styler = styler.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    text = styler.to_latex(hrules=True, caption=caption(df, ci), label=label, convert_css=True,
                           multicol_align="c", position_float="centering",
                           column_format="l" + "r" * len(cells.columns))  # fmt: skip
    return _cmidrules(text, [len(list(g)) for _, g in _groupby_first(cells.columns)])


def _groupby_first(columns: pd.MultiIndex):
    from itertools import groupby

    return groupby(columns, key=lambda c: c[0])


def _cmidrules(text: str, spans: list[int]) -> str:
    """A booktabs \\cmidrule under each protocol's \\multicolumn header (pandas writes none)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "\\multicolumn" in line:
            rules, start = [], 2
            for span in spans:
                rules.append(f"\\cmidrule(lr){{{start}-{start + span - 1}}}")
                start += span
            lines.insert(i + 1, " ".join(rules))
            break
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def _row_names(df: pd.DataFrame, index, random_rows: set) -> list[str]:
    """Row names as printed: * for random initialisation, and in brackets each setting in which the
    rows differ (input size, PCA, search, dtype, batch, policy): a table never mixes them unmarked."""
    varying = [(c, show) for c, _, show in _ROW_SETTINGS if c in _varying(df)]
    names = []
    for v in index:
        rows = df[df["variant"] == v]
        shown = ["/".join(dict.fromkeys(show(_shown(x)) for x in rows[c])) for c, show in varying]
        shown = [x for x in shown if x]
        names.append(
            f"{v}{'*' if v in random_rows else ''}" + (f" [{', '.join(shown)}]" if shown else "")
        )
    return names


def to_markdown(df: pd.DataFrame, ci: bool = False) -> str:
    """The recall table as Markdown, the same numbers as the LaTeX one."""
    random_rows = set(df.loc[df["random_init"], "variant"])
    table = _cells(recall_table(df), latex=False, ci=ci)
    table.index = _row_names(df, table.index, random_rows)
    table.columns = [f"{p} {m}" for p, m in table.columns]
    text = caption(df, ci, latex=False)
    # numparse off: tabulate would print the cell "28.0" as 28; numbers still right-aligned
    align = ("left",) + ("right",) * len(table.columns)
    return table.to_markdown(disable_numparse=True, colalign=align) + "\n\n" + text + "\n"


def to_csv(df: pd.DataFrame) -> str:
    """The long frame: one row per run record, every number and setting."""
    return df.drop(columns=["record", "order"]).to_csv(index=False)


# --- figures --------------------------------------------------------------------------------------


def _save(fig, out: Path, name: str) -> list[Path]:
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for path in paths:
        # no creation date in the PDF: the same figure gives the same bytes (a report re-run
        # changes no file it did not change)
        metadata = {"CreationDate": None} if path.suffix == ".pdf" else None
        fig.savefig(path, dpi=150, bbox_inches="tight", metadata=metadata)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def _label(ax, xlabel: str, ylabel: str, title: str | None = None, legend: int = 7) -> None:
    """Axis labels, title, a light grid and a small legend: the look of every figure here."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend)


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p")


def series_styles(n: int) -> list[dict]:
    """Matplotlib styles of ``n`` series, none sharing a colour and marker: tab10 up to 10 series,
    tab20 up to 20, beyond that colours repeat with another marker and line style."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    size = 10 if n <= 10 else 20
    lines = ("-", "--", ":", "-.")
    return [{"color": cmap(i % size), "marker": _MARKERS[i % len(_MARKERS)],
             "linestyle": lines[(i // size) % len(lines)]} for i in range(n)]  # fmt: skip


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _row_summary(df: pd.DataFrame, ks: list[int]) -> pd.DataFrame:
    """Per (protocol, row label), in table order: mean R@k, and the error bar of each: the sd over
    seeds where a row has several, else its interval over queries (NaN where it has none)."""
    out = []
    for (protocol, variant), rows in df.groupby(["protocol", "variant"], sort=False):
        item = {"protocol": protocol, "variant": variant, "n": len(rows)}
        for k in ks:
            values = rows[f"R@{k}"].dropna()
            mean = values.mean() if len(values) else np.nan
            if len(values) > 1:
                low = high = values.std(ddof=1)
            else:
                low = mean - rows[f"R@{k} low"].mean() if f"R@{k} low" in rows else np.nan
                high = rows[f"R@{k} high"].mean() - mean if f"R@{k} high" in rows else np.nan
            item |= {f"R@{k}": mean, f"R@{k} below": low, f"R@{k} above": high}
        out.append(item)
    return pd.DataFrame(out)


def _bar_note(summary: pd.DataFrame) -> str:
    several = (summary["n"] > 1).any()
    single = (summary["n"] == 1).any()
    parts = (["bars: 95% interval over queries"] if single else []) + (
        ["bars: ±1 sd over seeds"] if several else []
    )
    return "; ".join(parts)


def recall_curves(df: pd.DataFrame, out: Path) -> list[Path]:
    """Recall@k against k, one figure per protocol, one line per table row (its mean over seeds), in
    the table's order, with its interval (one seed) or sd (several) as error bars, ticks at each k."""
    plt = _pyplot()
    ks = sorted(int(c[2:]) for c in df.columns if re.fullmatch(r"R@\d+", c) and df[c].notna().any())
    summary = _row_summary(df, ks)
    paths = []
    for protocol, part in summary.groupby("protocol", sort=False):
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        styles = series_styles(len(part))
        for i, ((_, row), style) in enumerate(zip(part.iterrows(), styles, strict=True)):
            present = [k for k in ks if not pd.isna(row[f"R@{k}"])]
            # each series a little to the side (log x), so that error bars do not cover each other
            dodge = 1 + 0.012 * (i - (len(part) - 1) / 2)
            yerr = np.array([[row[f"R@{k} below"] for k in present],
                             [row[f"R@{k} above"] for k in present]])  # fmt: skip
            ax.errorbar([k * dodge for k in present], [row[f"R@{k}"] for k in present],
                        yerr=None if np.isnan(yerr).all() else np.nan_to_num(yerr),
                        capsize=2, ms=4, lw=1.2, label=row["variant"], **style)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.minorticks_off()
        note = _bar_note(part)
        _label(ax, "k", "Recall@k (%)", f"{protocol}" + (f" ({note})" if note else ""), legend=6)
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
        paths += _save(fig, out, f"recall_at_k_{protocol}")
    return paths


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats (less x and at least as much y), by increasing x."""
    order = np.lexsort((-y, x))
    front, best = [], -np.inf
    for i in order:
        if y[i] > best:
            front.append(i)
            best = y[i]
    return np.array(front, dtype=int)


def fronts_by_size(points: pd.DataFrame, column: str) -> dict[str, np.ndarray]:
    """{input size: row positions of ``points`` on its Pareto front of R@1 against ``column``}: one
    front per input size, never across sizes (a cheaper point at a smaller input is another setting,
    not the same method winning)."""
    x, y = points[column].to_numpy(), points["R@1"].to_numpy()
    size_of = points["image_size"].to_numpy()
    out = {}
    for size in dict.fromkeys(size_of):
        same = np.flatnonzero(size_of == size)
        out[size] = same[pareto_front(x[same], y[same])]
    return out


def efficiency(df: pd.DataFrame, out: Path) -> list[Path]:
    """R@1 against GFLOPs and against parameters, per protocol: one marker per table row (legend in
    table order, no text on the plot to overlap), R@1's error bar, the Pareto front of each size."""
    plt = _pyplot()
    paths = []
    summary = _row_summary(df, [1])
    costs = df.groupby(["protocol", "variant"], sort=False)[["gflops", "params_m"]].mean()
    sizes_of = df.groupby(["protocol", "variant"], sort=False)["image_size"].agg(
        lambda v: "/".join(dict.fromkeys(v))
    )
    summary = summary.join(costs, on=["protocol", "variant"]).join(
        sizes_of, on=["protocol", "variant"]
    )
    for protocol, part in summary.groupby("protocol", sort=False):
        for column, label in (("gflops", "GFLOPs per image"), ("params_m", "parameters (M)")):
            pts = part.dropna(subset=[column, "R@1"]).reset_index(drop=True)
            if pts.empty:
                continue
            fig, ax = plt.subplots(figsize=(5.5, 3.8))
            sizes = list(dict.fromkeys(pts["image_size"]))
            for (_, row), style in zip(pts.iterrows(), series_styles(len(pts)), strict=True):
                name = (
                    f"{row['variant']} [{row['image_size']}]" if len(sizes) > 1 else row["variant"]
                )
                below, above = row["R@1 below"], row["R@1 above"]
                yerr = None if pd.isna(below) else [[below], [above]]
                ax.errorbar([row[column]], [row["R@1"]], yerr=yerr, capsize=2, ms=5,
                            color=style["color"], marker=style["marker"], linestyle="none",
                            label=name)  # fmt: skip
            x, y = pts[column].to_numpy(), pts["R@1"].to_numpy()
            for n, (size, front) in enumerate(fronts_by_size(pts, column).items()):
                name = "Pareto front" + (f" ({size})" if len(sizes) > 1 else "")
                ax.plot(x[front], y[front], "-" if n == 0 else "--", color="0.55", lw=1.5,
                        zorder=0, label=name)  # fmt: skip
            title = (
                protocol if len(sizes) == 1 else f"{protocol} (inputs differ: {', '.join(sizes)})"
            )
            note = _bar_note(pts)
            _label(ax, label, "R@1 (%)", title + (f"\n{note}" if note else ""), legend=6)
            ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
            paths += _save(fig, out, f"r1_vs_{column}_{protocol}")
    return paths


def training_curves(records: list[dict], out: Path) -> list[Path]:
    """Loss against step of every training run the records name (metrics.jsonl): one panel per stage
    (a distillation MSE and a MultiSimilarity loss differ in scale), one line per run, a run shared
    by several variants labelled with all of them."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    runs: dict[str, list[str]] = {}  # training folder -> the variants that use it
    for r in sorted(records, key=lambda r: (r.get("ablation") or {}).get("variant_index", 0)):
        tags = r.get("ablation") or {}
        for folder in tags.get("train", []):
            names = runs.setdefault(folder, [])
            if tags.get("variant") not in names:
                names.append(tags.get("variant"))
    stages: dict[str, list[tuple[str, list[str]]]] = {}
    for folder, names in runs.items():
        if (Path(folder) / "metrics.jsonl").is_file():
            stages.setdefault(Path(folder).name.split("-")[0], []).append((folder, names))
    if not stages:
        return []
    fig, axes = plt.subplots(1, len(stages), figsize=(5.2 * len(stages), 3.6), squeeze=False)
    for ax, (stage, items) in zip(axes[0], stages.items(), strict=True):
        for (folder, names), style in zip(items, series_styles(len(items)), strict=True):
            rows = [
                json.loads(x) for x in (Path(folder) / "metrics.jsonl").read_text().splitlines()
            ]
            rows = [x for x in rows if "loss" in x]
            ax.plot([x["step"] for x in rows], [x["loss"] for x in rows], color=style["color"],
                    linestyle=style["linestyle"], marker=style["marker"], ms=3,
                    label=", ".join(str(n) for n in names))  # fmt: skip
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _label(ax, "step", "training loss", f"stage: {stage}", legend=6)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    fig.tight_layout()
    return _save(fig, out, "training_curves")


def mosaic(record: dict, queries: list[int], out: Path, k: int = 5) -> list[Path]:
    """For each chosen query of a run: the query image and its top-k retrievals, correct ones framed
    green, wrong ones red."""
    from PIL import Image

    from vprbench.datasets.formatted import load_formatted

    plt = _pyplot()
    from vprbench.paths import data_root

    ds = load_formatted(record["protocol"]["name"], data_root())
    indices = np.load(record["files"]["predictions"])["indices"]
    bad = [q for q in queries if not 0 <= q < len(ds.queries)]
    if bad:
        raise VPRBenchError(f"--queries {bad}: outside 0..{len(ds.queries) - 1}")
    fig, axes = plt.subplots(
        len(queries), k + 1, figsize=(1.6 * (k + 1), 1.4 * len(queries)), squeeze=False
    )
    for row, q in zip(axes, queries, strict=True):
        images = [(ds.queries[q], f"query {q}", "black")]
        for rank, i in enumerate(indices[q][:k], 1):
            if i < 0:
                continue
            ok = int(i) in set(ds.positives[q].tolist())
            verdict = "correct" if ok else "wrong"
            images.append((ds.database[i], f"{rank}: db {i} ({verdict})", "green" if ok else "red"))
        for ax, (rel, title, color) in zip(row, images, strict=False):
            with Image.open(ds.image_path(rel)) as im:
                ax.imshow(im.convert("RGB"))
            ax.set_title(title, fontsize=6)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(2.5)
        for ax in row[len(images) :]:
            ax.axis("off")
    name = (record.get("ablation") or {}).get("variant") or record["model"]["name"]
    fig.suptitle(f"{name} on {record['protocol']['name']}: each query's top {k} "
                 "(green: a positive, red: not)", fontsize=7)  # fmt: skip
    slug = "".join(c if c.isalnum() else "_" for c in f"{name}_{record['protocol']['name']}")
    return _save(fig, out, f"mosaic_{slug}")


def write_report(
    results_dir: Path,
    out: Path,
    formats: list[str],
    runs: str | None = None,
    recipe: str | None = None,
    queries: list[int] | None = None,
    figures: bool = True,
    ci: bool = False,
    baseline: str | None = None,
    ks: list[int] | None = None,
    label: str | None = None,
    correction: str = "holm",
    left_out: list[dict] | None = None,
) -> list[Path]:
    """Tables in ``formats`` (latex, markdown, csv) and the figures, under ``out``; returns the paths.
    With ``baseline`` (a variant or model name), recalls not significantly different from that row's
    on the same protocol are marked (``correction``: holm or none). ``ks``: the table's columns
    (default 1, 5, 10; the CSV keeps every k). ``label``: the LaTeX label (default tab:<recipe>).
    Records left out of a recipe's table (no longer in it, failed) go to ``left_out``."""
    records = load_records(results_dir, runs, recipe, left_out)
    df = frame(records, load_profiles(results_dir))
    if ks:
        missing = [k for k in ks if f"R@{k}" not in df]
        if missing:
            raise VPRBenchError(f"--k {missing}: no run record has R@{missing[0]}")
        df.attrs["ks"] = list(ks)
    if baseline is not None:
        df = against_baseline(df, baseline, correction)
    out.mkdir(parents=True, exist_ok=True)
    stem = recipe or "report"
    written = []
    label = label or "tab:" + "".join(c if c.isalnum() or c in "-_:" else "-" for c in stem)
    writers = {
        "latex": (lambda d: to_latex(d, label=label, ci=ci), "tex"),
        "markdown": (lambda d: to_markdown(d, ci=ci), "md"),
        "csv": (to_csv, "csv"),
    }
    from vprbench.atomic import write_text

    for fmt in formats:
        write, suffix = writers[fmt]
        path = out / f"{stem}.{suffix}"
        write_text(path, write(df))
        written.append(path)
    if figures:
        written += recall_curves(df, out)
        written += efficiency(df, out)
        written += training_curves(records, out)
        if queries:
            first: dict[str, dict] = {}  # the first variant of the recipe, per protocol
            for r in sorted(
                records, key=lambda r: (r.get("ablation") or {}).get("variant_index", 0)
            ):
                first.setdefault(r["protocol"]["name"], r)
            for record in first.values():
                written += mosaic(record, queries, out)
    return written
