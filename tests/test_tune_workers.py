"""The global trial budget holds exactly with one worker and with three concurrent worker processes; a worker that
finds the budget met leaves at once; the median pruner prunes; an objective that raises stops its worker."""

from __future__ import annotations

import datetime
import hashlib
import json
import subprocess
import sys
import time
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from s2dc.tune.spec import spec_from_dict
from s2dc.tune.storage import open_study, open_sweep
from s2dc.tune.toy import make_toy_objective
from s2dc.tune.worker import bind_study, is_surplus, run_worker

from conftest import write_listing

SPACE = {
    "pretrain.loss.weight_p2p": {"low": 0.0, "high": 1.0},
    "pretrain.ema.schedule": {"choices": ["constant", "cosine"]},
    "finetune.train.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
}


def toy_spec(**change) -> dict:
    """A sweep spec with the toy objective; ``change`` overrides its keys."""
    return {"objective": "toy", "space": SPACE, "toy": {"steps": 3, "sleep": 0.01}, "pruner": None,
            "heartbeat": {"interval": 1, "grace": 30}, **change}


def sweep_work(storage, study: str, budget: int, spec: dict, **popen):
    """Start ``s2dc sweep work`` as its own process (as a Snakemake job would)."""
    cmd = [sys.executable, "-m", "s2dc.cli", "sweep", "work", "--storage", str(storage), "--study", study,
           "--budget", str(budget), "--spec", json.dumps(spec)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def sweep_work_here(storage, study: str, budget: int, spec: dict, capsys) -> tuple[int, str, str]:
    """``s2dc sweep work`` run in this process, one worker after another (a process saves no check here and costs
    ~0.5 s of CPU to start): (exit status, stdout, stderr)."""
    from s2dc.cli import main

    capsys.readouterr()
    code = main(["sweep", "work", "--storage", str(storage), "--study", study, "--budget", str(budget),
                 "--spec", json.dumps(spec)])
    out, err = capsys.readouterr()
    return code, out, err


def states(storage, study: str) -> Counter:
    return Counter(t.state for t in open_study(str(storage), study, create=False).get_trials(deepcopy=False))


def run_in_process(storage, study_name: str, budget: int, spec: dict, lines: list | None = None):
    """One worker in this process (what `s2dc sweep work` does, without starting Python)."""
    sweep = spec_from_dict(spec)
    study, liveness = open_sweep(str(storage), study_name, workers=sweep.workers, pruner=sweep.make_pruner(),
                                 sampler=sweep.make_sampler(), heartbeat_interval=sweep.heartbeat["interval"],
                                 grace_period=sweep.heartbeat["grace"])
    bind_study(study, budget, sweep.space)
    objective = make_toy_objective(sweep.toy, sweep.dims)
    log = lines.append if lines is not None else print
    report = run_worker(study, objective, sweep.dims, budget, liveness, log=log)
    return study, report


def test_one_worker_finishes_exactly_the_budget_and_a_late_worker_leaves_at_once(tmp_path, capsys):
    storage = tmp_path / "study.journal"
    study, report = run_in_process(storage, "one", 5, toy_spec())
    assert report.complete == 5 and report.surplus == 0
    assert states(storage, "one") == Counter({TrialState.COMPLETE: 5})
    # a worker started when the budget is met exits 0 at once, adding no trial
    code, out, err = sweep_work_here(storage, "one", 5, toy_spec(), capsys)
    assert code == 0, err[-2000:]
    assert "budget met: 5/5" in out and "trial " not in out.replace("trials", "")
    assert len(open_study(str(storage), "one", create=False).trials) == 5


def test_three_concurrent_worker_processes_finish_exactly_the_budget(tmp_path):
    storage, budget = tmp_path / "study.journal", 7
    spec = toy_spec(workers=3, toy={"steps": 3, "sleep": 0.25})  # 0.75 s a trial: the workers overlap
    workers = [sweep_work(storage, "par", budget, spec, cwd=tmp_path) for _ in range(3)]
    outputs = [w.communicate(timeout=120) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
        assert f"budget met: {budget}/{budget}" in out
    trials = open_study(str(storage), "par", create=False).get_trials(deepcopy=False)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == budget
    assert all(t.state == TrialState.COMPLETE or t.user_attrs.get("surplus") for t in trials)
    assert len({t.user_attrs["worker"]["pid"] for t in trials if t.state == TrialState.COMPLETE}) >= 2, \
        "the workers did not run concurrently"
    assert len({tuple(sorted(t.params.items())) for t in trials if t.params}) == budget  # distinct proposals


def test_a_trial_is_surplus_when_the_budget_is_claimed_below_it(tmp_path):
    study = optuna.create_study(storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "s.journal"))), direction="maximize")
    first, second, third = study.ask(), study.ask(), study.ask()  # three workers asked at once, budget 2
    assert not is_surplus(study, first.number, 2) and not is_surplus(study, second.number, 2)
    assert is_surplus(study, third.number, 2)
    study.tell(first, state=TrialState.FAIL)  # a failed trial frees its place
    assert not is_surplus(study, third.number, 2)


