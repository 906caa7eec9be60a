"""Sweep settings are checked before any trial runs: the search space against the option classes, the spec's
keys, and the storage (SQLite refused for parallel workers)."""

from __future__ import annotations

import json
import re

import pytest

from s2dc.tune.space import check_space, nest, parse_space
from s2dc.tune.spec import load_spec, spec_from_dict
from s2dc.tune.storage import open_storage

SPACE = {
    "pretrain.loss.weight_p2p": {"low": 0.0, "high": 1.0},
    "pretrain.loss.match_temperature": {"low": 0.05, "high": 1.0, "log": True},
    "pretrain.ema.momentum": {"low": 0.9, "high": 0.999},
    "pretrain.ema.schedule": {"choices": ["constant", "cosine"]},
    "pretrain.optim.warmup_steps": {"low": 0, "high": 4},
    "finetune.train.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
}


def _check(space: dict) -> None:
    check_space(parse_space(space), {"pretrain": {}, "finetune": {}})


def test_the_example_space_is_valid_and_typed():
    dims = {d.key: d for d in parse_space(SPACE)}
    _check(SPACE)
    assert dims["pretrain.optim.warmup_steps"].is_int and not dims["pretrain.loss.weight_p2p"].is_int
    assert dims["pretrain.ema.schedule"].choices == ("constant", "cosine")
    assert dims["finetune.train.lr"].log


@pytest.mark.parametrize("key, value, message", [
    ("model.loss.weight_p2p", {"low": 0.0, "high": 1.0}, "unknown prefix 'model'"),
    ("pretrain.weight_p2p", {"low": 0.0, "high": 1.0}, "expected 'pretrain.<section>.<field>'"),
    ("pretrain.losses.weight_p2p", {"low": 0.0, "high": 1.0}, "no section 'losses'"),
    ("pretrain.loss.weight_pp", {"low": 0.0, "high": 1.0}, "no option 'weight_pp'"),
    ("finetune.train.lr", {"low": 0.01, "high": 0.001}, "low must be < high"),
    ("finetune.train.lr", {"low": 0.01, "high": 0.01}, "low must be < high"),
    ("pretrain.ema.schedule", {"choices": []}, "non-empty list"),
    ("pretrain.loss.weight_p2p", {"low": 0, "high": 1}, "real number but low and high are integers"),
    ("pretrain.ema.momentum", {"low": 0.9, "high": 1.5}, "the value 1.5 is not a valid option"),
    ("pretrain.ema.schedule", {"choices": ["constant", "linear"]}, "the value 'linear' is not a valid option"),
    ("pretrain.optim.steps", {"low": 1.5, "high": 4.0}, "the value 1.5 is not a valid option"),
    ("finetune.train.lr", {"low": 0.0, "high": 0.1, "log": True}, "log range needs low > 0"),
    ("finetune.train.lr", {"low": 1e-4, "hi": 0.1}, "a range takes low, high"),
    ("finetune.model.init", {"choices": ["scratch"]}, "set by the sweep"),
    # two choices that are one option once typed (a real option reads 1 as 1.0): the sampler weighed it twice
    ("pretrain.loss.weight_p2p", {"choices": [0.5, 1, 1.0]}, r"choices 1 and 1\.0 are the same option \(1\.0\)"),
])
def test_a_bad_space_entry_is_refused_naming_its_key(key, value, message):
    with pytest.raises(ValueError, match=message) as err:
        _check({**SPACE, key: value})
    assert repr(key) in str(err.value)


