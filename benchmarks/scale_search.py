"""Exact search at SF-XL scale from the descriptor store: a database of generated fp16 descriptors in
an HDF5 file laid out as vprbench's cache writes it, searched top-100 by evaluation's path (rows read
from disk by chunks, ``DiskRows``), for two database sizes, in one run.

    .venv/bin/python benchmarks/scale_search.py [--sizes 250000,1000000] [--queries 1000]
        [--dim 8448] [--workdir build/scale_search] [--keep] [--ivf-rows N]

For each size a child process writes the file (seeded unit rows, fp16, in blocks; reused when a
file of the same size is there), then another child searches it with 1,000 queries (noisy copies of
database rows) and reports its search time and peak resident memory (ru_maxrss: the process's own
pages; the file's pages are the kernel's page cache). The script prints both, the ratio of the peaks
(flat in the database size means about 1) and the throughput, and extrapolates the time to SF-XL's
test database (2.8 M images) at the measured rate, saying what it assumes. The files are deleted at
the end unless ``--keep``. 1,000,000 x 8,448 fp16 is 16.9 GB on disk.

``--ivf-rows N``: also builds evaluation's IVF-PQ index (vprbench.evaluate.search: about 4 sqrt(N)
lists, 64 sub-quantisers of 8 bits, trained on a seeded sample, filled in chunks) on the first N rows
of the smallest store, and reports its build and search times and how often its top-1 and top-10 agree
with exact search on the same rows. (k-means on 2 CPU cores grows as N^1.5 x dim: a million rows take
hours, so N is a parameter.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SF_XL_DATABASE = 2_800_000  # about 2.8 M images (CosPlace); not a counted figure
BLOCK = 8192


def write_store(path: Path, n: int, dim: int) -> None:
    import h5py

    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:  # as Assembly: contiguous, uncompressed, fp16
        ds = f.create_dataset("database", shape=(n, dim), dtype=np.float16, fillvalue=0.0)
        for start in range(0, n, BLOCK):
            block = rng.standard_normal((min(BLOCK, n - start), dim), dtype=np.float32)
            ds[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
        f.attrs["rows"] = n
    os.replace(tmp, path)


def search(path: Path, nq: int) -> dict:
    from vprbench.evaluate.search import exact_search
    from vprbench.extract.cache import disk_rows

    rows = disk_rows(path, "database")
    rng = np.random.default_rng(1)
    picked = np.sort(rng.choice(len(rows), nq, replace=False))
    queries = rows[picked].astype(np.float32)
    queries += 0.01 * rng.standard_normal(queries.shape, dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    idx, _ = exact_search(rows, queries, 100, backend="torch")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (ru_maxrss is KiB)
    found = float((idx[:, 0] == picked).mean())  # each query's own row first
    return {"n": len(rows), "seconds": seconds, "peak_gib": peak, "before_gib": before,
            "top1_is_source": found, "threads": __import__("torch").get_num_threads()}  # fmt: skip


def ivf_pq(path: Path, n: int, nq: int) -> dict:
    import faiss

    from vprbench.evaluate.search import approximate_params, exact_search
    from vprbench.extract.cache import disk_rows

    rows = disk_rows(path, "database")
    # the whole store as evaluation reads it (by chunks, never whole), or its first n rows in memory
    database = rows if n == len(rows) else np.asarray(rows[0:n], dtype=np.float32)
    rng = np.random.default_rng(1)
    picked = np.sort(rng.choice(n, nq, replace=False))
    queries = np.asarray(database[picked], dtype=np.float32) + 0.01 * rng.standard_normal(
        (nq, database.shape[1]), dtype=np.float32
    )
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact, _ = exact_search(database, queries, 10, backend="torch")
    start, timings = time.perf_counter(), {}
    approx, _ = exact_search(database, queries, 10, kind="ivf-pq", timings=timings)
    total = time.perf_counter() - start
    return {"n": n, "seconds": total, **timings, "params": approximate_params("ivf-pq", n, database.shape[1], 10),
            "top1_agrees": float((approx[:, 0] == exact[:, 0]).mean()),
            "top10_overlap": float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])),
            "threads": faiss.omp_get_max_threads(),
            "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="250000,1000000")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=8448)
    parser.add_argument("--workdir", type=Path, default=Path("build/scale_search"))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--ivf-rows", type=int, default=0)
    parser.add_argument("--child", choices=("write", "search", "ivf"))
    parser.add_argument("--path", type=Path)
    parser.add_argument("--n", type=int)
    args = parser.parse_args()
    if args.child == "write":
        return write_store(args.path, args.n, args.dim)
    if args.child == "search":
        return print(json.dumps(search(args.path, args.queries)))
    if args.child == "ivf":
        return print(json.dumps(ivf_pq(args.path, args.n, args.queries)))

    args.workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        path = args.workdir / f"db_{n}x{args.dim}_fp16.h5"
        if not path.is_file():
            t = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--child", "write", "--path", str(path),
                            "--n", str(n), "--dim", str(args.dim)], check=True)  # fmt: skip
            print(
                f"wrote {path} ({path.stat().st_size / 1e9:.1f} GB) in {time.perf_counter() - t:.0f} s"
            )
        out = subprocess.run([sys.executable, __file__, "--child", "search", "--path", str(path),
                              "--queries", str(args.queries)],
                             check=True, capture_output=True, text=True).stdout  # fmt: skip
        results.append(json.loads(out.strip().splitlines()[-1]))
        r = results[-1]
        print(f"{n:>9,} x {args.dim}: exact top-100 of {args.queries} queries in {r['seconds']:.1f} s "
              f"({n * args.queries / r['seconds'] / 1e6:.1f} M comparisons/s, {r['threads']} threads), "
              f"peak RSS {r['peak_gib']:.2f} GiB (before the search {r['before_gib']:.2f}); "
              f"top-1 is the source row for {100 * r['top1_is_source']:.1f}% of queries")  # fmt: skip
    if len(results) >= 2:
        small, large = results[0], results[-1]
        print(
            f"peak memory ratio {large['n']:,} vs {small['n']:,} rows: "
            f"{large['peak_gib'] / small['peak_gib']:.2f} (database {large['n'] / small['n']:.0f}x)"
        )
        rate = large["n"] / large["seconds"]
        print(f"SF-XL extrapolation: {SF_XL_DATABASE:,} database images at the {large['n']:,}-row rate "
              f"({rate:,.0f} rows/s for {args.queries} queries): {SF_XL_DATABASE / rate / 60:.1f} min "
              f"on this machine, {SF_XL_DATABASE * args.dim * 2 / 1e9:.0f} GB of fp16 descriptors "
              "read once; assumes the rate stays linear in the database size (it streams) and the "
              "same queries and threads")  # fmt: skip
    if args.ivf_rows:
        path = args.workdir / f"db_{min(int(s) for s in args.sizes.split(','))}x{args.dim}_fp16.h5"
        out = subprocess.run([sys.executable, __file__, "--child", "ivf", "--path", str(path),
                              "--n", str(args.ivf_rows), "--queries", str(args.queries)],
                             check=True, capture_output=True, text=True).stdout  # fmt: skip
        r = json.loads(out.strip().splitlines()[-1])
        print(f"IVF-PQ on {r['n']:,} x {args.dim} ({r['params']}): built in {r['build_seconds']:.1f} s "
              f"(trained and filled), searched {args.queries} queries in {r['search_seconds']:.2f} s, "
              f"{r['seconds']:.1f} s in all ({r['threads']} threads); top-1 agrees with exact "
              f"search for {100 * r['top1_agrees']:.1f}% of queries, top-10 overlap "
              f"{100 * r['top10_overlap']:.1f}%; peak RSS {r['peak_gib']:.2f} GiB")  # fmt: skip
    if not args.keep:
        for path in args.workdir.glob("db_*_fp16.h5"):
            path.unlink()


if __name__ == "__main__":
    main()
