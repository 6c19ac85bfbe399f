"""CPU extraction with glibc's default allocator settings against vprbench's (vprbench.allocator:
freed tensor buffers reused instead of mmap'd and zeroed again for every layer), measured in one run.

    .venv/bin/python benchmarks/cpu_allocator.py [--model effnet-lite0-gem[,d2vpr]] [--images 128]
        [--batch 32] [--repeats 2] [--train-steps 0] [--train-places 4]

For each model it writes ``--images`` generated 640x480 JPEGs (and as many queries) as a dataset,
then runs ``extract`` into an empty cache in a fresh process (the setting is per process and cannot
be undone), with ``VPRBENCH_MALLOC=system`` and without it, interleaved, ``--repeats`` times. Each
process reports the extraction's wall time and the process's user and system CPU time, and a digest
of the descriptors. Printed: median images/s of each, the speed-up, the CPU time spent in the kernel,
and whether the descriptors are byte-identical (they must be: only where memory comes from differs).
``--train-steps N`` also runs N steps of d2vpr fine-tuning (random init) both ways, and prints the
median images/s and whether the losses are identical.
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
from vprbench.extract.settings import ExtractSettings
from vprbench.extract.run import extract
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

TRAIN_CHILD = """
import json, resource, statistics, sys, warnings
warnings.simplefilter("ignore")
from pathlib import Path
from vprbench import allocator
from vprbench.train import config_from, train
before = resource.getrusage(resource.RUSAGE_SELF)
out = Path({out!r})
train(config_from("finetune", data="nordland-train-sample", out=str(out), model="d2vpr",
                  device="cpu", dtype="fp32", places_per_batch={places}, images_per_place=4,
                  epochs=100, max_steps={steps}, warmup_steps=0, workers=0,
                  checkpoint_every=10**9))
after = resource.getrusage(resource.RUSAGE_SELF)
rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
speeds = [r["images_per_s"] for r in rows if "loss" in r][1:]  # the first step warms up
print("RESULT", json.dumps({{"images_per_s": statistics.median(speeds),
      "user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime,
      "loss": [r["loss"] for r in rows if "loss" in r], "malloc": allocator.describe()}}))
"""

SETTINGS = {"glibc defaults": "system", "vprbench": ""}


def run_child(code: str, malloc: str) -> dict:
    """``code`` in a fresh Python process with ``VPRBENCH_MALLOC=malloc``; the JSON it prints."""
    env = {**os.environ, "VPRBENCH_MALLOC": malloc}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.split("RESULT", 1)[1])


def compare_training(root: Path, steps: int, places: int, repeats: int) -> None:
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for i in range(repeats):
        for name, malloc in SETTINGS.items():
            out = root / f"train-{name.replace(' ', '-')}-{i}"
            code = TRAIN_CHILD.format(out=str(out), steps=steps, places=places)
            runs[name].append(run_child(code, malloc))
    print(f"d2vpr fine-tuning on nordland-train-sample, CPU, {places} places x 4 images per step, "
          f"{steps} steps (median images/s of steps 2-{steps}), median of {repeats}")  # fmt: skip
    rate = {}
    for name, results in runs.items():
        rate[name] = statistics.median(r["images_per_s"] for r in results)
        system = statistics.median(r["sys"] for r in results)
        print(f"  {name:>14}: {rate[name]:7.2f} images/s, system CPU time {system:6.1f} s")
    losses = {json.dumps(r["loss"]) for results in runs.values() for r in results}
    print(f"  speed-up {rate['vprbench'] / rate['glibc defaults']:.2f}x; losses identical across "
          f"all runs: {'yes' if len(losses) == 1 else 'NO'}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="effnet-lite0-gem", help="one or more, comma-separated")
    parser.add_argument("--images", type=int, default=128, help="database images (as many queries)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=0,
                        help="also compare d2vpr fine-tuning steps (0: skip)")  # fmt: skip
    parser.add_argument("--train-places", type=int, default=4)
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
                    code = CHILD.format(data=str(root / "data"), cache=str(cache), model=model,
                                        batch=args.batch)  # fmt: skip
                    runs[name].append(run_child(code, malloc))
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
        if args.train_steps:
            compare_training(root, args.train_steps, args.train_places, args.repeats)


if __name__ == "__main__":
    main()
