"""LP-FT (``train.frozen_encoder_steps``): the decoder fitted on the frozen encoder first, then both trained."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from s2dc.cli import main
from s2dc.downstream.engine import Finetuner
from s2dc.train.finetune_config import build_config

from conftest import TINY_FT


def _encoder(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.swinViT.state_dict().items()}


def test_frozen_phase_keeps_the_encoder_then_trains_it_on_the_schedule(seg_dir, tmp_path):
    """4 steps, 2 frozen, no warm-up, cosine, lr 0.01, encoder at 0.5x: the encoder's tensors stay exactly their
    initial values for steps 1-2 while the decoder's move; step 3 moves the encoder. The two groups' rates per step
    equal the formula written out: encoder 0, 0, 0.005 (1 + cos(pi 2/4)) / 2 ..., the rest 0.01 (1 + cos(pi s/4)) / 2."""
    cfg = build_config({**TINY_FT, "data": {"source": str(seg_dir / "dataset.json"), "workers": 0},
                        "train": {**TINY_FT["train"], "steps": 4, "warmup_steps": 0, "lr": 0.01,
                                  "encoder_lr_scale": 0.5, "frozen_encoder_steps": 2},
                        "run": {"out_dir": str(tmp_path / "run"), "progress": False}})
    tuner = Finetuner(cfg)
    try:
        train, _ = tuner._datasets()
        batches = tuner._batches(train)
        initial = _encoder(tuner.model)
        decoder = {k: v.detach().clone() for k, v in tuner.model.state_dict().items() if k.startswith("decoder")}
        rates = []
        for step in range(4):
            rates.append([g["lr"] for g in tuner.optimizer.param_groups])
            tuner.train_step(next(batches))
            now = _encoder(tuner.model)
            frozen = all(torch.equal(now[k], initial[k]) for k in initial)
            assert frozen == (step < 2), f"after step {step + 1}: encoder {'unchanged' if frozen else 'changed'}"
            if step == 0:
                after = tuner.model.state_dict()
                assert any(not torch.equal(after[k], v) for k, v in decoder.items()), "the decoder did not learn"
        cosine = [0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(4)]
        expected = [[0.0 if s < 2 else 0.005 * cosine[s], 0.01 * cosine[s]] for s in range(4)]
        assert sum(rates, []) == pytest.approx(sum(expected, []), abs=1e-12), rates
    finally:
        tuner.close()


def test_the_option_is_recorded_and_changes_the_run(seg_dir, tmp_path):
    """metrics.json records train.frozen_encoder_steps among the options that change the run (so the tables do not
    average it with a run without it), and a run without the frozen phase ends with other encoder weights."""
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump(TINY_FT))
    finals = {}
    for frozen in (0, 1):  # 2 steps: the frozen run trains its encoder in the second only
        out = tmp_path / f"run{frozen}"
        assert main(["finetune", "--config", str(config), "--data.source", str(seg_dir / "dataset.json"),
                     "--run.out_dir", str(out), "--train.steps", "2", "--train.frozen_encoder_steps", str(frozen)]) == 0
        assert json.loads((out / "metrics.json").read_text())["options"]["train.frozen_encoder_steps"] == frozen
        finals[frozen] = torch.load(out / "model.pt", weights_only=True)
    encoder = [k for k in finals[0] if k.startswith("swinViT.")]
    assert any(not torch.equal(finals[0][k], finals[1][k]) for k in encoder)


@pytest.mark.parametrize("train, message", [
    ({"steps": 10, "warmup_steps": 0, "frozen_encoder_steps": 10},
     "train.frozen_encoder_steps must be an integer in 0..9 (fewer than the run's 10 steps"),
    ({"steps": 10, "warmup_steps": 0, "frozen_encoder_steps": -1}, "train.frozen_encoder_steps must be an integer in 0..9"),
    ({"steps": 10, "warmup_steps": 0, "frozen_encoder_steps": 3, "encoder_lr_scale": 0},
     "train.frozen_encoder_steps (3) with train.encoder_lr_scale 0"),
])
def test_a_frozen_phase_that_means_nothing_is_refused(train, message):
    with pytest.raises(ValueError) as err:
        build_config({"train": train})
    assert message in str(err.value), str(err.value)


def test_with_epochs_the_frozen_phase_is_checked_against_the_derived_steps():
    """2 epochs of 3 cases at 1 a step are 6 steps: 5 frozen steps pass, 6 are refused, naming the key."""
    cfg = build_config({"train": {"epochs": 2, "frozen_encoder_steps": 5, "warmup_steps": 0}})
    assert cfg.in_steps(3).train.steps == 6
    with pytest.raises(ValueError, match=r"train.frozen_encoder_steps must be an integer in 0\.\.5"):
        build_config({"train": {"epochs": 2, "frozen_encoder_steps": 6, "warmup_steps": 0}}).in_steps(3)


def test_with_epochs_the_replaced_steps_are_not_checked_against_each_other():
    """train.epochs replaces train.steps and train.warmup_steps, so a train.steps below the default 500 warm-up steps
    is no error there (it was refused naming train.warmup_steps); the derived schedule is what is checked."""
    cfg = build_config({"train": {"epochs": 10, "steps": 100}})
    derived = cfg.in_steps(4).train
    assert (derived.steps, derived.warmup_steps) == (40, 0)
    with pytest.raises(ValueError, match=r"train.warmup_steps \(500\) must be less than train.steps \(100\)"):
        build_config({"train": {"steps": 100}})
