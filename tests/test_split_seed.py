"""``data.split_seed``: one label-ratio subset for every seed (the release's CC-CCII ``sample(frac, random_state=1)``),
or, by default, a subset of each run's own seed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from s2dc.cli import main
from s2dc.downstream.engine import Finetuner
from s2dc.train.finetune_config import build_config

from conftest import CODE, sealed, TINY_FT


def _drawn(seg_dir, tmp_path, seed: int, split_seed: int | None, ratio: float = 0.4) -> list[str]:
    """The training images a run of ``seed`` (and ``split_seed``) draws, by file name."""
    cfg = build_config({**TINY_FT, "data": {"source": str(seg_dir / "dataset.json"), "workers": 0,
                                            "label_ratio": ratio, "split_seed": split_seed},
                        "run": {"out_dir": str(tmp_path / f"run{seed}_{split_seed}"), "progress": False,
                                "seed": seed}})
    tuner = Finetuner(cfg)
    try:
        return [str(c["image"]).rsplit("/", 1)[-1] for c in tuner.train_cases]
    finally:
        tuner.close()


def _by_hand(seg_dir, seed: int, k: int) -> list[str]:
    """The first k of numpy's permutation of the training images sorted by name, back in name order."""
    spec = json.loads((seg_dir / "dataset.json").read_text())
    names = sorted(c["image"].rsplit("/", 1)[-1] for c in spec["training"])
    order = np.random.default_rng(seed).permutation(len(names))
    return sorted(names[i] for i in order[:k])


def test_a_split_seed_gives_every_run_seed_the_same_cases(seg_dir, tmp_path):
    """Five training volumes at 0.4 -> 2 of them. With data.split_seed 7 the runs of seeds 0, 1 and 2 train on the same
    two, numpy's default_rng(7) permutation's first two; without it each seed draws its own (those of seeds 0 and 1
    differ here), and a run of seed 7 without it draws what split_seed 7 draws."""
    fixed = [_drawn(seg_dir, tmp_path, seed, 7) for seed in (0, 1, 2)]
    assert fixed[0] == fixed[1] == fixed[2] == _by_hand(seg_dir, 7, 2)
    own = {seed: _drawn(seg_dir, tmp_path, seed, None) for seed in (0, 1)}
    assert own[0] == _by_hand(seg_dir, 0, 2) and own[1] == _by_hand(seg_dir, 1, 2)
    assert own[0] != own[1], "seeds 0 and 1 draw the same subset of this fixture: the test would not see a fixed split"
    assert _drawn(seg_dir, tmp_path, 7, None) == fixed[0]


@pytest.mark.parametrize("split_seed, recorded", [("3", 3), ("none", None)])
def test_the_split_seed_is_recorded(seg_dir, tmp_path, split_seed, recorded):
    """split.json names the run's seed and the seed its subset was drawn with; metrics.json records the option among
    those that change the run, so the tables do not average a fixed split's seeds with the per-seed splits'."""
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump(TINY_FT))
    out = tmp_path / "run"
    assert main(["finetune", "--config", str(config), "--data.source", str(seg_dir / "dataset.json"),
                 "--run.out_dir", str(out), "--train.steps", "1", "--run.seed", "0", "--data.label_ratio", "0.4",
                 "--data.split_seed", split_seed]) == 0
    split = json.loads((out / "split.json").read_text())
    assert (split["seed"], split["split_seed"]) == (0, 0 if recorded is None else recorded)
    assert [c["image"].rsplit("/", 1)[-1] for c in split["cases"]] == _by_hand(seg_dir, split["split_seed"], 2)
    assert json.loads((out / "metrics.json").read_text())["options"]["data.split_seed"] == recorded


def test_a_negative_split_seed_is_refused():
    with pytest.raises(ValueError) as err:
        build_config({"data": {"split_seed": -1}})
    assert "data.split_seed" in str(err.value) and "a seed >= 0, or none" in str(err.value), str(err.value)


def test_the_report_refuses_arms_on_other_subsets_naming_the_option(tmp_path, capsys):
    """S²DC fine-tuned on one fixed subset (data.split_seed 1) beside scratch on each seed's own: the difference would
    compare subsets, not encoders; the report refuses it, naming data.split_seed, and writes nothing."""
    def run(method: str, seed: int, split_seed: int | None) -> str:
        path = tmp_path / f"{method}_{seed}.json"
        path.write_text(json.dumps(sealed({
            "task": "segmentation", "dataset": "synthetic_btcv", "method": method, "label_ratio": 0.2, "seed": seed,
            "dice_mean": 0.5, "train_cases": 3, "seconds": 1.0, "history": [{"step": 1, "dice_mean": 0.5}],
            "score": {"key": "dice_mean", "name": "Dice", "value": 50.0},
            "options": {"data.split_seed": split_seed, "precision": "fp32"}, "code": CODE})))
        return str(path)

    files = [run("s2dc", s, 1) for s in (0, 1)] + [run("scratch", s, None) for s in (0, 1)]
    assert main(["report", "--out", str(tmp_path / "out"), *files]) == 2
    assert "differ in data.split_seed" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    same = [run("scratch", s, 1) for s in (0, 1)]
    assert main(["report", "--out", str(tmp_path / "ok"), *files[:2], *same]) == 0
