"""Process-level set-up for CPU training: glibc malloc tuning.

glibc hands every freed block above its mmap threshold back to the OS, so each large CPU tensor is
then re-faulted page by page by the kernel; on a 2-core machine this made a Swin encoder forward
pass about 3× slower (``bench/bench_step.py``, docs/benchmarks.md). glibc reads its tuning only at
process start, so the command-line entry points re-execute themselves once with mmap disabled and
trimming off. Values already in the environment are kept; ``S2DC_MALLOC_TUNING=0`` turns this off.
"""

from __future__ import annotations

import os
import sys

MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


def reexec_with_tuned_malloc() -> None:
    """Re-run the current command line with :data:`MALLOC_ENV` set (Linux only, at most once)."""
    if sys.platform != "linux" or os.environ.get("S2DC_MALLOC_TUNING", "1") == "0":
        return
    if all(key in os.environ for key in MALLOC_ENV):
        return
    env = {**MALLOC_ENV, **os.environ}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
