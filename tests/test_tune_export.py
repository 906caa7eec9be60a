"""``export_study`` writes trials.csv, best.yaml (parameters nested as in params.yaml) and three PNG figures, and
refuses a study that has not reached its budget unless forced."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from s2dc.cli import main
from s2dc.tune.export import export_study
from s2dc.tune.space import parse_space
from s2dc.tune.storage import open_sweep
from s2dc.tune.toy import make_toy_objective
from s2dc.tune.worker import bind_study, run_worker

SPACE = {
    "pretrain.loss.weight_p2p": {"low": 0.0, "high": 1.0},
    "pretrain.ema.schedule": {"choices": ["constant", "cosine"]},
    "finetune.train.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
}
PNG = b"\x89PNG\r\n\x1a\n"
FIGURES = ("history.png", "parallel_coordinate.png", "param_importances.png")


def _sweep(storage, name: str, budget: int):
    study, liveness = open_sweep(str(storage), name, heartbeat_interval=1, grace_period=30)
    bind_study(study, budget, SPACE)
    dims = parse_space(SPACE)
    return study, liveness, dims


def test_export_writes_the_table_best_parameters_and_figures(tmp_path, capsys):
    storage = tmp_path / "study.journal"
    study, liveness, dims = _sweep(storage, "done", 5)
    surplus = study.ask()  # failed trials are listed, not counted: a surplus one of a race, a dead worker's one
    surplus.set_user_attr("surplus", True)
    study.tell(surplus, state=TrialState.FAIL)
    study.tell(study.ask(), state=TrialState.FAIL)
    run_worker(study, make_toy_objective({"steps": 2, "sleep": 0.0}, dims), dims, 5, liveness, log=lambda _: None)
    written = export_study(str(storage), "done", tmp_path / "out")
    assert sorted(p.name for p in written.values()) == sorted(["trials.csv", "trials.html", "best.yaml", *FIGURES])

    table = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert len(table) == 7 and table["counted"].sum() == 5
    assert {"params_pretrain.loss.weight_p2p", "params_finetune.train.lr", "failure", "retried_as"} <= set(table)
    assert table.loc[table["state"] == "FAIL", "failure"].tolist() == ["surplus", "killed"]
    assert table.loc[table["state"] != "FAIL", "failure"].isna().all()
    page = (tmp_path / "out" / "trials.html").read_text()  # the report's view of the same trials
    assert page.count("<tr") == 1 + 7 and "<th>pretrain.loss.weight_p2p</th>" in page and "<td>surplus</td>" in page

    best = yaml.safe_load((tmp_path / "out" / "best.yaml").read_text())
    assert best["budget"] == 5 and best["finished"] == 5
    assert best["best"]["value"] == study.best_value and best["best"]["trial"] == study.best_trial.number
    params = best["best"]["params"]
    assert set(params) == {"pretrain", "finetune"} and set(params["pretrain"]) == {"loss", "ema"}
    assert params["pretrain"]["loss"]["weight_p2p"] == study.best_params["pretrain.loss.weight_p2p"]
    assert params["finetune"]["train"]["lr"] == study.best_params["finetune.train.lr"]

    for name in FIGURES:
        data = (tmp_path / "out" / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name
    assert "warning" not in capsys.readouterr().err
    assert not list((tmp_path / "out").glob(".*.tmp"))  # atomic writes leave no temporary file
    assert export_study(str(storage), "done", tmp_path / "out")  # its own files: written again
    mine = tmp_path / "out" / next(iter(FIGURES))
    mine.write_text("a user's file named like a figure")  # never replaced, and nothing else is written first
    (tmp_path / "out" / "trials.csv").unlink()
    with pytest.raises(ValueError, match=f"'{mine}' exists and is not a figure s2dc drew"):
        export_study(str(storage), "done", tmp_path / "out")
    assert mine.read_text() == "a user's file named like a figure" and not (tmp_path / "out" / "trials.csv").exists()


def test_export_refuses_an_unfinished_study_unless_forced(tmp_path, capsys):
    storage = tmp_path / "study.journal"
    study, _, _ = _sweep(storage, "short", 3)
    trial = study.ask()
    trial.suggest_float("pretrain.loss.weight_p2p", 0.0, 1.0)
    study.tell(trial, 0.5)
    with pytest.raises(ValueError, match="has 1 finished trials of its budget of 3"):
        export_study(str(storage), "short", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert main(["sweep", "export", "--storage", str(storage), "--study", "short", "--out", str(tmp_path / "out")]) == 2
    assert "--force" in capsys.readouterr().err

    assert main(["sweep", "export", "--storage", str(storage), "--study", "short", "--out", str(tmp_path / "out"),
                 "--force"]) == 0
    assert "param_importances.png: cannot draw it" in capsys.readouterr().err  # one trial: no importances
    data = (tmp_path / "out" / "param_importances.png").read_bytes()
    assert data.startswith(PNG) and len(data) > 1000
    best = yaml.safe_load((tmp_path / "out" / "best.yaml").read_text())
    assert best["best"] == {"value": 0.5, "trial": 0, "params": {"pretrain": {"loss": {"weight_p2p": trial.params[
        "pretrain.loss.weight_p2p"]}}}}


def test_export_names_a_missing_study_or_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_study(str(tmp_path / "none.journal"), "x", tmp_path / "out")
    _sweep(tmp_path / "study.journal", "there", 2)
    with pytest.raises(ValueError, match=r"no study named 'other'; it has \['there'\]"):
        export_study(str(tmp_path / "study.journal"), "other", tmp_path / "out")


def test_export_never_replaces_a_users_file_or_a_best_yaml_edited_by_hand(tmp_path):
    """trials.csv, trials.html and best.yaml were written over whatever --out held: a user's file of that name, or
    best.yaml with a value tuned by hand, was lost without a word. Export now replaces only the tables it wrote there,
    unchanged since, and refuses anything else, naming the file, before it writes anything."""
    storage = tmp_path / "study.journal"
    study, liveness, dims = _sweep(storage, "done", 2)
    run_worker(study, make_toy_objective({"steps": 2, "sleep": 0.0}, dims), dims, 2, liveness, log=lambda _: None)
    out = tmp_path / "out"
    export_study(str(storage), "done", out)
    export_study(str(storage), "done", out)  # its own files, unchanged: replaced
    best = out / "best.yaml"
    edited = best.read_text().replace("budget: 2", "budget: 2  # tuned by hand")
    assert edited != best.read_text()
    best.write_text(edited)
    (out / "history.png").unlink()
    with pytest.raises(ValueError, match=f"'{best}' exists and is not a table s2dc sweep export wrote"):
        export_study(str(storage), "done", out)
    assert best.read_text() == edited and not (out / "history.png").exists()
    for name in ("trials.csv", "trials.html", "best.yaml"):
        fresh = tmp_path / f"fresh_{name}"
        fresh.mkdir()
        (fresh / name).write_text("a user's file")
        with pytest.raises(ValueError, match=f"'{fresh / name}' exists"):
            export_study(str(storage), "done", fresh)
        assert [p.name for p in fresh.iterdir()] == [name] and (fresh / name).read_text() == "a user's file"
