"""`vprbench reproduce` on a toy registry over generated data whose "published" numbers are known
(issue 28): every verdict, the audit of a 'differs', entries that cannot run, bad entries refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.test_cli import run
from tests.test_rerank import format_city
from tests.test_rerank_torchrun import CITY
from vprbench.errors import VPRBenchError
from vprbench.reproduce.registry import load_published
from vprbench.reproduce.verdict import compare, printed_range

REGISTRY = """format: 1
tables:
  toy-readme:
    description: the toy's table
    source: README.md:1-9
    entries: [exact, close, far, sized, broken, missing-data, missing-weights]
entries:
  exact:
    model: pixels
    weights: null
    protocol: city-repro
    published: {{1: {r1}, 4: 100.0}}
    source: {{where: "README.md:3 (commit 0000000)", third_party: null}}
  close:
    model: pixels
    weights: null
    protocol: city-repro
    published: {{4: {close}}}
    source: {{where: "paper Table 1", third_party: "a later paper"}}
  far:
    model: pixels
    weights: null
    protocol: city-repro
    published: {{4: 10.0}}
    source: {{where: "README.md:5"}}
    ambiguous: [image_size, dataset_version]
  sized:
    model: pixels
    weights: null
    protocol: city-repro
    published: {{4: 100.0}}
    source: {{where: "README.md:6"}}
    settings: {{image_size: [48, 48], resize: uint8, antialias: false, no_positive_policy: exclude,
               pca: {{dim: 2, fit: city-repro}}}}
  broken:
    model: pixels
    weights: null
    protocol: city-repro
    published: {{4: 100.0}}
    source: {{where: "README.md:7"}}
    settings: {{pca: {{dim: 5000, fit: city-repro}}}}
  missing-data:
    model: pixels
    weights: null
    protocol: city-elsewhere
    published: {{1: 50.0}}
    source: {{where: "README.md:7"}}
  missing-weights:
    model: netvlad
    weights: pittsburgh_checkpoint.pth.tar
    protocol: city-repro
    published: {{1: 50.0}}
    source: {{where: "README.md:8"}}
no_published:
  effnet-lite0-gem: an ImageNet backbone with GeM, vprbench's own baseline
"""

ELSEWHERE = """  city-elsewhere:
    description: d
    database: {count: 4, layout: "test/database"}
    queries: {count: 3, layout: "test/queries"}
    ground_truth: {source: s, formats: [vdd]}
    positive: {rule: utm-radius, threshold: 25, unit: m}
    licence: l
    obtain: "vprbench datasets format city-elsewhere --from CITY/"
    source: {formatter: vdd, files: [test/database, test/queries]}
