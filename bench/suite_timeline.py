"""A pytest plugin for ``bench/bench_suite.py``: each process that runs tests (every pytest-xdist worker) appends
one line per test to ``$S2DC_SUITE_TIMELINE/<worker>.tsv``: start and end (epoch seconds), the CPU seconds the
process itself spent on it (not its children's), and the test's id. Loaded with ``-p suite_timeline`` and this
folder on ``PYTHONPATH``; does nothing without the variable."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    folder = os.environ.get("S2DC_SUITE_TIMELINE")
    start, cpu = time.time(), time.process_time()
    yield
    if folder:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with open(Path(folder) / f"{worker}.tsv", "a") as timeline:
            timeline.write(f"{start:.3f}\t{time.time():.3f}\t{time.process_time() - cpu:.3f}\t{item.nodeid}\n")
