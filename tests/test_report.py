"""The benchmark table: aggregation over seeds, the paper's numbers, the probe table, bad files."""

from __future__ import annotations

import json
import statistics

import pytest

from s2dc.cli import main


def write_run(folder, method, seed, dice, dataset="synthetic_btcv", ratio=0.1):
    path = folder / f"{method}_{seed}_{ratio}.json"
    path.write_text(json.dumps({"task": "segmentation", "dataset": dataset, "method": method, "label_ratio": ratio,
                                "seed": seed, "dice_mean": dice, "train_cases": 3, "seconds": 60.0,
                                "score": {"key": "dice_mean", "name": "Dice", "value": 100 * dice}}))
    return path


def test_mean_and_sample_std_over_seeds(tmp_path, capsys):
    dice = {"scratch": [0.10, 0.20, 0.40], "s2dc": [0.30, 0.35, 0.50]}
    files = [write_run(tmp_path, m, s, d) for m, values in dice.items() for s, d in enumerate(values)]
    files.append(write_run(tmp_path, "s2dc", 0, 0.9, dataset="synthetic_btcv", ratio=1.0))
    assert main(["report", "--out", str(tmp_path / "out"), *map(str, files)]) == 0
    nested = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for method, values in dice.items():
        cell = nested["synthetic_btcv"][method]["labels_10%"]
        assert cell["mean"] == pytest.approx(100 * statistics.mean(values), abs=1e-4)
        assert cell["std"] == pytest.approx(100 * statistics.stdev(values), abs=1e-4)
        assert cell["seeds"] == 3
    assert nested["synthetic_btcv"]["s2dc"]["labels_100%"] == {"mean": 90.0, "std": 0.0, "seeds": 1}
    table = (tmp_path / "out" / "benchmark.md").read_text()
    assert "| synthetic_btcv | segmentation | Dice | s2dc | 100% | 90.00 ± 0.00 | 1 | 3 | 84.14 |" in table  # poster Table 2
    assert "| synthetic_btcv | segmentation | Dice | scratch | 10% | 23.33 ± 15.28 | 3 | 3 | — |" in table
    assert "Frozen-encoder protocol" not in table and "probe" not in nested
    assert "3 rows from 7 runs" in capsys.readouterr().out


def test_probe_results_become_a_second_table(tmp_path):
    run = write_run(tmp_path, "s2dc", 0, 0.5)
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps({"dataset": "synthetic_btcv", "task": "segmentation", "metric": "balanced accuracy",
                                 "stage": 2, "encoders": {
        "voxels": {"score": 0.406, "balanced_accuracy": 0.406, "organ_recall": 0.375, "recall": {},
                   "structure": {"consistency": 0.9, "inter": 0.8, "discrepancy": 0.2, "ratio": 2.0}},
        "s2dc": {"score": 0.75, "balanced_accuracy": 0.75, "organ_recall": None, "recall": {}}}}))
    regression = tmp_path / "probe_udpet.json"
    regression.write_text(json.dumps({"dataset": "synthetic_udpet", "task": "reconstruction", "metric": "R²",
                                      "stage": 2, "encoders": {"s2dc": {"score": 0.8123}}}))
    assert main(["report", "--out", str(tmp_path / "out"), str(run), "--probe", str(probe), str(regression)]) == 0
    table = (tmp_path / "out" / "benchmark.md").read_text()
    assert "| synthetic_btcv | 2 | voxels | segmentation | balanced accuracy | 40.6 | 37.5 | 0.900 | 0.200 | 2.00 |" in table
    assert "| synthetic_btcv | 2 | s2dc | segmentation | balanced accuracy | 75.0 | — | — | — | — |" in table
    assert "| synthetic_udpet | 2 | s2dc | reconstruction | R² | 0.812 | — | — | — | — |" in table
    nested = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert nested["probe"]["synthetic_btcv"]["voxels"] == {"balanced_accuracy": 40.6, "organ_recall": 37.5,
                                                           "consistency": 0.9, "discrepancy": 0.2, "ratio": 2.0}
    assert nested["probe"]["synthetic_btcv"]["s2dc"]["organ_recall"] is None
    assert nested["probe"]["synthetic_udpet"]["s2dc"] == {"r2": 0.8123, "organ_recall": None}


def test_bad_files_are_named(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["report", "--out", str(tmp_path / "out"), str(bad)]) == 2
    assert "bad metrics file" in capsys.readouterr().err and not (tmp_path / "out").exists()
    run = write_run(tmp_path, "s2dc", 0, 0.5)
    assert main(["report", "--out", str(tmp_path / "out"), str(run), "--probe", str(bad)]) == 2
    assert f"bad probe file '{bad}'" in capsys.readouterr().err and not (tmp_path / "out").exists()
