"""What a training or probing process pays before it computes: importing torch and MONAI, the optimiser's first step.

    python bench/bench_startup.py [--repeats 5]

Each variant runs in a fresh interpreter (``python -c ...``), alternated, ``--repeats`` times; the median
wall-clock and CPU (user + system) seconds are printed. ``lean`` is what ``s2dc pretrain|finetune|probe|...`` does
(:func:`s2dc.runtime.import_monai_lean`); ``lean4`` hides only the first four extras (scipy.signal, scipy.stats,
matplotlib, pandas), as it did until 2026-11-30, ``lean8`` the first eight, as until 2026-12-02; ``plain`` is
``import monai``; ``torch`` is the floor. ``adamw`` is one
step of torch's AdamW (its first call imports ``torch._dynamo``), ``eager`` one step of
:class:`s2dc.train.optim.EagerAdamW`, which the training commands use.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import run_timed  # noqa: E402

VARIANTS = {
    "torch": "import torch",
    "plain": "import torch, monai",
    "lean": "from s2dc.runtime import import_monai_lean; import_monai_lean()",
    "lean4": "import s2dc.runtime as r; r.MONAI_UNUSED_EXTRAS = r.MONAI_UNUSED_EXTRAS[:4]; r.import_monai_lean()",
    "lean8": "import s2dc.runtime as r; r.MONAI_UNUSED_EXTRAS = r.MONAI_UNUSED_EXTRAS[:8]; r.import_monai_lean()",
    "adamw": "import torch; p = torch.nn.Parameter(torch.ones(1)); torch.optim.AdamW([p]).step()",
    "eager": "import torch; from s2dc.train.optim import EagerAdamW; p = torch.nn.Parameter(torch.ones(1)); "
             "EagerAdamW([p]).step()",
}


def seconds(code: str) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) seconds of one fresh interpreter running ``code``."""
    wall, cpu, _ = run_timed([sys.executable, "-c", code], check=True)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    seconds(VARIANTS["plain"])  # warm the file cache
    for _ in range(args.repeats):
        for name, code in VARIANTS.items():
            times[name].append(seconds(code))
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, {args.repeats} repeats")
    for name, code in VARIANTS.items():
        wall = statistics.median(t[0] for t in times[name])
        cpu = statistics.median(t[1] for t in times[name])
        print(f"{name:6s} {wall:5.2f} s  CPU {cpu:5.2f} s   ({code})")


if __name__ == "__main__":
    main()
