"""How long `snakemake -n` takes to plan a scale's DAG with none of its data present (issue 8: the paper DAG in
at most 10 s).

    python bench/bench_dry_run.py [--repeats 5] [--scales paper quick smoke]

Each variant runs `snakemake -n --config scale=<scale>` with this repository's Snakefile and params.yaml in a fresh
interpreter and an empty working folder, alternated, ``--repeats`` times; the median wall-clock and CPU (user +
system) seconds and the job count are printed. ``<scale>`` reads torchrun's option table from the cache that
:mod:`s2dc.workflow_checks` keeps (``$XDG_CACHE_HOME/s2dc/torchrun``, warmed by a first run), ``<scale>-cold`` from
a cache folder without it each time (the parsed-code cache of :mod:`s2dc.fingerprint` copied in, warm), as the first
run after installing torch does (only scales whose launcher is torchrun read the table: ``paper``).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, run_timed  # noqa: E402

from s2dc.fingerprint import _cache_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def dry_run(scale: str, cache: str | None) -> tuple[float, float, int]:
    """Wall-clock and CPU seconds of one `snakemake -n` of ``scale`` in a new empty folder, and its job count;
    ``cache``: $XDG_CACHE_HOME for it (None: this process's)."""
    env = dict(os.environ) if cache is None else {**os.environ, "XDG_CACHE_HOME": cache}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the jobs' `s2dc`, as installed
    with tempfile.TemporaryDirectory() as work:
        wall, cpu, done = run_timed([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                                     "--configfile", str(REPO / "params.yaml"), "-n", "--config", f"scale={scale}"],
                                    cwd=work, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"snakemake -n --config scale={scale} failed:\n{done.stderr[-3000:]}")
    total = re.search(r"^total\s+(\d+)$", done.stdout, flags=re.M)
    return wall, cpu, int(total.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scales", nargs="+", default=["paper", "quick", "smoke"])
    args = parser.parse_args()
    variants = {scale: None for scale in args.scales}
    variants.update({f"{scale}-cold": "cold" for scale in args.scales if scale == "paper"})
    code_cache = _cache_dir()  # s2dc.fingerprint's: $XDG_CACHE_HOME/s2dc/code
    for scale in args.scales:
        dry_run(scale, None)  # the file cache, the parse caches and torchrun's table warmed
    times: dict[str, list[tuple[float, float, int]]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, cold in variants.items():
            with tempfile.TemporaryDirectory() as cache:
                if cold:  # no torchrun table; the parsed-code cache as warm as this user's
                    shutil.copytree(code_cache, Path(cache) / code_cache.relative_to(code_cache.parents[1]))
                times[name].append(dry_run(name.removesuffix("-cold"), cache if cold else None))
    print(f"{cpu_name()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{args.repeats} repeats")
    for name, runs in times.items():
        wall = statistics.median(t[0] for t in runs)
        cpu = statistics.median(t[1] for t in runs)
        print(f"{name:11s} {wall:5.2f} s  CPU {cpu:5.2f} s   {runs[0][2]} jobs   (min {min(t[0] for t in runs):.2f} s, "
              f"max {max(t[0] for t in runs):.2f} s)")


if __name__ == "__main__":
    main()
