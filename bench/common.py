"""Small helpers shared by the benchmark scripts."""

from __future__ import annotations

import platform
import resource
import statistics
import subprocess
import time
from pathlib import Path


def median_time(fn, repeats: int, warmup: int = 1, device: torch.device | None = None) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    import torch

    def sync():
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> str:
    import torch

    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    return f"{name}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def cpu_name() -> str:
    """The CPU's model name, family and model (Linux's /proc/cpuinfo), or what ``platform`` knows."""
    try:
        fields = {key.strip(): value.strip() for key, _, value in
                  (line.partition(":") for line in Path("/proc/cpuinfo").read_text().splitlines())}
        return f"{fields['model name']} (CPU family {fields['cpu family']}, model {fields['model']})"
    except (OSError, KeyError):
        return platform.processor() or platform.machine()


def run_timed(command: list[str], **kwargs) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run ``command`` (``subprocess.run`` with ``kwargs``): its wall-clock seconds, the CPU seconds (user + system)
    of it and all it started, and its completed process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, **kwargs)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, done
