"""Tables printed to a pipe or a log (80 columns, no terminal) show every header and value whole."""

import io

from rich.console import Console

from vprbench.ui import audit_table, breakdown_table, print_table, profile_table, recall_table


def _render(table) -> str:
    out = io.StringIO()
    print_table(table, Console(file=out, width=80, force_terminal=False, color_system=None))
    return out.getvalue()


def _profile(name):
    return {
        "model": name, "image_size": [224, 224], "settings": {"device": "cpu", "dtype": "fp32", "batch_size": 1},
        "params": {"total": 106_761_665, "trainable": 20_180_000, "unused": 768,
                   "by_group": {"backbone": 86_000_000, "adapters": 1_000_000, "aggregator": 12, "encoder": 19_000_000}},
        "flops": {"gmacs_per_image": 25.69, "gflops_per_image": 51.38,
                  "macs_by_group": {"backbone": 2.2e10, "adapters": 1e9, "aggregator": 1e6, "encoder": 5e6}},
        "latency": {"image_ms_median": 472.5, "batch_ms_p25": 465.1, "batch_ms_p75": 476.8, "images_per_second": 2.1},
        "memory": {"peak_mib": 1256},
    }  # fmt: skip


def _record(model, dataset, ci=False):
    recall = {"1": 0.9167, "5": 0.958, "10": 0.968, "20": 0.975, "100": 0.99}
    return {
        "model": {"name": model, "weights": {"random_init": False}},
        "protocol": {"name": dataset},
        "results": {"recall": recall, "num_evaluated": 27592, "num_queries_without_positives": 0,
                    **({"ci95": {k: [v - 0.0123, v + 0.0045] for k, v in recall.items()}} if ci else {})},
    }  # fmt: skip


def _audit():
    """An audit record with a tested row and an exact (policy) row, at three k."""

    def comparison(k, p):
        return {"k": k, "recall": 0.5 + k / 100, "baseline": 0.5, "difference": k / 100,
                "low": None if p is None else -0.0123, "high": None if p is None else 0.0456,
                "p_value": p, "significant": None if p is None else p < 0.05}  # fmt: skip

    ks = [1, 5, 10]
    return {
        "model": {"name": "cricavpr"}, "protocol": {"name": "msls-val-full"}, "ks": ks,
        "baseline": {"recall": {str(k): 0.5 for k in ks}, "ci95": {str(k): [0.48, 0.52] for k in ks}},
        "rows": [
            {"setting": "batch-order", "baseline": "VDD names rebuilt from raw.csv (official)",
             "audited": "shuffled batches of 16 (seed 0)",
             "comparisons": [comparison(k, 0.000123) for k in ks]},
            {"setting": "policy", "baseline": "miss (queries without positives count)",
             "audited": "exclude", "comparisons": [comparison(k, None) for k in ks]},
        ],
    }  # fmt: skip


def test_every_table_shows_every_header_and_value_whole_at_80_columns():
    profiles = [_profile(n) for n in ("d2vpr", "d2vpr-encoder", "cricavpr-noencoder")]
    tables = [
        profile_table(profiles, None),
        breakdown_table(profiles),
        recall_table(
            [_record("d2vpr-encoder", "nordland-pnv"), _record("cricavpr", "msls-val-full")]
        ),
        recall_table([_record("d2vpr-encoder", "nordland-pnv", ci=True)]),
        audit_table(_audit()),
    ]
    for table in tables:
        text = _render(table)
        assert "…" not in text
        for column in table.columns:
            assert str(column.header) in text, column.header
            for cell in column._cells:
                assert str(cell) in text, cell


def test_evaluate_output_to_a_pipe_is_whole(tiny_dataset, capsys, monkeypatch):
    from tests.test_cli import run

    code, out, _ = run(
        ["evaluate", "--model", "pixels", "--dataset", "tiny", "--k", "1,5"], capsys, monkeypatch
    )
    assert code == 0 and "…" not in out
    for header in ("model", "dataset", "R@1", "R@5", "queries", "no pos."):
        assert header in out


def test_json_output_is_the_only_thing_on_stdout(tiny_dataset, capsys, monkeypatch):
    import json

    from tests.test_cli import run

    code, out, err = run(["evaluate", "--model", "pixels", "--dataset", "tiny", "--k", "1,5", "--json"],
                         capsys, monkeypatch)  # fmt: skip
    assert code == 0
    record = json.loads(out)
    assert record["results"]["recall"]["1"] == 5 / 6 and "run record" in err
    code, out, err = run(["profile", "pixels", "--image-size", "32", "32", "--repeats", "1",
                          "--warmup", "0", "--json"], capsys, monkeypatch)  # fmt: skip
    assert code == 0
    profiles = json.loads(out)["profiles"]
    assert profiles[0]["model"] == "pixels" and profiles[0]["params"]["total"] == 0
