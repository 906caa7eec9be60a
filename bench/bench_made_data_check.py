"""What the workflow pays at every start to check that no twin's file changed after its dataset.json was written
(:func:`s2dc.workflow_checks.check_made_data`): once with no stamps (every listed file hashed), then with the stamps
that pass kept (only the files' status read).

    python bench/bench_made_data_check.py [--params params.yaml] [--scale quick] [--repeats 3]

Run it in a folder that holds the scale's twins (e.g. after the main job); the stamps go to a temporary folder, not to
the workflow's ``.snakemake/s2dc/data-stamps``. The first pass reads the files from the page cache when they were read
just before (a run that has just made them).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from s2dc.data.datalist import listed_files
from s2dc.workflow_checks import _scale, check_made_data, dataset_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--scale", default=None, help="default: params.yaml's `scale`")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.params).read_text())
    config["scale"] = args.scale or config["scale"]
    jsons = [Path(dataset_json(config, name)) for name in sorted(_scale(config)[1]["datasets"])]
    files = [j.parent / rel for j in jsons if j.is_file()
             for _, rel in listed_files([e for key in ("training", "validation")
                                         for e in json.loads(j.read_text()).get(key, []) if isinstance(e, dict)])]
    mb = sum(f.stat().st_size for f in files) / 1e6
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}; "
          f"scale {config['scale']}: {len(jsons)} datasets, {len(files)} listed files, {mb:.0f} MB")
    with tempfile.TemporaryDirectory() as stamps:
        start = time.perf_counter()
        hashed = check_made_data(config, stamps)
        print(f"first (no stamps): {time.perf_counter() - start:.3f} s, {len(hashed)} datasets hashed")
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            hashed = check_made_data(config, stamps)
            times.append(time.perf_counter() - start)
        print(f"after (stamps kept): {statistics.median(times):.3f} s (median of {args.repeats}), "
              f"{len(hashed)} datasets hashed")


if __name__ == "__main__":
    main()
