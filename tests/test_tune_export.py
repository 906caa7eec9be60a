"""``export_study`` writes trials.csv, best.yaml (parameters nested as in params.yaml) and three PNG figures, and
refuses a study that has not reached its budget unless forced."""

from __future__ import annotations

import random
import shutil

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from conftest import stopped_at_third_replace
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


QUICK_SPACE = {  # the seven parameters of the quick sweep
    "pretrain.ema.momentum": optuna.distributions.FloatDistribution(0.9, 0.999),
    "pretrain.ema.schedule": optuna.distributions.CategoricalDistribution(["constant", "cosine"]),
    "pretrain.loss.global_temperature": optuna.distributions.FloatDistribution(0.05, 1.0),
    "pretrain.loss.match_temperature": optuna.distributions.FloatDistribution(0.05, 1.0),
    "pretrain.loss.weight_p2p": optuna.distributions.FloatDistribution(0.0, 1.0),
    "pretrain.loss.weight_p2s": optuna.distributions.FloatDistribution(0.0, 1.0),
    "pretrain.optim.lr": optuna.distributions.FloatDistribution(1.0e-4, 2.0e-3, log=True),
}


def _fake_study(complete: int, pruned: int, failed: int = 0):
    """An in-memory study of the quick sweep's shape: ``complete`` trials whose value is mean Dice as a fraction
    (and the score as the tables show it, Dice in %), ``pruned`` ones stopped with a lower score, ``failed`` ones."""
    rng = random.Random(0)
    study = optuna.create_study(direction="maximize")

    def params():
        return {name: (rng.choice(d.choices) if isinstance(d, optuna.distributions.CategoricalDistribution)
                       else rng.uniform(d.low, d.high)) for name, d in QUICK_SPACE.items()}

    for k in range(complete):
        value = 0.02 + 0.001 * k
        study.add_trial(optuna.trial.create_trial(
            params=params(), distributions=QUICK_SPACE, value=value, intermediate_values={1: value / 2, 2: value},
            user_attrs={"score": {"key": "dice_mean", "name": "Dice", "value": 100 * value}}))
    for k in range(pruned):
        study.add_trial(optuna.trial.create_trial(
            params=params(), distributions=QUICK_SPACE, state=TrialState.PRUNED, value=0.01 + 0.001 * k,
            intermediate_values={1: 0.01 + 0.001 * k}))
    for _ in range(failed):
        study.add_trial(optuna.trial.create_trial(params=params(), distributions=QUICK_SPACE, state=TrialState.FAIL))
    return study


def test_the_history_names_the_objective_in_the_tables_unit_and_draws_the_pruned_trials():
    """history.png showed Dice as a fraction (0.022) under 'Objective Value' while the tables say 2.22 %, and left the
    pruned trials out without a word. Its y-axis now names the score as the tables show it (Dice %), and the pruned
    trials are drawn apart (hollow, at their last reported score), named in the legend."""
    from s2dc.tune.export import history_figure

    study = _fake_study(complete=2, pruned=3, failed=1)
    fig = history_figure(study)
    ax = fig.axes[0]
    assert "Dice %" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(label.startswith("completed") for label in labels)
    assert any(label.startswith("pruned") for label in labels)
    drawn = {c.get_label(): c.get_offsets() for c in ax.collections}
    done = next(v for k, v in drawn.items() if k.startswith("completed"))
    stopped = next(v for k, v in drawn.items() if k.startswith("pruned"))
    assert sorted(done[:, 1]) == pytest.approx([2.0, 2.1]) and len(stopped) == 3
    assert sorted(stopped[:, 1]) == pytest.approx([1.0, 1.1, 1.2])
    assert "1 failed" in ax.get_title()  # a failed trial has no value: not drawn, but counted


def test_the_importances_need_enough_completed_trials_and_say_on_how_many_they_rest(tmp_path, capsys):
    """param_importances.png ranked seven parameters from two completed trials with no caveat. Fewer completed trials
    than max(5, parameters + 1) draw no ranking but a picture saying it is not meaningful; with enough, the title
    names the count of completed trials."""
    from s2dc.tune.export import _figure, importances_figure

    with pytest.raises(ValueError, match="not meaningful with 2 completed trials"):
        importances_figure(_fake_study(complete=2, pruned=6))
    assert _figure(_fake_study(complete=2, pruned=6), "param_importances.png").startswith(PNG)
    assert "not meaningful with 2 completed trials" in capsys.readouterr().err
    fig = importances_figure(_fake_study(complete=8, pruned=2))
    assert "8 completed trials" in fig.axes[0].get_title()


def _overlaps(boxes):
    return [(a, b) for i, (a, x) in enumerate(boxes) for b, y in boxes[i + 1:]
            if x.width and y.width and x.overlaps(y)]


def test_the_parallel_coordinates_name_every_parameter_in_full_and_no_label_overlaps_another():
    """parallel_coordinate.png cut the parameters' names ('pretrain.ema.mome...') and its axes' tick labels overlapped.
    Every name is now shown in full, and no two texts of the figure overlap once drawn."""
    from s2dc.tune.export import parallel_figure

    fig = parallel_figure(_fake_study(complete=4, pruned=3))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for ax in fig.axes for t in (*ax.get_xticklabels(), *ax.get_yticklabels(), *ax.texts)
             if t.get_visible() and t.get_text()]
    shown = {t.get_text() for t in texts}
    assert set(QUICK_SPACE) <= shown
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    assert not _overlaps(boxes)


@pytest.fixture(scope="module")
def two_studies_first_exported(tmp_path_factory):
    """A folder holding study.journal with two finished studies, ``first`` and ``second``, and out/, the export of
    ``first`` (shared: tests copy it)."""
    root = tmp_path_factory.mktemp("two_studies")
    storage = root / "study.journal"
    for name, budget in (("first", 2), ("second", 3)):
        study, liveness, dims = _sweep(storage, name, budget)
        run_worker(study, make_toy_objective({"steps": 2, "sleep": 0.0}, dims), dims, budget, liveness,
                   log=lambda _: None)
    export_study(str(storage), "first", root / "out")
    return root


@pytest.mark.parametrize("stop", ["a figure", "a rename"])
def test_an_interrupted_export_leaves_the_previous_export_not_a_mix(two_studies_first_exported, tmp_path, monkeypatch,
                                                                    stop):
    """Stopped (Ctrl-C, SIGTERM) while drawing its second figure, or between two renames, an export over an earlier one
    left the new study's trials.csv and best.yaml beside the old study's figures (each file was replaced as soon as
    it was made): every file of the earlier export is left as it was."""
    shutil.copytree(two_studies_first_exported, tmp_path / "copy")
    storage = tmp_path / "copy" / "study.journal"
    out = tmp_path / "copy" / "out"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".s2dc-sweep.json"}
    if stop == "a figure":
        monkeypatch.setattr("s2dc.tune.export.parallel_figure", _interrupted)
    else:
        monkeypatch.setattr("os.replace", stopped_at_third_replace(__import__("os").replace))
    with pytest.raises(KeyboardInterrupt):
        export_study(str(storage), "second", out)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".s2dc-sweep.json"} == before
    assert export_study(str(storage), "second", out)  # and the next export is not refused
    assert yaml.safe_load((out / "best.yaml").read_text())["study"] == "second"


def _interrupted(*args, **kwargs):
    raise KeyboardInterrupt
