"""Downloads against a local HTTP server on 127.0.0.1: resume, checksum failure, mirror fallback."""

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile

import pytest

from vprbench.datasets.download import Archive, extract, fetch
from vprbench.errors import VPRBenchError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves FILES[path]; honours Range; FAULTS[path] = 'truncate-once' | 'corrupt' | 'no-range'."""

    FILES: dict = {}
    FAULTS: dict = {}
    LOG: list = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        data = self.FILES.get(self.path)
        self.LOG.append((self.path, self.headers.get("Range")))
        if data is None:
            self.send_error(404)
            return
        fault = self.FAULTS.get(self.path)
        if fault == "corrupt":
            data = data[:-1] + b"!"
        start = 0
        if self.headers.get("Range") and fault != "no-range":
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if fault == "truncate-once":
            self.FAULTS[self.path] = None
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    Handler.FILES, Handler.FAULTS, Handler.LOG = {}, {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def sha(data):
    return hashlib.sha256(data).hexdigest()


def test_interrupted_download_resumes_with_range(server, tmp_path):
    Handler.FILES["/a.bin"] = PAYLOAD
    Handler.FAULTS["/a.bin"] = "truncate-once"
    report = fetch(Archive("a.bin", (f"{server}/a.bin",), sha(PAYLOAD), extract=False), tmp_path)
    assert report.path.read_bytes() == PAYLOAD and report.verified
    ranges = [r for p, r in Handler.LOG if p == "/a.bin"]
    assert ranges[0] is None and ranges[1] == f"bytes={len(PAYLOAD) // 3}-"
    assert not (tmp_path / "a.bin.part").exists()


def test_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    Handler.FILES["/a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:1000])
    (tmp_path / "a.bin.part.source").write_text(f"{server}/a.bin")  # begun on this same mirror
    fetch(Archive("a.bin", (f"{server}/a.bin",), sha(PAYLOAD), extract=False), tmp_path)
    assert Handler.LOG == [("/a.bin", "bytes=1000-")]
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_checksum_failure_falls_back_to_the_next_mirror(server, tmp_path):
    Handler.FILES["/bad/a.bin"] = PAYLOAD
    Handler.FAULTS["/bad/a.bin"] = "corrupt"
    Handler.FILES["/good/a.bin"] = PAYLOAD
    mirrors = (f"{server}/down/a.bin", f"{server}/bad/a.bin", f"{server}/good/a.bin")
    report = fetch(Archive("a.bin", mirrors, sha(PAYLOAD), extract=False), tmp_path)
    assert report.path.read_bytes() == PAYLOAD
    assert any("404" in f for f in report.failures) and any("sha256" in f for f in report.failures)


def test_all_mirrors_failing_lists_what_was_tried(server, tmp_path):
    Handler.FILES["/bad/a.bin"] = PAYLOAD
    Handler.FAULTS["/bad/a.bin"] = "corrupt"
    with pytest.raises(VPRBenchError) as info:
        fetch(
            Archive(
                "a.bin",
                (f"{server}/none/a.bin", f"{server}/bad/a.bin"),
                sha(PAYLOAD),
                extract=False,
            ),
            tmp_path,
        )
    message = str(info.value)
    assert (
        "could not download a.bin" in message and "/none/a.bin" in message and "sha256" in message
    )
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_existing_valid_file_is_not_downloaded_again_and_server_without_range(server, tmp_path):
    Handler.FILES["/a.bin"] = PAYLOAD
    Handler.FAULTS["/a.bin"] = "no-range"
    (tmp_path / "a.bin.part").write_bytes(b"garbage")
    fetch(Archive("a.bin", (f"{server}/a.bin",), sha(PAYLOAD), extract=False), tmp_path)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD  # restarted from scratch on a 200
    Handler.LOG.clear()
    fetch(Archive("a.bin", (f"{server}/a.bin",), sha(PAYLOAD), extract=False), tmp_path)
    assert Handler.LOG == []


def test_extract_zip_and_tar_and_refuse_traversal(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("SPEDTEST/ref/0000000.jpg", b"x")
    (tmp_path / "a.zip").write_bytes(buf.getvalue())
    out = extract(tmp_path / "a.zip", tmp_path / "out")
    assert (out / "SPEDTEST/ref/0000000.jpg").read_bytes() == b"x"
    with tarfile.open(tmp_path / "b.tar.gz", "w:gz") as t:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 1
        t.addfile(info, io.BytesIO(b"e"))
    with pytest.raises(VPRBenchError, match="unsafe member path"):
        extract(tmp_path / "b.tar.gz", tmp_path / "out2")
    assert not (tmp_path / "evil.txt").exists() and list((tmp_path / "out2").iterdir()) == []
    (tmp_path / "c.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(VPRBenchError, match="c.zip"):
        extract(tmp_path / "c.zip", tmp_path / "out3")


def test_a_partial_file_is_never_resumed_from_another_mirror(server, tmp_path):
    # Mirror one served the first third and failed; mirror two's file may differ: restart there.
    Handler.FILES["/one/a.bin"] = PAYLOAD
    Handler.FAULTS["/one/a.bin"] = "truncate-once"
    Handler.FILES["/two/a.bin"] = PAYLOAD
    with pytest.raises(VPRBenchError):
        fetch(
            Archive("a.bin", (f"{server}/one/a.bin",), sha(PAYLOAD), extract=False),
            tmp_path,
            attempts_per_mirror=1,
        )
    assert (tmp_path / "a.bin.part").stat().st_size == len(PAYLOAD) // 3
    Handler.LOG.clear()
    report = fetch(
        Archive("a.bin", (f"{server}/two/a.bin",), sha(PAYLOAD), extract=False), tmp_path
    )
    assert Handler.LOG == [("/two/a.bin", None)]  # no Range request: a fresh download
    assert report.path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "a.bin.sha256"]