def test_two_ranges_that_together_draw_an_invalid_configuration_are_refused_naming_both():
    """Each bound valid on the base options, but a pair the sampler can draw is not: 10 steps with a 50-step warm-up
    (the pretraining refuses a warm-up as long as the run). Checked bound by bound, the space passed and the trial that
    drew the pair failed hours into the study; it is refused before any trial, naming both keys and values."""
    base = {"pretrain": {"optim": {"steps": 200, "warmup_steps": 6}},
            "finetune": {"train": {"steps": 40, "warmup_steps": 4}}}
    pair = {"pretrain.optim.steps": {"low": 10, "high": 100}, "pretrain.optim.warmup_steps": {"low": 5, "high": 50}}
    for key, value in pair.items():
        check_space(parse_space({key: value}), base)  # each alone: valid
    with pytest.raises(ValueError) as err:
        check_space(parse_space(pair), base)
    said = str(err.value)
    assert "'pretrain.optim.steps' = 10" in said and "'pretrain.optim.warmup_steps' = 50" in said, said
    assert "must be less than optim.steps" in said, said
    # the fine-tuning's pair likewise; ranges that cannot meet pass
    with pytest.raises(ValueError, match=r"'finetune.train.steps' = 8.*'finetune.train.warmup_steps' = 8"):
        check_space(parse_space({"finetune.train.steps": {"low": 8, "high": 64},
                                 "finetune.train.warmup_steps": {"low": 0, "high": 8}}), base)
    check_space(parse_space({"pretrain.optim.steps": {"low": 60, "high": 100},
                             "pretrain.optim.warmup_steps": {"low": 5, "high": 50},
                             "finetune.train.warmup_steps": {"low": 0, "high": 39}}), base)
    # and the workflow refuses such a params.yaml when it starts, before any job
    import yaml

    from conftest import REPO, params_error

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    del params["scales"]["quick"]["sweep"]["trial"]["pretrain"]["optim"]  # a key searched is not set for the trials too
    params["scales"]["quick"]["sweep"]["space"].update({  # each bound valid on the quick base (1,000 steps, 50 warm-up)
        "pretrain.optim.steps": {"low": 60, "high": 100}, "pretrain.optim.warmup_steps": {"low": 5, "high": 80}})
    said = params_error(params, scale="quick")
    assert "'pretrain.optim.steps' = 60" in said and "'pretrain.optim.warmup_steps' = 80" in said, said


def test_nest_gives_params_yaml_layout():
    params = {"pretrain.loss.weight_p2p": 0.5, "pretrain.ema.schedule": "cosine", "finetune.train.lr": 0.001}
    assert nest(params) == {"pretrain": {"loss": {"weight_p2p": 0.5}, "ema": {"schedule": "cosine"}},
                            "finetune": {"train": {"lr": 0.001}}}


def test_spec_from_json_string_or_yaml_file(tmp_path):
    values = {"objective": "toy", "space": SPACE, "workers": 3, "pruner": {"n_startup_trials": 2}}
    from_json = load_spec(json.dumps(values))
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps(values))  # JSON is YAML
    from_yaml = load_spec(str(path))
    assert from_json.dims == from_yaml.dims and from_json.workers == 3
    assert from_json.pruner == {"n_startup_trials": 2, "n_warmup_steps": 0, "interval_steps": 1}


@pytest.mark.parametrize("change, message", [
    ({"budgets": 3}, r"unknown key\(s\) \['budgets'\]"),
    ({"pretrain": {"data": {"source": "x.json"}}}, "pretrain.data.source is set by the sweep"),
    ({"pretrain": {"optim": {"stepz": 3}}}, r"base pretrain options are not valid.*optim.stepz"),
    ({"objective": "s2dc"}, "data must give the two dataset.json files"),
    ({"pruner": {"n_warmup": 2}}, "pruner must be null or a mapping"),
    ({"heartbeat": {"interval": 10, "grace": 5}}, "grace > interval"),
    ({"workers": 0}, "workers and max_failures must be >= 1"),
    ({"finetune_seeds": []}, "finetune_seeds must be a non-empty list of distinct integers >= 0"),
    ({"finetune_seeds": [0, 0]}, "finetune_seeds must be a non-empty list of distinct integers >= 0"),
    ({"finetune": {"run": {"seed": 3}}}, "finetune.run.seed is set by the sweep.*finetune_seeds"),
])
def test_a_bad_spec_is_refused_naming_its_key(change, message):
    with pytest.raises(ValueError, match=message):
        spec_from_dict({"objective": "toy", "space": SPACE, **change})


