"""How long one synthetic case takes to draw, per twin, at the writer's default grid (96×96×64).

    python bench/bench_twins.py [--repeats 3] [--shape 96 96 64]

The median wall-clock seconds of ``TWINS[name].make(seed, shape, 0)`` over ``--repeats`` seeds, one line per twin.
(This replaced a timed test of the BraTS 2021 twin, < 2.5 s, which failed on a loaded machine: timings are measured
here and written down, never asserted by the suite.)
"""

from __future__ import annotations

import argparse
import statistics
import time

from s2dc.data.synthetic.twins import TWINS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=3, default=[96, 96, 64])
    args = parser.parse_args()
    for name in sorted(TWINS):
        times = []
        for seed in range(args.repeats):
            start = time.perf_counter()
            TWINS[name].make(seed, tuple(args.shape), 0)
            times.append(time.perf_counter() - start)
        print(f"{name:12s} {statistics.median(times):6.2f} s  (median of {args.repeats})", flush=True)


if __name__ == "__main__":
    main()
