"""`datasets download` of a set served by rsync (VDD's Eynsham, St Lucia, Baidu Mall): through a
local rsync daemon, never the network. Resumes, verifies every file by checksum, fetches a damaged
file again; without the rsync program, the error names the package."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from tests.test_cli import one_line_error, run
from tests.test_shared_database import make_city
from vprbench.datasets import rsync as rsync_module

needs_rsync = pytest.mark.skipif(
    shutil.which("rsync") is None, reason="the rsync program is not installed (.ci/run installs it)"
)

ENTRY = """protocols:
  city-rsync:
    description: d
    database: {{count: 6, layout: "images/test/database"}}
    queries: {{count: 2, layout: "images/test/queries"}}
    ground_truth: {{source: s, formats: [vdd]}}
    positive: {{rule: utm-radius, threshold: 25, unit: m}}
    licence: l
    obtain: o
    source:
      formatter: vdd
      files: [images/test/database, images/test/queries]
      rsync: {url}
"""


@pytest.fixture
def daemon(tmp_path, monkeypatch):
    """An rsync daemon on 127.0.0.1 serving ``server/`` as module ``sf_xl``, holding a VDD tree
    ``city/images/test/{database,queries}``; the registry names it. Yields the served tree."""
    served = tmp_path / "server" / "city" / "images" / "test"
    make_city(served)
    (served / "queries_a").rename(served / "queries")
    shutil.rmtree(served / "queries_b")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "rsyncd.conf"
    conf.write_text(
        f"pid file = {tmp_path / 'rsyncd.pid'}\nuse chroot = no\nuid = {os.getuid()}\n"
        f"gid = {os.getgid()}\n[sf_xl]\n  path = {tmp_path / 'server'}\n  read only = yes\n"
    )
    proc = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--config={conf}",
                             f"--port={port}", "--address=127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    for _ in range(100):  # until it listens
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    registry = tmp_path / "datasets.yaml"
    registry.write_text(ENTRY.format(url=f"rsync://127.0.0.1:{port}/sf_xl/city"))
    monkeypatch.setenv("VPRBENCH_DATASETS_YAML", str(registry))
    yield served
    proc.terminate()
    proc.wait(timeout=10)


def download(capsys, monkeypatch):
    code, out, err = run(["datasets", "download", "city-rsync"], capsys, monkeypatch)
    assert code == 0, err
    return " ".join(out.split())


@needs_rsync
def test_download_resumes_verifies_and_formats(daemon, isolated_dirs, capsys, monkeypatch):
    out = download(capsys, monkeypatch)
    assert "8 files, 8 fetched this time; every file's checksum equals the server's" in out
    local = isolated_dirs["data"] / "_raw" / "city-rsync" / "files" / "city" / "images" / "test"
    assert sorted(p.name for p in (local / "database").iterdir()) == sorted(
        p.name for p in (daemon / "database").iterdir()
    )
    assert (isolated_dirs["data"] / "city-rsync" / "manifest.json").is_file()  # formatted
    # a second run fetches nothing; a lost file is fetched alone
    assert "8 files, 0 fetched this time" in download(capsys, monkeypatch)
    lost = sorted((local / "queries").iterdir())[0]
    lost.unlink()
    assert "8 files, 1 fetched this time" in download(capsys, monkeypatch)
    # a damaged file with the server's size and time escapes rsync's quick check, not the checksum
    victim = sorted((local / "database").iterdir())[2]
    good, stat = victim.read_bytes(), victim.stat()
    victim.write_bytes(bytes(b ^ 0xFF for b in good))
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    out = download(capsys, monkeypatch)
    assert "0 fetched this time, 1 fetched again" in out
    assert victim.read_bytes() == good


@needs_rsync
def test_a_file_that_stays_different_is_named(daemon, tmp_path, monkeypatch):
    """rsync_fetch itself: the checksum comparison still differs after fetching again."""
    monkeypatch.setattr(rsync_module, "_differing", lambda s, d: ["images/test/database/x.png"])
    with pytest.raises(rsync_module.VPRBenchError, match=r"1 file\(s\) differ from .* after "
                                                         r"fetching them again: images/test/"):  # fmt: skip
        rsync_module.rsync_fetch(str(daemon.parent.parent), tmp_path / "copy")


@needs_rsync
def test_a_server_that_does_not_answer_is_named(tmp_path, isolated_dirs, capsys, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    registry = tmp_path / "datasets.yaml"
    registry.write_text(ENTRY.format(url=f"rsync://127.0.0.1:{port}/sf_xl/city"))
    monkeypatch.setenv("VPRBENCH_DATASETS_YAML", str(registry))
    code, _, err = run(["datasets", "download", "city-rsync"], capsys, monkeypatch)
    line = one_line_error(err)
    assert code == 1 and f"rsync from rsync://127.0.0.1:{port}/sf_xl/city failed" in line
    assert line.endswith("run the download again to resume")


def test_without_the_rsync_program_the_error_names_the_package(isolated_dirs, capsys, monkeypatch):
    monkeypatch.setattr(rsync_module, "rsync_program", lambda: None)
    code, _, err = run(["datasets", "download", "eynsham"], capsys, monkeypatch)
    line = one_line_error(err)
    assert code == 1 and "the `rsync` program is not installed" in line
    assert "rsync://vandaldata.polito.it/sf_xl/VPR-datasets-downloader/eynsham" in line
    assert "`apt-get install rsync`" in line
    # nothing was formatted and no partial dataset is left
    assert not (isolated_dirs["data"] / "eynsham").exists()


def test_the_registry_takes_only_rsync_urls(tmp_path):
    from vprbench.datasets.protocols import load_registry
    from vprbench.errors import VPRBenchError

    registry = tmp_path / "datasets.yaml"
    registry.write_text(ENTRY.format(url="http://example.org/city"))
    with pytest.raises(
        VPRBenchError, match=r"city-rsync.source: field 'rsync' must be an rsync://"
    ):
        load_registry(registry)
    assert load_registry()["st-lucia"].rsync.endswith("/VPR-datasets-downloader/st_lucia")


def test_an_old_rsync_is_named_with_its_version(tmp_path, isolated_dirs, capsys, monkeypatch):
    """macOS's rsync 2.6.9 has neither --info=progress2 nor --no-inc-recursive."""
    fake = tmp_path / "rsync"
    fake.write_text("#!/bin/sh\necho 'rsync  version 2.6.9  protocol version 29'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(rsync_module, "rsync_program", lambda: str(fake))
    code, _, err = run(["datasets", "download", "st-lucia"], capsys, monkeypatch)
    line = one_line_error(err)
    assert code == 1 and "is version 2.6.9; downloading rsync://" in line
    assert "needs rsync 3.1 or newer" in line


def test_formatting_skips_an_interrupted_rsyncs_partial_files(tmp_path):
    """VDD's glob skips hidden folders; so does the vdd reader (.rsync-partial/ of a stopped copy)."""
    from vprbench.datasets.readers import _list_images

    make_city(tmp_path / "test")
    partial = tmp_path / "test" / "database" / ".rsync-partial"
    partial.mkdir()
    (partial / "@0@0@10@S@0@0@x@@@@@@@@.png").write_bytes(b"half a file")
    assert len(_list_images(tmp_path / "test" / "database")) == 6
