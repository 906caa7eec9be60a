"""Where the test suite's wall-clock time goes on this machine (issue 8: the README's test command in at most five
minutes on 2 cores): its total, the per-module sums, and the time both cores were not busy while tests ran.

    python bench/bench_suite.py [pytest arguments ...]

Runs ``python -m pytest -q`` (pyproject's options: one pytest-xdist worker per core) with
``bench/suite_timeline.py`` recording each test's start and end, while a thread reads the machine's idle time from
``/proc/stat`` each second (Linux). Prints the wall-clock time and the CPU of pytest and all it started (user +
system), the time before the first test starts (start-up and collection) and after the last ends, each module's
summed test time (over the workers: more than the wall-clock time), and the idle core-seconds between the first
test's start and the last one's end with the tests that ran during them (a test that sleeps or waits on a timer
leaves a core idle that CPU work elsewhere cannot use). Exits with pytest's status.
"""

from __future__ import annotations

import collections
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def idle_census(samples: list[tuple[float, float]], stop: threading.Event) -> None:
    """Append (time, idle cores over the last second) to ``samples`` each second until ``stop`` is set."""
    def read() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return sum(values), values[3] + values[4]  # all jiffies; idle and iowait

    cores = os.cpu_count() or 1
    before = read()
    while not stop.wait(1.0):
        now = read()
        total, idle = now[0] - before[0], now[1] - before[1]
        samples.append((time.time(), cores * idle / total if total else 0.0))
        before = now


def main() -> int:
    census: list[tuple[float, float]] = []
    stop = threading.Event()
    with tempfile.TemporaryDirectory() as timeline:
        env = {**os.environ, "S2DC_SUITE_TIMELINE": timeline,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "bench"), os.environ.get("PYTHONPATH")]))}
        sampler = threading.Thread(target=idle_census, args=(census, stop), daemon=True)
        if Path("/proc/stat").exists():
            sampler.start()
        start = time.time()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "suite_timeline", *sys.argv[1:]],
                              cwd=REPO, env=env)
        wall = time.time() - start
        stop.set()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        tests = []
        for path in Path(timeline).glob("*.tsv"):
            for line in path.read_text().splitlines():
                begin, end, _, nodeid = line.split("\t", 3)
                tests.append((float(begin), float(end), nodeid))
    if not tests:
        print("no test ran")
        return done.returncode
    first, last = min(t[0] for t in tests), max(t[1] for t in tests)
    print(f"\n{cpu_name()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"pytest: {wall:.2f} s wall, {children.ru_utime:.1f} s user + {children.ru_stime:.1f} s sys, exit "
          f"{done.returncode}; {len(tests)} tests from {first - start:.1f} s to {last - start:.1f} s "
          f"(start-up and collection before, {start + wall - last:.1f} s after)")
    modules = collections.Counter()
    for begin, end, nodeid in tests:
        modules[nodeid.split("::")[0]] += end - begin
    print(f"summed test time {sum(modules.values()):.1f} s; the modules over 10 s:")
    for module, seconds in modules.most_common():
        if seconds >= 10:
            print(f"  {seconds:7.1f} s  {module}")
    inside = [(at, idle) for at, idle in census if first <= at <= last]
    if inside:
        blame = collections.Counter()
        for at, idle in inside:
            running = [nodeid.split("[")[0] for begin, end, nodeid in tests if begin <= at and end >= at - 1.0]
            for nodeid in running:
                blame[nodeid] += idle / len(running)
        print(f"idle while tests ran: {sum(idle for _, idle in inside):.1f} core-seconds; the tests running then "
              "(each second's idle shared among them), over 1 core-second:")
        for nodeid, seconds in blame.most_common():
            if seconds >= 1.0:
                print(f"  {seconds:6.1f}  {nodeid}")
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