def test_the_median_pruner_prunes_trials_with_bad_intermediate_values(tmp_path):
    lines = []
    spec = toy_spec(pruner={"n_startup_trials": 3, "n_warmup_steps": 0}, toy={"steps": 4, "sleep": 0.0}, seed=3)
    study, report = run_in_process(tmp_path / "study.journal", "prune", 12, spec, lines)
    trials = study.get_trials(deepcopy=False)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert report.pruned == len(pruned) > 0 and report.complete + report.pruned == 12
    assert all(len(t.intermediate_values) < 4 for t in pruned)
    assert all(len(t.intermediate_values) == 4 for t in trials if t.state == TrialState.COMPLETE)
    assert any("PRUNED" in line for line in lines)


def test_an_objective_that_raises_fails_its_trial_and_the_worker(tmp_path, capsys):
    storage = tmp_path / "study.journal"
    code, out, err = sweep_work_here(storage, "bad", 3, toy_spec(toy={"steps": 2, "sleep": 0.0, "error": "boom"}), capsys)
    assert code == 1
    assert "RuntimeError: boom" in err and "trial 0 failed" in err
    (trial,) = open_study(str(storage), "bad", create=False).get_trials(deepcopy=False)
    assert trial.state == TrialState.FAIL and "boom" in trial.user_attrs["error"]



@pytest.mark.parametrize("toy, key", [
    ({"steps": [3]}, "toy.steps"), ({"steps": "3"}, "toy.steps"), ({"steps": "many"}, "toy.steps"),
    ({"steps": True}, "toy.steps"), ({"steps": 2.5}, "toy.steps"), ({"steps": 0}, "toy.steps"),
    ({"sleep": [0.1]}, "toy.sleep"), ({"sleep": "0.1"}, "toy.sleep"), ({"sleep": True}, "toy.sleep"),
    ({"sleep": -1}, "toy.sleep"), ({"sleep": float("nan")}, "toy.sleep"), ({"sleep": float("inf")}, "toy.sleep"),
])
def test_a_bad_toy_option_is_refused_naming_its_key(tmp_path, capsys, toy, key):
    """The spec's `toy` options were converted unchecked: a list crashed with a TypeError traceback (exit 1), a
    string that is no number gave a message naming no key. Refused before the study is opened (exit 2)."""
    from s2dc.cli import main

    storage = tmp_path / "study.journal"
    spec = toy_spec(toy={"steps": 3, "sleep": 0.0, **toy})
    assert main(["sweep", "work", "--storage", str(storage), "--study", "s", "--budget", "1",
                 "--spec", json.dumps(spec)]) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err and not storage.exists()


def test_workers_must_agree_on_budget_and_space(tmp_path, capsys):
    storage = tmp_path / "study.journal"
    run_in_process(storage, "agree", 2, toy_spec(), [])
    code, out, err = sweep_work_here(storage, "agree", 3, toy_spec(), capsys)
    assert code == 2 and "was started with budget 2, this worker has 3" in err


