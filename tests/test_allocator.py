"""vprbench.allocator: freed tensor buffers are reused, not faulted in again; the opt-out works."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vprbench import allocator

CHILD = """
import json, resource, torch
from vprbench import allocator
reusing = allocator.reuse_freed_memory()
def cycle():  # a forward pass's activation: allocated, written, freed
    x = torch.empty(40 << 20, dtype=torch.uint8)
    x.fill_(1)
    del x
for _ in range(20):  # the heap settles first
    cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    cycle()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
allocator.release_freed_memory()
print("RESULT", json.dumps({"reusing": reusing, "faults": faults, "malloc": allocator.describe()}))
"""


def _run(malloc: str) -> dict:
    env = {**os.environ, allocator.ENV: malloc}
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                          check=True)  # fmt: skip
    return json.loads(done.stdout.split("RESULT", 1)[1])


@pytest.mark.skipif(allocator._glibc() is None, reason="the C library is not glibc")
def test_freed_buffers_are_reused_unless_the_user_opts_out():
    pages = (40 << 20) // os.sysconf("SC_PAGE_SIZE")  # of one 40 MiB buffer
    thp = "/sys/kernel/mm/transparent_hugepage/enabled"
    if os.path.exists(thp) and "[always]" in Path(thp).read_text():
        pages = 20  # an mmap'd block then faults in 2 MiB at a time
    kept, system = _run(""), _run("system")
    assert kept["reusing"] and kept["malloc"].startswith("glibc ")
    assert "freed memory reused" in kept["malloc"]
    # glibc's defaults mmap a 40 MiB block (above its 32 MiB ceiling) anew each time: every page of
    # every cycle is faulted in (and zeroed) again; reused, none is.
    assert system["faults"] >= 10 * pages
    assert kept["faults"] < pages
    assert not system["reusing"] and system["malloc"].endswith("system defaults")
