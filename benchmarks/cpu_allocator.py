"""CPU extraction with glibc's default allocator settings against vprbench's (vprbench.allocator:
freed tensor buffers reused instead of mmap'd and zeroed again for every layer), measured in one run.

    .venv/bin/python benchmarks/cpu_allocator.py [--model effnet-lite0-gem[,d2vpr]] [--images 128]
        [--batch 32] [--repeats 2]

For each model it writes ``--images`` generated 640x480 JPEGs (and as many queries) as a dataset,
then runs ``extract`` into an empty cache in a fresh process (the setting is per process and cannot
be undone), with ``VPRBENCH_MALLOC=system`` and without it, interleaved, ``--repeats`` times. Each
process reports the extraction's wall time and the process's user and system CPU time, and a digest
of the descriptors. Printed: median images/s of each, the speed-up, the CPU time spent in the kernel,
and whether the descriptors are byte-identical (they must be: only where memory comes from differs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from extract_pipeline import make_dataset

CHILD = """
import hashlib, json, resource, sys, time, warnings
warnings.simplefilter("ignore")
from vprbench.datasets.formatted import load_formatted
from vprbench.extract import ExtractSettings, extract
from pathlib import Path
from vprbench import allocator
import torch, vprbench.models.registry  # imported before the clock starts: not what is compared
dataset = load_formatted("bench", Path({data!r}))
settings = ExtractSettings(model={model!r}, batch_size={batch}, workers=0)
before = resource.getrusage(resource.RUSAGE_SELF)
start = time.perf_counter()
out = extract(dataset, settings, Path({cache!r}))
wall = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF)
digest = hashlib.sha256(out.descriptors.database.tobytes() + out.descriptors.queries.tobytes())
print("RESULT", json.dumps({{"wall": wall, "user": after.ru_utime - before.ru_utime,
      "sys": after.ru_stime - before.ru_stime, "sha256": digest.hexdigest(),
      "malloc": allocator.describe()}}))
"""

SETTINGS = {"glibc defaults": "system", "vprbench": ""}


def run_once(data: Path, cache: Path, model: str, batch: int, malloc: str) -> dict:
    env = {**os.environ, "VPRBENCH_MALLOC": malloc}
    code = CHILD.format(data=str(data), cache=str(cache), model=model, batch=batch)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.split("RESULT", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="effnet-lite0-gem", help="one or more, comma-separated")
    parser.add_argument("--images", type=int, default=128, help="database images (as many queries)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    n = 2 * args.images
    with tempfile.TemporaryDirectory(prefix="vprbench-malloc-") as tmp:
        root = Path(tmp)
        make_dataset(root, args.images)
        for model in args.model.split(","):
            runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
            for i in range(args.repeats):  # interleaved: slow spells fall on both alike
                for name, malloc in SETTINGS.items():
                    cache = root / f"cache-{model}-{name.replace(' ', '-')}-{i}"
                    runs[name].append(run_once(root / "data", cache, model, args.batch, malloc))
            print(f"{model}, {n} 640x480 JPEGs, batch {args.batch}, CPU, {os.cpu_count()} cores, "
                  f"median of {args.repeats}")  # fmt: skip
            rate = {}
            for name, results in runs.items():
                rate[name] = n / statistics.median(r["wall"] for r in results)
                user = statistics.median(r["user"] for r in results)
                system = statistics.median(r["sys"] for r in results)
                print(f"  {name:>14}: {rate[name]:7.1f} images/s, CPU time user {user:6.1f} s, "
                      f"system {system:6.1f} s   [{results[0]['malloc']}]")  # fmt: skip
            digests = {r["sha256"] for results in runs.values() for r in results}
            print(
                f"  speed-up {rate['vprbench'] / rate['glibc defaults']:.2f}x; descriptors "
                f"byte-identical across all runs: {'yes' if len(digests) == 1 else 'NO'}"
            )


if __name__ == "__main__":
    main()