def test_a_study_is_bound_to_the_data_its_trials_ran_on(tmp_path):
    """A worker of the s2dc objective whose datasets differ from those the study was started on (another release
    converted into the same dataset.json path: its content hash differs) is refused, naming the study and the way
    out; the same data joins it. The data's identity is each dataset.json's SHA-256 (which holds the hash of its
    files)."""
    from s2dc.tune.command import data_identity
    from s2dc.tune.spec import spec_from_dict

    pool, btcv = tmp_path / "pool.json", tmp_path / "btcv.json"
    pool.write_text('{"content_sha256": "aaa"}')
    btcv.write_text('{"content_sha256": "bbb"}')
    spec = spec_from_dict({"space": {"pretrain.optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}},
                           "data": {"pretrain": str(pool), "finetune": str(btcv)}})
    first = data_identity(spec)
    assert first == {"pretrain": hashlib.sha256(pool.read_bytes()).hexdigest(),
                     "finetune": hashlib.sha256(btcv.read_bytes()).hexdigest()}
    assert data_identity(spec_from_dict({"objective": "toy", "space": spec.space, "toy": {"steps": 2}})) is None
    study = optuna.create_study(study_name="bound", storage=None)
    bind_study(study, 2, spec.space, first)
    bind_study(study, 2, spec.space, first)  # the same data: joins
    btcv.write_text('{"content_sha256": "ccc"}')
    with pytest.raises(ValueError, match="'bound' was started with other data: they differ in") as refused:
        bind_study(study, 2, spec.space, data_identity(spec))
    assert "delete-study" in str(refused.value)


def test_workers_must_agree_on_the_trials_base_options(tmp_path, capsys):
    """A worker whose spec runs its trials otherwise (other base fine-tuning options, another objective) than the
    study was started with is refused before it runs a trial: its scores would be mixed with incomparable ones; one
    whose spec differs only in run-local options (how often a trial logs, its loader processes) joins."""
    storage = tmp_path / "study.journal"
    code, out, err = sweep_work_here(storage, "mixed", 2, toy_spec(finetune={"train": {"steps": 40, "warmup_steps": 4}}),
                                     capsys)
    assert code == 0, (out, err)
    code, out, err = sweep_work_here(storage, "mixed", 2, toy_spec(finetune={"train": {"steps": 400, "warmup_steps": 4}}),
                                     capsys)
    assert code == 2, (out, err)
    assert "'mixed' was started with other options: they differ in finetune.train.steps, 40 there, 400" in err
    assert states(storage, "mixed") == Counter({TrialState.COMPLETE: 2})
    code, out, err = sweep_work_here(storage, "mixed", 2, toy_spec(finetune={"train": {"steps": 40, "warmup_steps": 4}}),
                                     capsys)
    assert code == 0 and "budget met" in out, (out, err)
    # how a trial runs (how often it logs, its loader processes) is no part of what it computes: it joins
    code, out, err = sweep_work_here(storage, "mixed", 2, toy_spec(finetune={"train": {"steps": 40, "warmup_steps": 4,
                                                                                       "log_every": 5},
                                                                             "data": {"workers": 1}}), capsys)
    assert code == 0 and "budget met" in out, (out, err)
    # what a trial's value means (the fine-tuning seeds it averages), what pruning means, the sampler's seed
    for key, value in (("finetune_seeds", [0, 1]), ("pruner", {"n_startup_trials": 1, "n_warmup_steps": 0}),
                       ("seed", 5)):
        code, out, err = sweep_work_here(storage, "mixed", 2, toy_spec(finetune={"train": {"steps": 40, "warmup_steps": 4}},
                                                                       **{key: value}), capsys)
        assert code == 2 and f"'mixed' was started with other options: they differ in {key}" in err, (key, out, err)


def test_two_storages_with_one_study_name_do_not_share_trial_folders(tmp_path):
    """Two sweeps whose storages each hold a study named ``s`` and that share ``out_dir``: the second's workers
    deleted the first's ``<out_dir>/s/trial_NNNN`` folders (metrics, curves) as leftovers of "an earlier study of
    the same name". The second must be refused before any trial starts, naming the folder and the other storage;
    the first's folders stay, and its own storage may go on using them."""
    from s2dc.tune.objective import make_objective

    for name in ("pool.json", "task.json"):
        write_listing(tmp_path / name)
    spec = spec_from_dict({"space": {"finetune.train.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True}},
                           "data": {"pretrain": str(tmp_path / "pool.json"), "finetune": str(tmp_path / "task.json")},
                           "out_dir": str(tmp_path / "sweeps")})
    make_objective(spec, str(tmp_path / "a.journal"), "s")
    kept = tmp_path / "sweeps" / "s" / "trial_0000" / "finetune" / "metrics.json"
    kept.parent.mkdir(parents=True)
    kept.write_text("{}")
    with pytest.raises(ValueError) as err:
        make_objective(spec, str(tmp_path / "b.journal"), "s")
    assert str(tmp_path / "sweeps" / "s") in str(err.value) and "a.journal" in str(err.value)
    make_objective(spec, str(tmp_path / "a.journal"), "s")  # the study's own storage again
    assert kept.exists()


def test_a_trial_fine_tunes_once_per_seed_and_its_value_is_their_mean(tmp_path, monkeypatch):
    """With ``finetune_seeds: [3, 5]`` a trial fine-tunes its encoder with seed 3 and seed 5 (each in a folder of its
    own), reports the first seed's validation scores to the pruner, and is worth the mean of the two last scores:
    one seed's order of crops alone set every trial's value at the quick budget. With one seed the layout is as
    before (``trial_NNNN/finetune``)."""
    from types import SimpleNamespace

    from s2dc.tune import objective as objective_module

    for name in ("pool.json", "task.json"):
        write_listing(tmp_path / name)
    runs, reported = [], []

    def pretrain(cfg):
        return {"checkpoint": str(tmp_path / "encoder.pt"), "losses_this_run": [1.0]}

    def finetune(cfg, on_score):
        runs.append((cfg.run.seed, cfg.run.out_dir, cfg.model.init))
        last = {3: 0.2, 5: 0.4}[cfg.run.seed]
        for step, value in ((8, last / 2), (16, last)):
            on_score(step, value)
        return {"score": {"key": "dice_mean", "value": 100 * last}}

    monkeypatch.setattr(objective_module, "pretrain", pretrain)
    monkeypatch.setattr(objective_module, "finetune", finetune)
    monkeypatch.setattr(objective_module, "fill_finetune_defaults", lambda values: (values, []))
    trial = SimpleNamespace(number=7, user_attrs={}, report=lambda value, step: reported.append((step, value)),
                            should_prune=lambda: False)
    trial.set_user_attr = trial.user_attrs.__setitem__
    for seeds, value, folders in (([3, 5], 0.3, ["finetune_seed3", "finetune_seed5"]), ([3], 0.2, ["finetune"])):
        runs.clear(), reported.clear()
        spec = spec_from_dict({"space": {"finetune.train.lr": {"low": 1.0e-4, "high": 1.0e-2}}, "finetune_seeds": seeds,
                               "data": {"pretrain": str(tmp_path / "pool.json"), "finetune": str(tmp_path / "task.json")},
                               "out_dir": str(tmp_path / "sweeps")})
        objective = objective_module.make_objective(spec, str(tmp_path / "a.journal"), "s")
        assert objective(trial, {"finetune.train.lr": 1e-3}) == pytest.approx(value)
        trial_dir = tmp_path / "sweeps" / "s" / "trial_0007"
        assert runs == [(s, str(trial_dir / f), str(tmp_path / "encoder.pt")) for s, f in zip(seeds, folders)]
        assert reported == [(8, 0.1), (16, 0.2)]  # the first seed's scores only
        assert trial.user_attrs["seed_scores"] == [100 * {3: 0.2, 5: 0.4}[s] for s in seeds]
        assert trial.user_attrs["score"]["value"] == pytest.approx(100 * value)


def test_a_worker_of_other_options_is_told_the_first_field_that_differs():
    """Options are nested dicts (base fine-tuning options, pruner, ...): the refusal names the first field that
    differs and both values, not just both whole dicts (where a one-number difference hid among fifty)."""
    study = optuna.create_study(study_name="s", storage=optuna.storages.InMemoryStorage())
    options = {"objective": "toy", "finetune": {"train": {"steps": 40, "lr": 0.01}}, "seed": 0}
    bind_study(study, 2, {"x": [0, 1]}, options=options)
    with pytest.raises(ValueError, match=r"study 's' was started with other options: they differ in "
                                         r"finetune\.train\.steps, 40 there, 400 in this worker's"):
        bind_study(study, 2, {"x": [0, 1]}, options={**options, "finetune": {"train": {"steps": 400, "lr": 0.01}}})
    with pytest.raises(ValueError, match=r"differ in pruner, \(absent\) there, \{'n_startup_trials': 1\} in this"):
        bind_study(study, 2, {"x": [0, 1]}, options={**options, "pruner": {"n_startup_trials": 1}})
    with pytest.raises(ValueError, match=r"study 's' was started with budget 2, this worker has 3"):
        bind_study(study, 3, {"x": [0, 1]}, options=options)


def test_two_parallel_sweeps_of_one_spec_run_the_same_trials(tmp_path):
    """What a trial draws, whether it is pruned and its value depend on the spec and the generations before it, not
    on which of the two workers finishes first: two sweeps of one spec, each on two worker processes, hold the same
    trials (numbers, parameters, states, values). Before trials waited for the generations before their own, each
    worker seeded its sampler from its process id and the pruner read whatever had finished."""
    spec = toy_spec(workers=2, toy={"steps": 4, "sleep": 0.05}, pruner={"n_startup_trials": 2, "n_warmup_steps": 0},
                    seed=5)
    budget, runs = 8, []
    for run in ("first", "second"):
        storage = tmp_path / f"{run}.journal"
        workers = [sweep_work(storage, "same", budget, spec, cwd=tmp_path) for _ in range(2)]
        for worker in workers:
            out, err = worker.communicate(timeout=180)
            assert worker.returncode == 0, err[-3000:]
        trials = [t for t in open_study(str(storage), "same", create=False).get_trials(deepcopy=False)
                  if t.number < budget]
        assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2, "the workers did not share the sweep"
        runs.append([(t.number, t.state, sorted(t.params.items()), t.value) for t in trials])
    assert runs[0] == runs[1]
    assert {state for _, state, _, _ in runs[0]} == {TrialState.COMPLETE, TrialState.PRUNED}  # the pruner decided
    assert len({tuple(params) for _, _, params, _ in runs[0]}) == budget


def test_a_dead_trial_found_while_waiting_for_its_generation_is_counted_as_retried(tmp_path):
    """A worker whose trial waits for the generation before its own fails (and retries) a dead worker's trial of that
    generation; its closing report counts that retry with those it finds between trials."""
    spec = toy_spec(workers=2, heartbeat={"interval": 1, "grace": 2})
    sweep = spec_from_dict(spec)
    study, liveness = open_sweep(str(tmp_path / "study.journal"), "waits", workers=2, sampler=sweep.make_sampler(),
                                 heartbeat_interval=1, grace_period=2)
    bind_study(study, 3, sweep.space)
    started = datetime.datetime.now()
    x = optuna.distributions.FloatDistribution(0.0, 1.0)
    study.add_trial(optuna.trial.FrozenTrial(  # generation 0: trial 0 runs on another host, its last beat 1 s old
        number=0, trial_id=0, state=TrialState.RUNNING, value=None, values=None, intermediate_values={},
        datetime_start=started, datetime_complete=None, params={"pretrain.loss.weight_p2p": 0.5},
        distributions={"pretrain.loss.weight_p2p": x}, user_attrs={"worker": {"host": "elsewhere", "pid": 1},
                                                                   "heartbeat": time.time() - 1.0}, system_attrs={}))
    study.add_trial(optuna.trial.create_trial(params={"pretrain.loss.weight_p2p": 0.25},
                                              distributions={"pretrain.loss.weight_p2p": x}, value=0.1))
    lines = []
    report = run_worker(study, make_toy_objective(sweep.toy, sweep.dims), sweep.dims, 3, liveness, generation=2,
                        poll=0.2, log=lines.append)
    assert any("trial 2 waits for trials [0]" in line for line in lines), lines  # found dead while trial 2 waited
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL and trials[3].user_attrs.get("retry_of") == 0
    assert report.dead_retried == 1


def test_one_space_in_another_key_order_draws_the_same_trials(tmp_path):
    """A study binds its space as a mapping, so a worker whose spec lists the same space in another key order joins
    it; the sampler draws the dimensions in one order (the keys sorted), so trial n draws the same parameters
    whichever worker's spec runs it (before, each spec's order: other parameters)."""
    space = {"pretrain.loss.weight_p2p": {"low": 0.0, "high": 1.0},
             "finetune.train.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True}}
    reordered = dict(reversed(list(space.items())))
    assert reordered == space and list(reordered) != list(space)
    drawn = []
    for folder, order in ((tmp_path / "a", space), (tmp_path / "b", reordered)):
        folder.mkdir()
        spec = spec_from_dict({"objective": "toy", "space": order, "pruner": None, "toy": {"steps": 1, "sleep": 0.0}})
        study, liveness = open_sweep(str(folder / "study.journal"), "s", sampler=spec.make_sampler(),
                                     pruner=spec.make_pruner(), heartbeat_interval=1, grace_period=30)
        bind_study(study, 3, spec.space)
        run_worker(study, make_toy_objective(spec.toy, spec.dims), spec.dims, 3, liveness, log=lambda line: None)
        drawn.append([t.params for t in study.get_trials(deepcopy=False)])
    assert len(drawn[0]) == 3 and drawn[0] == drawn[1]