def test_sqlite_is_refused_for_parallel_workers_and_allowed_for_one(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    with pytest.raises(ValueError, match="SQLite cannot be shared by 3 workers") as err:
        open_storage(url, workers=3)
    assert "journal file" in str(err.value) and "postgresql" in str(err.value).lower()
    assert not (tmp_path / "study.db").exists()
    storage, liveness = open_storage(url, workers=1)
    assert type(storage).__name__ == "RDBStorage" and type(liveness).__name__ == "Liveness"


def test_a_path_is_a_journal_file_and_a_missing_one_is_not_created_for_reading(tmp_path):
    storage, liveness = open_storage(str(tmp_path / "sub" / "study.journal"), workers=4)
    assert type(storage).__name__ == "JournalStorage" and type(liveness).__name__ == "Liveness"
    assert (tmp_path / "sub" / "study.journal").is_file()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_storage(str(tmp_path / "missing.journal"), must_exist=True)
    with pytest.raises(ValueError, match="is a folder"):
        open_storage(str(tmp_path))


@pytest.mark.parametrize("text", ["my notes on the sweep\n", '{"a": "json line, not a journal record"}\n', "\x00\x01"])
def test_a_file_that_is_not_an_optuna_journal_is_refused_and_left_as_it_was(tmp_path, text):
    """Opened as a journal, a user's file got a record appended, then the read failed with a bare JSON error."""
    from s2dc.tune.storage import open_study

    path = tmp_path / "notes.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"storage '{path}' is not an Optuna journal file"):
        open_study(str(path), "a")
    assert path.read_text() == text
    journal = tmp_path / "study.journal"
    open_study(str(journal), "a")  # a journal s2dc made is opened again
    open_study(str(journal), "b")
    (tmp_path / "empty.journal").write_text("")
    open_study(str(tmp_path / "empty.journal"), "a")  # as a first writer leaves it before its first record


@pytest.mark.parametrize("url", ["foo://bar", "postgresql+nodriver://u@localhost/db"])
def test_a_database_url_sqlalchemy_cannot_read_is_refused_naming_it(url):
    import re

    with pytest.raises(ValueError, match=re.escape(f"storage '{url}' is no database URL")):
        open_storage(url)


@pytest.mark.parametrize("url, driver", [("postgresql+psycopg2://u@127.0.0.1:1/db", "psycopg2"),
                                         ("mysql+pymysql://u@127.0.0.1:1/db", "pymysql")])
def test_a_database_url_whose_driver_is_not_installed_names_the_driver(url, driver):
    """Optuna re-raises the missing driver's ModuleNotFoundError as a plain ImportError: that was a traceback with
    exit 1 (the code of a failed trial); it is a ValueError (exit 2) naming the URL and the driver to install."""
    import importlib.util

    if importlib.util.find_spec(driver) is not None:
        pytest.skip(f"{driver} is installed here")
    with pytest.raises(ValueError, match=f"storage '{re.escape(url)}' needs the database driver '{driver}'"):
        open_storage(url)


@pytest.mark.parametrize("key, bounds, bad, valid", [
    ("pretrain.views.grid", {"low": 2, "high": 6}, 5, {"low": 2, "high": 4}),  # roi_size 384 x 384: not by 5
    ("pretrain.encoder.feature_size", {"low": 24, "high": 48}, 25, {"low": 24, "high": 48, "step": 12}),  # SwinUNETR
])
def test_an_integer_range_with_an_invalid_inner_value_is_refused_naming_it(key, bounds, bad, valid):
    """Both bounds valid, a value between them not: checked on the bounds, the space passed and the trial that drew
    the value stopped its worker (exit 1) mid-sweep. Every value of an integer range of at most 1,000 is checked."""
    from s2dc.train.config import build_config

    _, section, name = key.split(".")
    with pytest.raises(ValueError):  # what the trial that draws it meets
        build_config({section: {name: bad}})
    with pytest.raises(ValueError, match=rf"space key '{key}'.*{bad}"):
        spec_from_dict({"objective": "toy", "space": {key: bounds}})
    spec_from_dict({"objective": "toy", "space": {key: valid}})  # every value it draws valid


def test_a_pair_of_drawable_values_refused_together_is_refused_before_the_first_trial():
    """views.grid 2-4 and encoder.patch_size 2-3: every value valid alone and every pair of bounds valid, but the
    sampler can draw grid 3 with patch size 3 (a crop of 128 is no multiple of the token stride 48), which the trial
    would refuse, stopping its worker; every drawable pair (up to 1,000) is checked now."""
    import itertools

    from s2dc.train.config import build_config

    bad = []
    for grid, patch in itertools.product(range(2, 5), range(2, 4)):  # independently: build each drawable pair
        try:
            build_config({"views": {"grid": grid}, "encoder": {"patch_size": patch}})
        except ValueError:
            bad.append((grid, patch))
    assert bad == [(3, 3)]
    with pytest.raises(ValueError, match=r"'pretrain\.(views\.grid|encoder\.patch_size)' = 3"):
        spec_from_dict({"objective": "toy", "space": {"pretrain.views.grid": {"low": 2, "high": 4},
                                                      "pretrain.encoder.patch_size": {"low": 2, "high": 3}}})