"""


def test_printed_range_and_verdicts_by_hand():
    assert printed_range(91.7) == pytest.approx((91.65, 91.75))
    assert printed_range(85.21) == pytest.approx((85.205, 85.215))
    assert printed_range(94.0) == pytest.approx((93.95, 94.05))  # YAML's 94.0: one decimal
    record = {"results": {"recall": {"1": 0.9, "5": 0.95}, "ci95": {"1": [0.895, 0.905],
                                                                   "5": [0.94, 0.96]}}}  # fmt: skip
    # R@1 90.00 [89.50, 90.50]: 90.8 stands for 90.75 .. 90.85, outside, 0.8 points off: close
    rows, verdict = compare({1: 90.8, 5: 95.0}, record)
    assert [r["verdict"] for r in rows] == ["close", "reproduced"] and verdict == "close"
    assert rows[0]["difference"] == pytest.approx(90.0 - 90.8)
    assert rows[0]["interval"] == pytest.approx([89.5, 90.5])
    assert compare({1: 92.04}, record)[1] == "differs"  # 2.04 points off
    assert compare({1: 92.04}, record, close=2.5)[1] == "close"
    assert compare({1: 90.5}, record)[1] == "reproduced"  # 90.45 .. 90.55 meets 90.50
    assert compare({1: 90.56}, record)[1] == "close"  # 90.555 .. 90.565 does not


@pytest.fixture
def toy_registry(tmp_path, capsys, monkeypatch, isolated_dirs):
    """The city of the re-ranking tests as protocol 'city-repro', a second protocol that is not
    formatted, and pixels' measured R@1 and R@4's interval there."""
    format_city(tmp_path, CITY, "city-repro", capsys, monkeypatch)
    with open(tmp_path / "datasets.yaml", "a") as f:
        f.write(ELSEWHERE)
    code, out, err = run(["evaluate", "--model", "pixels", "--dataset", "city-repro", "--k", "1,4",
                          "--json"], capsys, monkeypatch)  # fmt: skip
    assert code == 0, err
    measured = json.loads(out)["results"]
    # 3 of 3 queries: Clopper-Pearson's lower bound 0.025 ** (1 / 3)
    assert measured["recall"]["4"] == 1.0
    assert measured["ci95"]["4"] == pytest.approx([0.025 ** (1 / 3), 1.0])
    return tmp_path, 100 * measured["recall"]["1"]


def test_reproduce_gives_every_verdict_and_lists_what_cannot_run(toy_registry, capsys,
                                                                 monkeypatch, isolated_dirs):  # fmt: skip
    tmp_path, r1 = toy_registry
    path = tmp_path / "published.yaml"
    # close: 24.2, outside R@4's [29.24, 100], 75.8 points off, within --close 80; far: 90 off
    path.write_text(REGISTRY.format(r1=round(r1, 2), close=24.2))
    code, out, err = run(["reproduce", "--registry", str(path), "--list"], capsys, monkeypatch)
    assert code == 0, err
    assert "README.md:3 (commit 0000000)" in out and "third party: a later paper" in out
    assert "table toy-readme: 7 entries" in out
    argv = [
        "reproduce",
        "--registry",
        str(path),
        "--table",
        "toy-readme",
        "--close",
        "80",
        "--json",
    ]
    code, out, err = run(argv, capsys, monkeypatch)
    assert code == 0, err
    result = json.loads(out)
    verdicts = {o["entry"]["id"]: o["verdict"] for o in result["outcomes"]}
    assert verdicts == {"exact": "reproduced", "close": "close", "far": "differs",
                        "sized": "reproduced"}  # fmt: skip
    # an entry that fails (a PCA to more dims than the 4 database images allow) is listed; the
    # others ran
    (broken,) = result["failed"]
    assert broken["entry"] == "broken" and "5000" in broken["error"]
    # the entry's settings reached extraction and evaluation
    sized = next(o for o in result["outcomes"] if o["entry"]["id"] == "sized")
    run_record = json.loads(Path(sized["run_record"]).read_text())["settings"]
    assert run_record["preprocess"]["image_size"] == [48, 48]
    assert (run_record["preprocess"]["resize"], run_record["preprocess"]["antialias"]) == ("uint8",
                                                                                           False)  # fmt: skip
    assert run_record["no_positive_policy"] == "exclude" and run_record["pca"]["dim"] == 2
    far = next(o for o in result["outcomes"] if o["entry"]["id"] == "far")
    assert far["rows"][0]["difference"] == 90.0 and far["rows"][0]["verdict"] == "differs"
    assert far["rows"][0]["interval"] == pytest.approx([100 * 0.025 ** (1 / 3), 100.0])
    # the open setting it names is audited (dataset_version has no audit row: said so)
    assert far["audit"]["settings"] == ["image-size"]
    assert far["audit"]["not_audited"] == [{"setting": "dataset_version",
                                            "reason": "no audit row measures it"}]  # fmt: skip
    assert [r["setting"] for r in far["audit"]["rows"]] == ["image-size"]
    assert far["audit"]["rows"][0]["audited"].startswith("48x48")
    missing = {m["entry"]: m["lacks"] for m in result["missing"]}
    assert missing["missing-data"] == [
        "data: city-elsewhere: vprbench datasets format city-elsewhere --from CITY/"
    ]
    assert missing["missing-weights"][0].startswith(
        "weights: --weights pittsburgh_checkpoint.pth.tar"
    )
    # the records: one per entry run, with the run record it came from
    records = sorted((isolated_dirs["results"] / "reproduce").glob("*.json"))
    assert len(records) == 4
    exact = json.loads(next(p for p in records if p.name.startswith("exact__")).read_text())
    assert exact["run_record"].endswith(".json") and exact["entry"]["protocol"] == "city-repro"
    # a second run recomputes nothing: the descriptors come from the cache
    run_record = json.loads(Path(exact["run_record"]).read_text())
    descriptors = Path(run_record["files"]["descriptors"])
    stamp = descriptors.stat().st_mtime_ns
    code, out, err = run(["reproduce", "pixels", "--registry", str(path), "--dataset", "city-repro",
                          "--no-audit"], capsys, monkeypatch)  # fmt: skip
    assert code == 0, err
    assert descriptors.stat().st_mtime_ns == stamp
    assert "Published vs measured" in out and "differs" in out
    # report --reproduce turns the records into a table
    code, out, err = run(["report", "--reproduce", "--markdown", "--latex", "--no-figures"],
                         capsys, monkeypatch)  # fmt: skip
    assert code == 0, err
    table = (isolated_dirs["results"] / "reports" / "all" / "report-reproduce.md").read_text()
    (far_row,) = [line for line in table.splitlines() if line.startswith("| far ")]
    cells = [c.strip() for c in far_row.strip("|").split("|")]
    assert cells[:4] == ["far", "city-repro", "4", "10.0"] and cells[5:7] == ["+90.00", "differs"]
    # the latest record of each entry: the second run's, judged at the default --close 1
    assert "24.2 (third party)" in table and "close: within 1 point of it" in table
    latex = (isolated_dirs["results"] / "reports" / "all" / "report-reproduce.tex").read_text()
    assert "measured [95\\%]" in latex and "textbackslash" not in latex
    assert "far & city-repro & 4 & 10.0 & 100.00 [29.24, 100.00] & +90.00 & differs \\\\" in latex


@pytest.mark.parametrize("body,message", [
    ("    settings: {options: {nope: 1}}\n", "unknown option"),
    ("    settings: {stage: two-stage, rerank: selavpr}\n",
     "re-ranker 'selavpr' matches the local features of 'selavpr', not of 'pixels'"),
    ("    settings: {rerank: fol}\n", "a two-stage number names its re-ranker"),
    ("    settings: {image_size: [32]}\n", "image_size is [H, W]"),
    ("    wheights: x\n", "unknown key 'wheights'"),
    ("    settings: {rerank_k: 10}\n", "rerank_k without a re-ranker"),
])  # fmt: skip
def test_entries_the_model_cannot_take_are_refused_with_the_line(body, message, tmp_path):
    path = tmp_path / "published.yaml"
    path.write_text("format: 1\nentries:\n  bad:\n    model: pixels\n    protocol: sped\n"
                    "    published: {1: 50.0}\n    source: {where: x}\n" + body)  # fmt: skip
    with pytest.raises(VPRBenchError, match=re.escape(message)) as info:
        load_published(path)
    assert str(info.value).startswith(f"{path}:8")  # the line of the bad key


def test_a_model_with_entries_gives_no_reason_for_having_none(tmp_path):
    path = tmp_path / "published.yaml"
    path.write_text("format: 1\nentries:\n  one:\n    model: pixels\n    protocol: sped\n"
                    "    published: {1: 50.0}\n    source: {where: x}\n"
                    "no_published:\n  pixels: none published\n")  # fmt: skip
    with pytest.raises(
        VPRBenchError, match="model 'pixels' has entries; a reason is only for a model"
    ):
        load_published(path)


def test_the_shipped_registry_is_valid():
    from vprbench.models.registry import list_models

    registry = load_published()
    assert registry.entries and registry.tables
    for entry in registry.entries.values():
        assert entry.where and entry.published
    # every registered model has entries or says why it has none, never both
    with_entries = {entry.model for entry in registry.entries.values()}
    assert not with_entries & set(registry.no_published)
    assert set(list_models()) == with_entries | set(registry.no_published)
    # the EigenPlaces paper's cells agree with the numbers issue threads state for the same files
    paper = registry.entries
    assert paper["eigenplaces-paper-dim2048-sf-xl-test-v1"].published == {1: 84.1}  # EigenPlaces#4
    assert paper["eigenplaces-paper-dim128-sf-xl-test-v1"].published == {1: 72.4}  # EigenPlaces#3
    assert paper["eigenplaces-paper-dim2048-pitts30k-test"].published == (
        paper["eigenplaces-pitts30k-test-author"].published
    )  # VPR-methods-evaluation#2
    assert paper["mixvpr-eigenplaces-paper-tokyo247"].third_party


def test_shipped_entries_name_the_file_their_card_gives_the_protocol():
    """Where a card says which released file a benchmark is reported with, the registry's entry on
    that benchmark uses that file (and a re-ranked number names a re-ranker of the entry's model)."""
    from vprbench.models import get_card

    registry = load_published()
    assert len(registry.entries) >= 180 and "d2vpr-readme-no-encoder" in registry.tables
    for entry in registry.entries.values():
        release = get_card(entry.model).release_for(entry.protocol)
        if release is not None:
            assert entry.weights == f"official:{release.name}", entry.id
        assert (entry.stage == "two-stage") == ("rerank" in entry.settings), entry.id
    d2vpr = registry.entries["d2vpr-finetune_no_encoder-pitts30k-test"]
    # tony19980810/D2VPR README.md:91-93 at 33042fa
    assert d2vpr.published == {1: 91.7, 5: 95.8, 10: 96.8}


def test_a_boolean_recall_and_a_weights_path_are_refused(tmp_path):
    path = tmp_path / "published.yaml"
    entry = ("format: 1\nentries:\n  bad:\n    model: {model}\n    protocol: sped\n"
             "    published: {{1: {value}}}\n    source: {{where: x}}\n    weights: {weights}\n")  # fmt: skip
    path.write_text(entry.format(model="pixels", value="true", weights="null"))
    with pytest.raises(VPRBenchError, match="published '1': True: expected k >= 1 and a recall"):
        load_published(path)
    path.write_text(entry.format(model="netvlad", value="50.0", weights="ckpt/checkpoint.pth.tar"))
    with pytest.raises(VPRBenchError, match="name the file .its official name., not a path"):
        load_published(path)


def test_weights_are_found_by_official_name_cache_or_download(tmp_path):
    from vprbench.models.weights import cached_name
    from vprbench.reproduce.run import availability, expected_file

    registry = load_published()
    # EigenPlaces' official file depends on dim: the 128-d entry names the 128-d file
    dim128 = registry.entries["eigenplaces-paper-dim128-sf-xl-test-v1"]
    name, url, _ = expected_file(dim128)
    assert name == "ResNet50_128_eigenplaces.pth" and url.endswith("/ResNet50_128_eigenplaces.pth")
    # a released file given by its official name (any folder); the data is not here
    sela = registry.entries["selavpr-msls-msls-val-rerank"]
    given = tmp_path / "downloads" / "SelaVPR_msls.pth"
    here = availability(sela, tmp_path / "data", tmp_path / "cache", [given])
    assert (here.weights, here.weights_ready, here.data) == (str(given), True, False)
    assert here.data_hint.startswith("msls-val: ")
    assert not availability(sela, tmp_path, tmp_path, []).weights_ready  # Drive only: a file
    # an official URL: missing until downloaded (or --download), then the entry's own spec
    boq = next(e for e in registry.entries.values() if e.model == "boq-dinov2")
    name, url, _ = expected_file(boq)
    here = availability(boq, tmp_path, tmp_path / "cache", [])
    assert not here.weights_ready and "reproduce --download fetches it" in here.weights_hint
    assert availability(boq, tmp_path, tmp_path / "cache", [], download=True).weights == boq.weights
    (tmp_path / "cache" / "weights").mkdir(parents=True)
    (tmp_path / "cache" / "weights" / cached_name(url)).write_bytes(b"x")
    assert availability(boq, tmp_path, tmp_path / "cache", []).weights == boq.weights
