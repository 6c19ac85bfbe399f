"""Run records (and profiles) -> one pandas DataFrame, the one input of every table and figure:
which records a report takes (the latest of each run, a recipe's current variants), and the columns
read from each (recalls, intervals, settings, the profile of the model, training steps)."""

from __future__ import annotations

import glob
import json
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
    from vprbench.ablate.recipe import load_recipe
    from vprbench.ablate.run import state_path
    from vprbench.ablate.variants import expand

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


# the robotics metrics' conventions as frame columns: "AUC-PR <name>", "R@100P <name>" (0-1)
ROBOTICS_FRAME_COLUMNS = {
    "vpr-bench": "VPR-Bench",
    "vpr-tutorial-single": "Tutorial single",
    "vpr-tutorial-multi": "Tutorial multi",
}


def _rerank_label(rerank: dict | None) -> str | None:
    return None if not rerank else f"{rerank['name']}@{rerank['k']}"


def frame(records: list[dict], profiles: dict[str, list[dict]] | None = None) -> pd.DataFrame:
    """One row per run record: variant, seed, protocol, R@k (percent) for every recorded k, with its
    interval, settings, cost (and which profile measured it)."""
    from vprbench.evaluate.clusters import describe_record

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
            # and so does a training that started from random weights or a random teacher
            "random_init": r["model"]["weights"]["random_init"]
            or r["model"]["weights"].get("kind") == "backbone-init"
            or bool(tags.get("random_start")),
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
            # evaluate --rerank: "<re-ranker>@<k>"; None for the global stage alone
            "rerank": _rerank_label(settings.get("rerank")),
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
        metrics = r["results"].get("metrics") or {}  # evaluate --metrics (robotics metrics)
        for convention, name in ROBOTICS_FRAME_COLUMNS.items():
            if convention in metrics:
                row[f"AUC-PR {name}"] = metrics[convention]["auc_pr"]
                row[f"R@100P {name}"] = metrics[convention]["r_at_100p"]
        for k in all_ks:
            value = r["results"]["recall"].get(str(k))
            row[f"R@{k}"] = 100 * value if value is not None else np.nan
            interval = (r["results"].get("ci95") or {}).get(str(k))
            row[f"R@{k} low"], row[f"R@{k} high"] = (
                (100 * np.array(interval)) if interval else (np.nan, np.nan)
            )
        rows.append(row)
    df = pd.DataFrame(rows)
    df["variant"] = row_labels(df)
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
    from vprbench.extract.cache import key_digest

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


def row_labels(df: pd.DataFrame) -> pd.Series:
    """The variant name, and where several configurations share it, the settings that tell them
    apart: 'pixels (pca 8)', 'distill + finetune (recipe distill)'. Configurations that differ
    only in settings no column shows are numbered."""
    labels = df["variant"].astype(str).copy()
    for name, group in df.groupby("variant", sort=False):
        configs = list(dict.fromkeys(group["config"]))
        if len(configs) < 2:
            continue
        first = group.drop_duplicates("config").set_index("config")
        differing = [c for c in _LABELLED if first[c].map(shown_value).nunique() > 1]
        for n, config in enumerate(configs, 1):
            shown = ", ".join(f"{c.replace('_', ' ')} {shown_value(first.loc[config, c])}"
                              for c in differing)  # fmt: skip
            labels[group.index[group["config"] == config]] = f"{name} ({shown or f'config {n}'})"
    return labels


def shown_value(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
