"""What a run pays to know its data: the file stamps (every start) and the hash of the volumes' bytes (a run's first
start, and a resume whose files' times or inodes changed; :mod:`s2dc.train.identity`).

    python bench/bench_data_hash.py [resources/quick/ct_pool/dataset.json ...] [--repeats 3]

For each pretraining pool (default: the quick scale's three), the median seconds of
:func:`~s2dc.train.identity.data_fingerprint` (stamps) and of :func:`~s2dc.train.identity.volumes_sha256` (bytes,
read from the page cache after the first pass), with the files' MiB and the hash's MiB/s.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

from s2dc.data.datalist import list_volumes
from s2dc.train.identity import volumes_sha256, data_fingerprint

POOLS = [f"resources/quick/{name}/dataset.json" for name in ("ct_pool", "mri_pool", "pet_pool")]


def median_seconds(fn, repeats: int) -> float:
    fn()  # the first pass reads the files into the page cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="*", default=POOLS, help="dataset.json files (default: the quick pools)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print("| pool | files | MiB | stamps (s) | bytes' hash (s) | hash MiB/s |")
    print("|---|---|---|---|---|---|")
    for source in args.sources:
        paths = list_volumes(source)
        mib = sum(Path(p).stat().st_size for p in paths) / 2**20
        stamps = median_seconds(lambda s=source, p=paths: data_fingerprint(s, p), args.repeats)
        hashed = median_seconds(lambda p=paths: volumes_sha256(p), args.repeats)
        print(f"| {source} | {len(paths)} | {mib:.1f} | {stamps:.4f} | {hashed:.4f} | {mib / hashed:.0f} |")


if __name__ == "__main__":
    main()
