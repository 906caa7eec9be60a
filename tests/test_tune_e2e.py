"""The real objective end to end through the command line: two trials of S²DC pretraining + fine-tuning on tiny
synthetic twins, then the export."""

from __future__ import annotations

import pytest
import torch
import yaml
from optuna.trial import TrialState

from s2dc.cli import main
from s2dc.data.synthetic import write_dataset
from s2dc.tune.storage import open_study

PRETRAIN = {  # the smoke scale's options (params.yaml), two steps
    "encoder": {"feature_size": 12, "num_heads": [1, 2, 3, 4], "window_size": 4, "token_stage": 2},
    "views": {"roi_size": [64, 64, 32], "grid": 2},
    "head": {"hidden_dim": 64, "embed_dim": 32},
    "loss": {"queue_size": 8},
    "optim": {"steps": 2, "warmup_steps": 1, "lr": 1.0e-3},
    "run": {"checkpoint_every": 100, "log_every": 1},
    "data": {"workers": 0},
}
FINETUNE = {
    "train": {"steps": 2, "roi_size": [64, 32, 32], "samples_per_volume": 1, "warmup_steps": 1, "log_every": 1},
    "eval": {"every": 1, "sw_batch_size": 2},
    "data": {"workers": 0},
}


@pytest.fixture
def one_thread():
    """One compute thread, as under pytest-xdist: two OpenMP threads fighting for a busy core slow a step tenfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_a_real_sweep_runs_and_exports(tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.chdir(tmp_path)  # trial folders are relative to the working folder (DVCLive stays out of the repo)
    pool = write_dataset(tmp_path / "pool", "ct_pool", 2, 0, shape=(64, 64, 32))
    btcv = write_dataset(tmp_path / "btcv", "btcv", 3, 1, shape=(64, 64, 32), val_fraction=0.34)
    spec = {
        "space": {"pretrain.loss.weight_p2p": {"low": 0.0, "high": 1.0},
                  "pretrain.ema.schedule": {"choices": ["constant", "cosine"]},
                  "finetune.train.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True}},
        "pretrain": PRETRAIN, "finetune": FINETUNE,
        "data": {"pretrain": str(pool), "finetune": str(btcv)},
        "out_dir": "trials", "seed": 0,
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["sweep", "work", "--storage", "sweep.journal", "--study", "real", "--budget", "2",
                 "--spec", "spec.yaml"]) == 0
    out = capsys.readouterr().out
    assert "trial 0 COMPLETE" in out and "trial 1 COMPLETE" in out and "budget met: 2/2" in out

    trials = open_study("sweep.journal", "real", create=False).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    for trial in trials:
        folder = tmp_path / trial.user_attrs["folder"]
        assert folder == tmp_path / "trials" / "real" / f"trial_{trial.number:04d}"
        assert sorted(trial.intermediate_values) == [1, 2]  # reported at each validation, for the pruner
        assert 0.0 <= trial.value <= 1.0 and trial.value == trial.intermediate_values[2]
        assert trial.user_attrs["score"]["name"] == "Dice"
        assert (folder / "pretrain" / "summary.json").is_file() and (folder / "finetune" / "metrics.json").is_file()
        assert not (folder / "pretrain" / "checkpoints").exists() and not (folder / "finetune" / "model.pt").exists()
    assert (tmp_path / "trials" / "cache" / "finetune").is_dir()  # one preprocessing cache for all trials

    assert main(["sweep", "export", "--storage", "sweep.journal", "--study", "real", "--out", "results"]) == 0
    best = yaml.safe_load((tmp_path / "results" / "best.yaml").read_text())
    assert set(best["best"]["params"]) == {"pretrain", "finetune"}
    assert set(best["best"]["params"]["pretrain"]) == {"loss", "ema"}
