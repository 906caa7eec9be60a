"""The Snakemake DAG at the smoke scale, its agreement with dvc.yaml, and params.yaml validation."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from s2dc.data import registry
from s2dc.export import load_pretrained_encoder, swinunetr_for
from s2dc.models.encoder import EncoderConfig

from conftest import REPO, copy_run, params_error, snakemake, with_venv_path

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def job_counts(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run -> {rule: count}."""
    counts = {}
    table = dry_run_output.split("Job stats:")[1].split("\n\n")[0]
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def results_of(workdir: Path) -> dict:
    """Every number the smoke DAG reports: the nested benchmark metrics and each run's Dice and probe."""
    results = workdir / "results" / "smoke"
    out = {"benchmark": json.loads((results / "metrics.json").read_text())}
    for path in sorted(results.glob("finetune/*/*/*/*/*/metrics.json")):
        run = json.loads(path.read_text())
        out[str(path.relative_to(results))] = [run["dice_mean"], run["dice_per_class"], run["train_loss_first_last"]]
    out["probe"] = json.loads((results / "probe" / "btcv.json").read_text())["encoders"]
    return out


def test_a_pretrainings_run_folder_is_named_after_the_options_its_run_records(smoke_run):
    """The options the workflow names a pretraining's run folder after (s2dc.workflow_checks.pretrain_run_options) are
    those the run in it records as its own (run.json's identity): the name describes the run, option for option."""
    from s2dc.workflow_checks import pretrain_run_options

    config = {**PARAMS, "scale": "smoke"}
    for modality in PARAMS["scales"]["smoke"]["pretrain"]["modalities"]:
        runs = sorted((smoke_run / f"results/smoke/pretrain/{modality}/s2dc/runs").glob("*/run.json"))
        assert len(runs) == 1, runs
        recorded = json.loads(runs[0].read_text())["identity"]["options"]
        assert recorded == pretrain_run_options(config, "s2dc", modality), modality


def test_smoke_dag_runs_is_incremental_and_reruns_only_what_changed(smoke_run):
    """The smoke DAG runs end to end; a rerun does nothing; a fine-tuning change reruns only fine-tuning and after."""
    tmp_path = smoke_run
    results = tmp_path / "results" / "smoke"
    table = pd.read_csv(results / "benchmark.csv")
    smoke_datasets = PARAMS["scales"]["smoke"]["experiments"]["datasets"]
    assert sorted(table.method) == sorted(["s2dc", "scratch"] * len(smoke_datasets))
    assert set(table.task) == {"segmentation", "classification", "reconstruction", "translation"}  # every task
    assert (table.seeds == 1).all() and table["mean"].between(0, 100).all()
    assert "| synthetic_btcv | segmentation | Dice |" in (results / "benchmark.md").read_text()
    assert "Does pretraining show?" in (results / "benchmark.md").read_text()  # both protocols, dataset by dataset
    assert (results / "figures/benchmark/effect.png").stat().st_size > 5000
    nested = json.loads((results / "metrics.json").read_text())
    for method in ("scratch", "s2dc"):
        run = json.loads((results / "finetune/segmentation/btcv" / method / "labels50pct/seed0/metrics.json").read_text())
        assert run["method"] == method and 0 <= run["dice_mean"] <= 1
        assert nested["synthetic_btcv"][method]["labels_50%"]["mean"] == pytest.approx(100 * run["dice_mean"], abs=1e-3)
    assert run["init_from"].endswith("results/smoke/pretrain/CT/s2dc/encoder.pt")
    probe = json.loads((results / "probe" / "btcv.json").read_text())
    stage = PARAMS["scales"]["smoke"]["probe"]["stage"]
    assert probe["stage"] == stage and set(probe["encoders"]) == {"voxels", "random", "s2dc"}
    assert set(nested["probe"]["synthetic_btcv"]) == {"voxels", "random", "s2dc"}
    assert f"| synthetic_btcv | {stage} | s2dc |" in (results / "benchmark.md").read_text()
    smoke = PARAMS["scales"]["smoke"]
    sizes = {k: v for k, v in smoke["pretrain"]["options"]["encoder"].items() if k != "token_stage"}
    report = load_pretrained_encoder(swinunetr_for(EncoderConfig(**sizes), out_channels=14), results / "pretrain/CT/s2dc/encoder.pt")
    assert "missing keys: none" in report
    for log in ("data/btcv.log", "pretrain/CT_s2dc.log", "finetune/segmentation/btcv_s2dc_labels50pct_seed0.log", "probe/btcv.log",
                "benchmark_table.log"):
        assert (tmp_path / "logs" / "smoke" / log).is_file(), log
    assert (tmp_path / "benchmarks" / "smoke" / "pretrain" / "CT_s2dc.tsv").is_file()

    again = snakemake(tmp_path, "--cores", "2", "--config", "scale=smoke", "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    changed = copy.deepcopy(PARAMS)
    changed["scales"]["smoke"]["finetune"]["options"]["train"]["steps"] += 1
    dry = snakemake(tmp_path, "--cores", "2", "--config", "scale=smoke", "-n",
                    configfile=write_params(tmp_path / "changed.yaml", changed))
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert job_counts(dry.stdout) == {"finetune": 2 * len(smoke_datasets), "benchmark_table": 1, "benchmark_plots": 1,
                                      "all": 1}


def test_job_logs_show_progress(smoke_run):
    """Pretraining and fine-tuning jobs log a progress line every log_every steps (1 at the smoke scale)."""
    logs = smoke_run / "logs" / "smoke"
    pretrain = (logs / "pretrain" / "CT_s2dc.log").read_text()
    steps = PARAMS["scales"]["smoke"]["pretrain"]["options"]["optim"]["steps"]
    for step in range(1, steps + 1):
        assert f"pretrain step {step}/{steps} loss " in pretrain
    finetune = (logs / "finetune" / "segmentation" / "btcv_s2dc_labels50pct_seed0.log").read_text()
    steps = PARAMS["scales"]["smoke"]["finetune"]["options"]["train"]["steps"]
    assert all(f"finetune step {step}/{steps} loss " in finetune for step in range(1, steps + 1))
    assert "left" in finetune


def test_pool_change_reruns_pretraining_and_everything_after(smoke_run, tmp_path):
    """Another seed for the pretraining pool regenerates it and reruns pretraining and every job that reads the
    encoder (the scratch baseline does not); inside the job, the changed data starts a fresh run
    (tests/test_trust.py::test_changed_data_is_never_resumed)."""
    changed = copy.deepcopy(PARAMS)
    changed["scales"]["smoke"]["datasets"]["ct_pool"]["seed"] += 5
    dry = snakemake(smoke_run, "--cores", "2", "--config", "scale=smoke", "-n",
                    configfile=write_params(tmp_path / "changed.yaml", changed))
    ct = [d for d in PARAMS["scales"]["smoke"]["experiments"]["datasets"] if registry.get(d).modality == "CT"]
    assert len(ct) == 2  # btcv and cc_ccii: their S²DC runs and probes read the CT encoder
    assert job_counts(dry.stdout) == {"synthetic_dataset": 1, "pretrain": 1, "finetune": len(ct), "probe": len(ct),
                                      "structure_figures": 1, "benchmark_table": 1, "benchmark_plots": 1,
                                      "all": 1}  # BTCV's figures


def test_a_pool_regenerated_with_other_images_reruns_pretraining_in_a_later_run(smoke_run, tmp_path, monkeypatch):
    """`dvc repro` runs the data stage and the pretraining as two Snakemake runs. A pool regenerated with other
    images under the same case names (its twin's code changed) must rerun the pretraining in the second run:
    Snakemake skips a job whose input has a newer date but the same checksum, so the dataset.json a job reads must
    change with the images it lists, not only with the listing."""
    import dataclasses

    from s2dc.cli import main
    from s2dc.data.synthetic import twins

    work = copy_run(smoke_run, tmp_path / "w")
    pool = PARAMS["scales"]["smoke"]["datasets"]["ct_pool"]
    before = (work / "resources/smoke/ct_pool/dataset.json").read_bytes()
    old = twins.TWINS["ct_pool"]

    def make(seed, shape, index):  # the twin's code changed: other images under the same case names
        case = old.make(seed, shape, index)
        case.image = case.image + 1.0
        return case

    with monkeypatch.context() as changed:  # `s2dc synth` run in this process (what it writes is what is checked)
        changed.setitem(twins.TWINS, "ct_pool", dataclasses.replace(old, make=make))
        changed.chdir(work)
        assert main(["synth", "--kind", "ct_pool", "--out", "resources/smoke/ct_pool", "--cases", str(pool["cases"]),
                     "--seed", str(pool["seed"]), "--shape", *map(str, pool["shape"])]) == 0
    assert (work / "resources/smoke/ct_pool/dataset.json").read_bytes() != before
    dry = snakemake(work, "--cores", "2", "--config", "scale=smoke", "-n")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert job_counts(dry.stdout).get("pretrain") == 1, dry.stdout[-3000:]


def test_kill_minus_nine_then_a_plain_rerun_recovers(smoke_run, tmp_path):
    """SIGKILL of the whole Snakemake session during pretraining; the same command again (no --unlock)
    finishes, with the very encoder and losses of the run that was not interrupted (so the same metrics
    downstream: fine-tuning and the probe are deterministic given the encoder)."""
    workdir = copy_run(smoke_run, tmp_path / "w")
    pretrain = workdir / "results/smoke/pretrain/CT/s2dc"
    shutil.rmtree(pretrain)
    command = ("--config", "scale=smoke", "--cores", "2", "pretrained")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--configfile",
           str(REPO / "params.yaml"), *command]
    proc = subprocess.Popen(cmd, cwd=workdir, env=with_venv_path(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while not list(pretrain.glob("runs/*/run.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)  # run.json: the pretraining job has started its run
    assert proc.poll() is None and list(pretrain.glob("runs/*/run.json")), "pretraining never started"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any((workdir / ".snakemake" / "locks").glob("*.lock")), "the killed run should have left its lock"
    assert not (pretrain / "encoder.pt").exists()

    rerun = snakemake(workdir, *command)  # the same command: no --unlock
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Removing the lock of a Snakemake run that no longer exists" in rerun.stderr
    reference = smoke_run / "results/smoke/pretrain/CT/s2dc"
    assert (pretrain / "encoder.pt").read_bytes() == (reference / "encoder.pt").read_bytes()
    losses = [json.loads((p / "summary.json").read_text())["losses_this_run"] for p in (pretrain, reference)]
    assert losses[0] == losses[1] and len(losses[0]) == PARAMS["scales"]["smoke"]["pretrain"]["options"]["optim"]["steps"]


def test_paths_with_spaces_are_quoted(tmp_path):
    """A real dataset's release in a folder whose name has spaces reaches its converter as one argument, and
    the prepared dataset.json points into it."""
    from test_registry import btcv_release

    raw = tmp_path / "my data"
    btcv_release(raw / "btcv")
    changed = copy.deepcopy(PARAMS)
    changed["scales"]["smoke"]["raw"] = str(raw)
    changed["scales"]["smoke"]["datasets"]["btcv"] = {"source": "real"}
    run = snakemake(tmp_path, "--cores", "1", "resources/smoke/btcv/dataset.json", "--config", "scale=smoke",
                    configfile=write_params(tmp_path / "spaces.yaml", changed))
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads((tmp_path / "resources/smoke/btcv/dataset.json").read_text())
    image = (tmp_path / "resources/smoke/btcv" / doc["training"][0]["image"]).resolve()
    assert image == (raw / "btcv/RawData/Training/img/img0001.nii.gz").resolve()


def test_a_missing_release_fails_in_its_own_job(tmp_path):
    """At scale paper (planned without data: test_workflow.py) the job that needs a missing release stops with
    where to get it and where to put it, writing nothing."""
    run = snakemake(tmp_path, "--cores", "1", "resources/paper/btcv/dataset.json", "--config", "scale=paper")
    assert run.returncode != 0
    assert "needs a registration" in run.stderr and "data/raw/btcv" in run.stderr, run.stderr[-3000:]
    assert not (tmp_path / "resources/paper/btcv/dataset.json").exists()


def _dvc_paths(stage: dict, scale: str) -> list[str]:
    paths = []
    for kind in ("outs", "metrics", "plots"):
        for entry in stage.get(kind, []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            paths.append(path.replace("${scale}", scale))
    return paths


def test_dvc_outputs_are_snakemake_targets(tmp_path):
    """Every output of every dvc.yaml stage is made by the Snakemake target that stage runs."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert list(dvc) == ["data", "pretrain", "benchmark"]
    targets = {}
    for name, stage in dvc.items():
        match = re.fullmatch(r'snakemake --workflow-profile "\$S2DC_WORKFLOW_PROFILE" (\w+)', stage["cmd"])
        assert match, f"stage {name}: cmd must run one Snakemake target, got {stage['cmd']!r}"
        targets[name] = match.group(1)
    for name, stage in dvc.items():
        summary = snakemake(tmp_path, "--cores", "1", "--config", "scale=smoke", "--summary", targets[name])
        assert summary.returncode == 0, summary.stderr[-3000:]
        made = [line.split("\t")[0] for line in summary.stdout.splitlines()[1:] if "\t" in line]
        for path in _dvc_paths(stage, "smoke"):
            assert any(f == path or f.startswith(path.rstrip("/") + "/") for f in made), (name, path, made)
        assert "scale" in stage["params"]
        for entry in stage.get("outs", []):
            options = next(iter(entry.values()))
            assert options.get("persist") or options.get("cache") is False, entry
    # which encoders exist decides the benchmark's probe rows and figures: changing it must rerun that stage
    # (it was skipped and the table kept the removed modality's rows)
    assert "scales.${scale}.pretrain.modalities" in dvc["benchmark"]["params"]


def test_dvc_stages_run_snakemake_with_the_workflow_profile_of_the_environment(tmp_path):
    """Each stage of both DVC pipelines runs `snakemake` with `--workflow-profile $S2DC_WORKFLOW_PROFILE`: set
    (`S2DC_WORKFLOW_PROFILE=profiles/slurm dvc repro`), that profile replaces profiles/default, whose `cores: all`
    capped every cluster job's threads at the login node's cores while the stages ran `snakemake --cores all`;
    unset, the empty value gives Snakemake's own default, profiles/default. A stand-in `snakemake` first on PATH
    records the arguments each stage's command reaches it with, through the shell DVC runs it in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "snakemake"
    stand_in.write_text('#!/bin/sh\nfor a in "$@"; do printf "[%s]" "$a"; done\n')
    stand_in.chmod(0o755)
    stages = [(name, stage) for path in ("dvc.yaml", "experiments/dvc.yaml")
              for name, stage in yaml.safe_load((REPO / path).read_text())["stages"].items()]
    assert [name for name, _ in stages] == ["data", "pretrain", "benchmark", "ablation", "sweep"]
    for name, stage in stages:
        target = stage["cmd"].split()[-1]
        for profile in ("profiles/slurm", None):
            env = {k: v for k, v in os.environ.items() if k != "S2DC_WORKFLOW_PROFILE"}
            env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
            if profile:
                env["S2DC_WORKFLOW_PROFILE"] = profile
            argv = subprocess.run(["/bin/sh", "-c", stage["cmd"]], env=env, capture_output=True, text=True,
                                  check=True).stdout
            assert argv == f"[--workflow-profile][{profile or ''}][{target}]", (name, profile, argv)
    # Snakemake reads an empty --workflow-profile as none given: it loads profiles/default (with its `cores: all`)
    plan = snakemake(tmp_path, "-n", "--workflow-profile", "", "data", "--config", "scale=smoke")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert f"workflow specific profile {REPO / 'profiles/default'}" in plan.stdout + plan.stderr, plan.stderr[-3000:]


def _bad(params: dict, edit) -> dict:
    bad = copy.deepcopy(params)
    edit(bad)
    return bad


BAD_PARAMS = {  # what is wrong -> what the message must name
    "unknown key": (lambda p: p["scales"]["smoke"].__setitem__("epochs", 3), "epochs"),
    "wrong type": (lambda p: p["scales"]["smoke"]["datasets"]["btcv"].__setitem__("cases", "many"), "many"),
    "unknown option": (lambda p: p["scales"]["smoke"]["pretrain"]["options"]["loss"].__setitem__("weight_p2q", 1.0),
                       "loss.weight_p2q"),
    "not in the registry": (lambda p: p["scales"]["smoke"]["datasets"].__setitem__("lits", {"source": "real"}),
                            "not a registry dataset"),  # the other dataset choices: test_registry.py
    "ratio not a whole percent": (lambda p: p["scales"]["smoke"]["experiments"].__setitem__("label_ratios", [0.5, 0.125]),
                                  "experiments.label_ratios"),  # its folder (labels12pct) and row would say 12 %
    # an S²DC run on a dataset whose modality has no encoder: it was planned from an encoder of no pool's choosing
    "modality without an encoder": (lambda p: p["scales"]["smoke"]["pretrain"].__setitem__("modalities", ["CT", "PET"]),
                                     "pretrain.modalities"),
    # the rules set these themselves, after the options: the value in params.yaml was silently overridden
    "label ratio among the options": (lambda p: p["scales"]["smoke"]["finetune"]["options"]["data"].__setitem__(
        "label_ratio", 0.1), "finetune.options.data.label_ratio"),
    "method among the options": (lambda p: p["scales"]["smoke"]["finetune"]["options"].__setitem__(
        "run", {"method": "mine"}), "finetune.options.run.method"),
    "resume among the options": (lambda p: p["scales"]["smoke"]["pretrain"]["options"]["run"].__setitem__(
        "resume", "never"), "pretrain.options.run.resume"),
    "seed among the options": (lambda p: p["scales"]["smoke"]["finetune"]["options"].__setitem__(
        "run", {"seed": 3}), "experiments.seeds"),
    # a repeated seed or dataset: found only by the table job, after every fine-tuning ("remove the copy")
    "seed twice": (lambda p: p["scales"]["smoke"]["experiments"].__setitem__("seeds", [0, 0]), "seeds"),
    "dataset twice": (lambda p: p["scales"]["smoke"]["experiments"].__setitem__("datasets", ["btcv", "btcv"]),
                      "datasets"),
    # whole numbers written as decimals: JSON Schema's integer takes 1.0; the job's command line refused it later
    "a seed written 1.0": (lambda p: p["scales"]["smoke"]["datasets"]["btcv"].__setitem__("seed", 1.0),
                           "scales.smoke.datasets.btcv.seed"),
    "a probe seed written 0.0": (lambda p: p["scales"]["smoke"]["probe"].__setitem__("seed", 0.0),
                                 "scales.smoke.probe.seed"),
    "experiment seeds written 0.0": (lambda p: p["scales"]["smoke"]["experiments"].__setitem__("seeds", [0.0]),
                                     "scales.smoke.experiments.seeds"),
    "a sweep budget written 2.0": (lambda p: p["scales"]["smoke"]["sweep"].__setitem__("budget", 2.0),
                                   "scales.smoke.sweep.budget"),
    "more sweep workers than trials": (lambda p: p["scales"]["smoke"]["sweep"].__setitem__("workers", 3),
                                       "scales.smoke.sweep.workers is 3, more than its budget of 2 trials"),
    "a sweep trial's unknown option": (lambda p: p["scales"]["smoke"]["sweep"]["trial"].__setitem__(
        "pretrain", {"optim": {"stepz": 3}}), ("scales.smoke.sweep (with the scale's options): the sweep's base "
                                               "pretrain options are not valid: unknown option(s) ['optim.stepz']")),
    # an unknown experiments dataset: a traceback that named no key
    "an unknown experiments dataset": (lambda p: p["scales"]["smoke"]["experiments"]["datasets"].__setitem__(0, "btcvv"),
                                       "btcvv"),
    # a twin the generator refuses (too few cases for its classes, a grid under 16 voxels): found in its job
    "too few cases for a twin": (lambda p: p["scales"]["smoke"]["datasets"]["cc_ccii"].__setitem__("cases", 2),
                                 "scales.smoke.datasets.cc_ccii"),
    "a twin's grid too small": (lambda p: p["scales"]["smoke"]["datasets"]["btcv"].__setitem__("shape", [8, 8, 8]),
                                "scales.smoke.datasets.btcv"),
    "an empty launcher": (lambda p: p["scales"]["smoke"]["pretrain"].__setitem__("launcher", ""), "launcher"),
    # the encoder's sizes searched, or set for the trials: refused naming finetune.model.feature_size, a key the
    # user never wrote (the workflow copies the encoder's sizes into the trials' fine-tuning options)
    "an encoder size searched": (lambda p: p["scales"]["smoke"]["sweep"]["space"].__setitem__(
        "pretrain.encoder.feature_size", {"choices": [12, 24]}), (
        "scales.smoke.sweep.space: 'pretrain.encoder.feature_size' cannot be searched by the pipeline's sweep")),
    "an encoder size set for the trials": (lambda p: p["scales"]["smoke"]["sweep"]["trial"].__setitem__(
        "pretrain", {"encoder": {"window_size": 8}}), (
        "scales.smoke.sweep.trial.pretrain.encoder.window_size: the pipeline's sweep fine-tunes with the network "
        "sizes of scales.smoke.pretrain.options.encoder")),
    # found by an audit of the parse (2026-12-06): each was accepted and then ignored, misplaced or a traceback
    "an ablation dataset without its encoder": (lambda p: (
        p["scales"]["smoke"]["experiments"].__setitem__("methods", ["scratch"]),
        p["scales"]["smoke"]["pretrain"].__setitem__("modalities", ["CT"]),
        p["scales"]["smoke"]["ablation"].__setitem__("datasets", ["brats23"])),
        "scales.smoke.ablation.datasets ['brats23'] are fine-tuned from pretrained encoders (['lg', 's2dc'])"),
    "a blank raw folder": (lambda p: p["scales"]["smoke"].__setitem__("raw", ""), "'' does not match"),
    "a sweep storage that is no URL": (lambda p: p["scales"]["smoke"]["sweep"].__setitem__("storage", "jounral"),
                                       "scales.smoke.sweep.storage: 'jounral' is neither 'journal'"),
    "a database URL missing a slash": (lambda p: p["scales"]["smoke"]["sweep"].__setitem__(
        "storage", "postgresql:/user@host/db"), "'postgresql:/user@host/db' is neither 'journal'"),
    "a trial option the space searches": (lambda p: p["scales"]["smoke"]["sweep"]["trial"].__setitem__(
        "pretrain", {"loss": {"weight_p2p": 0.3}}), "scales.smoke.sweep.trial.pretrain.loss.weight_p2p: also searched"),
    "a reserved trial option at its default": (lambda p: p["scales"]["smoke"]["sweep"]["trial"].__setitem__(
        "finetune", {"model": {"init": "scratch"}}), "scales.smoke.sweep.trial.finetune.model.init: set by the sweep"),
    "a trial seed at its default": (lambda p: p["scales"]["smoke"]["sweep"]["trial"].__setitem__(
        "finetune", {"run": {"seed": 0}}), "scales.smoke.sweep.trial.finetune.run.seed: set by the sweep"),
    "a real dataset given a twin's keys": (lambda p: p["scales"]["smoke"]["datasets"]["btcv"].__setitem__(
        "source", "real"), "scales.smoke.datasets.btcv: cases, seed, shape, val_fraction given to a dataset of source real"),
    "a number as a variant's name": (lambda p: p["variants"].__setitem__(1, {}),
                                     "params.yaml: variants: the key 1 is not text (YAML reads it as int"),
    # Snakemake's YAML 1.1 reader takes 5e-1 as text (DVC's reads 0.5): the schema's refusal said only "not a number"
    "an exponent without a decimal point": (lambda p: p["scales"]["smoke"]["experiments"].__setitem__(
        "label_ratios", ["5e-1"]), "'5e-1' is text to the YAML reader Snakemake uses (YAML 1.1 reads an exponent as a "
                                   "number only after a decimal point): write it 5.0e-1"),
    "a number as a searched key": (lambda p: p["scales"]["smoke"]["sweep"]["space"].__setitem__(2, {"low": 0.0, "high": 1.0}),
                                   "params.yaml: scales.smoke.sweep.space: the key 2 is not text"),
}  # a NaN or a wrong device goes through the option validators as "unknown option" does (each: test_trust.py)


def test_the_options_refused_in_params_are_those_the_rules_set():
    """s2dc.workflow_checks.RULE_OPTIONS (refused in scales.<scale>.<stage>.options) lists exactly the --section.field
    options that the pretrain and finetune rules' shell commands give after params.yaml's, read from the rules."""
    import itertools

    from s2dc.workflow_checks import RULE_OPTIONS

    for stage in ("pretrain", "finetune"):
        lines = (REPO / "workflow" / "rules" / f"{stage}.smk").read_text().splitlines()
        start = lines.index("    shell:") + 1
        shell = " ".join(itertools.takewhile(lambda line: line.strip().startswith('"'), lines[start:]))
        assert set(re.findall(r"--(\w+\.\w+)", shell)) == set(RULE_OPTIONS[stage]), stage


def test_bad_params_fail_before_any_job(tmp_path):
    """A wrong key, type or value in params.yaml or an unknown scale stops the workflow at start, naming it: every
    case through the checks the workflow runs when it is parsed (in-process: conftest.params_error), and two cases
    of the schema (a key; the scale from --config) and one of s2dc's own checks through Snakemake itself, which
    starts no job (the dry runs run side by side: each one is mostly start-up)."""
    for scale in ("smoke", "quick", "paper"):
        assert params_error(PARAMS, scale=scale) == "", scale
    cases = {name: (_bad(PARAMS, edit), {"scale": "smoke"}, [message]) for name, (edit, message) in BAD_PARAMS.items()}
    for scale, messages in (("huge", ["huge"]),):
        cases[f"scale {scale}"] = (PARAMS, {"scale": scale}, messages)
    for name, (params, config, messages) in cases.items():
        out = params_error(params, **config)
        assert out and all(m in out for m in messages), (name, out[-2000:])

    # the schema's, s2dc.workflow_checks', and the schema's with the scale from the command line
    for name in ("unknown key", "ratio not a whole percent", "scale huge"):
        folder = tmp_path / name.replace(" ", "_")
        folder.mkdir()
        params, config, _ = cases[name]
        bad = None if params is PARAMS else write_params(folder / "bad.yaml", params)
        run = snakemake(folder, "-n", "--cores", "1", "--config", f"scale={config['scale']}", configfile=bad)
        out = run.stdout + run.stderr
        assert run.returncode != 0, name
        assert all(m in out for m in cases[name][2]), (name, out[-2000:])
        assert not (folder / "resources").exists() and not (folder / "results").exists(), name


def _a_label_corrected_in_place_is_converted_again(tmp_path, dataset: str, label_path: str) -> None:
    """With the release of ``dataset`` under tmp_path/raw/<dataset>: converting it, then nothing to do; a label
    (``label_path`` under the release) rewritten in place, then its conversion is planned again and gives another
    dataset.json; then nothing to do again."""
    import nibabel as nib
    import numpy as np

    raw = tmp_path / "raw"
    changed = copy.deepcopy(PARAMS)
    changed["scales"]["smoke"]["raw"] = str(raw)
    changed["scales"]["smoke"]["datasets"][dataset] = {"source": "real"}
    config = write_params(tmp_path / f"real_{dataset}.yaml", changed)
    target = f"resources/smoke/{dataset}/dataset.json"

    def run(*args):
        done = snakemake(tmp_path, *args, target, "--config", "scale=smoke", configfile=config)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout + done.stderr

    run("--cores", "1")
    before = json.loads((tmp_path / target).read_text())["content_sha256"]
    assert "Nothing to be done" in run("-n")
    label = raw / dataset / label_path
    corrected = np.zeros(nib.load(str(label)).shape, np.uint8)
    corrected[1:3, 1:3, 1] = 1
    nib.save(nib.Nifti1Image(corrected, nib.load(str(label)).affine), str(label))
    assert "prepared_dataset" in run("--cores", "1")  # planned again (the run prints its plan) and run
    assert json.loads((tmp_path / target).read_text())["content_sha256"] != before
    assert "Nothing to be done" in run("-n")


def test_a_release_changed_in_place_is_converted_again_not_silently_reused(tmp_path):
    """A registration-only release is no Snakemake input (it may be absent when the DAG is built), so a release
    changed in place (a label corrected, a case added) left its dataset.json, and every result after it, as they
    were: `snakemake` had nothing to do. Its conversion job now carries a fingerprint of the release's files (path,
    size, modification time) as a param, so such a change is converted again; an unchanged release is not."""
    from test_registry import btcv_release

    btcv_release(tmp_path / "raw" / "btcv")
    _a_label_corrected_in_place_is_converted_again(tmp_path, "btcv", "RawData/Training/label/label0001.nii.gz")


def test_a_twins_volume_changed_in_place_stops_the_workflow_naming_it(tmp_path, smoke_run):
    """The jobs read a twin's dataset.json, which Snakemake compares; a volume of the twin edited in place after it was
    written left the json as it was, and `snakemake` had nothing to do: every result made from the old bytes stood.
    The workflow now refuses at start, naming the file (and what to do), and runs nothing; with the original bytes
    back it has nothing to do again; with the folder moved away (keeping the change) it makes the twin again and
    plans what reads it."""
    import nibabel as nib

    work = copy_run(smoke_run, tmp_path / "work")
    volume = work / "resources/smoke/btcv/imagesTr/case_0002.nii.gz"
    original = volume.read_bytes()
    image = nib.load(str(volume))
    data = image.get_fdata(dtype="float32")
    data[10:20, 10:20, 5:10] += 300.0  # a bright patch painted in
    nib.save(nib.Nifti1Image(data, image.affine, image.header), str(volume))

    refused = snakemake(work, "-n", "--config", "scale=smoke")
    out = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "'resources/smoke/btcv/imagesTr/case_0002.nii.gz' changed after" in out, out[-3000:]
    assert "Nothing was run" in out and "move the folder 'resources/smoke/btcv' away" in out
    volume.write_bytes(original)
    again = snakemake(work, "-n", "--config", "scale=smoke")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stderr[-3000:]
    shutil.move(work / "resources/smoke/btcv", tmp_path / "my_btcv")
    replan = snakemake(work, "-n", "--config", "scale=smoke")
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", replan.stdout, flags=re.MULTILINE))
    assert replan.returncode == 0 and jobs.get("synthetic_dataset") == "1" and jobs.get("finetune") == "2", replan.stdout


def test_the_check_of_the_twins_bytes_hashes_a_dataset_once_until_a_file_changes(tmp_path, smoke_run, monkeypatch,
                                                                                 capsys):
    """s2dc.workflow_checks.check_made_data hashes every twin's files the first time, then only reads their status;
    a file touched (same bytes) is hashed again and passes; a dataset.json that s2dc did not write is not checked.
    A dataset above ANNOUNCED_BYTES (1 GiB; here 0) is announced before its files are read."""
    import s2dc.workflow_checks
    from s2dc.workflow_checks import check_made_data

    work = copy_run(smoke_run, tmp_path / "work")
    config = {**PARAMS, "scale": "smoke"}
    stamps = tmp_path / "stamps"
    monkeypatch.chdir(work)
    made = sorted(PARAMS["scales"]["smoke"]["datasets"])
    assert check_made_data(config, stamps) == made
    assert check_made_data(config, stamps) == []
    os.utime("resources/smoke/udpet/dataset.json")
    (Path("resources/smoke/cc_ccii") / json.loads(Path("resources/smoke/cc_ccii/dataset.json").read_text())
     ["validation"][0]["image"]).touch()
    monkeypatch.setattr(s2dc.workflow_checks, "ANNOUNCED_BYTES", 0)
    capsys.readouterr()
    assert check_made_data(config, stamps) == ["cc_ccii", "udpet"]
    said = capsys.readouterr().err
    doc = json.loads(Path("resources/smoke/udpet/dataset.json").read_text())
    files = sum(isinstance(entry.get(role), str) for key in ("training", "validation") for entry in doc[key]
                for role in ("image", "label", "target", "anatomy"))
    assert said.count("Checking the ") == 2 and f"Checking the {files} files of 'resources/smoke/udpet' (0.0 GiB)" in said
    Path("resources/smoke/btcv/dataset.json").write_text(json.dumps({"training": [{"image": "x.nii.gz"}]}))
    assert check_made_data(config, stamps) == []


def test_the_twins_check_follows_links_names_files_after_the_making_run_and_tells_a_list_edited_by_hand(
        tmp_path, smoke_run, monkeypatch, capsys):
    """Found by an audit of check_made_data: (1) a twin's folder moved to another disk and linked back was not checked
    at all (a file edited there: "Nothing to be done", exit 0); (2) a stamps folder that cannot be written failed every
    start with a traceback; (3) a list edited by hand (Snakemake sees that) was refused as "a file changed"; (4) the
    run that made a dataset kept no stamps, so an edit keeping an older time (cp -p) was not named."""
    import nibabel as nib

    from s2dc.workflow_checks import ChangedDataError, check_made_data

    assert (smoke_run / ".snakemake/s2dc/data-stamps/smoke/btcv.json").is_file()  # (4) kept by the making run
    work = copy_run(smoke_run, tmp_path / "work")
    images = work / "resources/smoke/btcv/imagesTr"
    shutil.copy2(images / "case_0001.nii.gz", images / "case_0000.nii.gz")  # as `cp -p`: an older time than the json
    pasted = snakemake(work, "-n", "--config", "scale=smoke")
    assert pasted.returncode != 0 and "'resources/smoke/btcv/imagesTr/case_0000.nii.gz' changed after" in pasted.stdout + pasted.stderr
    shutil.copy2(smoke_run / "resources/smoke/btcv/imagesTr/case_0000.nii.gz", work / "resources/smoke/btcv/imagesTr")

    config = {**PARAMS, "scale": "smoke"}
    monkeypatch.chdir(work)
    stamps = tmp_path / "stamps"
    check_made_data(config, stamps)
    disk = tmp_path / "other_disk"
    shutil.move("resources/smoke/btcv/imagesTr", disk)  # (1) moved away and linked back
    os.symlink(disk, "resources/smoke/btcv/imagesTr")
    assert check_made_data(config, stamps) == []  # the same files: stamps unchanged
    volume = disk / "case_0002.nii.gz"
    original = volume.read_bytes()
    image = nib.load(str(volume))
    nib.save(nib.Nifti1Image(image.get_fdata(dtype="float32") + 1.0, image.affine, image.header), str(volume))
    with pytest.raises(ChangedDataError, match="'resources/smoke/btcv/imagesTr/case_0002.nii.gz' changed after"):
        check_made_data(config, stamps)
    volume.write_bytes(original)
    assert check_made_data(config, stamps) == ["btcv"]

    (stamps / "smoke").rename(tmp_path / "aside")  # (2) a file where the stamps go
    (stamps / "smoke").write_text("not a folder\n")
    capsys.readouterr()
    assert "btcv" in check_made_data(config, stamps)
    assert "could not keep the stamps of 'resources/smoke/btcv'" in capsys.readouterr().err
    (stamps / "smoke").unlink()
    (tmp_path / "aside").rename(stamps / "smoke")

    listed = Path("resources/smoke/btcv/dataset.json")  # (3) a validation case taken out by hand
    doc = json.loads(listed.read_text())
    listed.write_text(json.dumps({**doc, "validation": doc["validation"][:1]}, indent=2))
    assert check_made_data(config, stamps) == ["btcv"]


def test_an_open_release_changed_in_place_is_converted_again(tmp_path):
    """An open archive's release (MSD Spleen, extracted by the user in its official layout) was fingerprinted as ''
    (its download marker, the job's input, stands for it), so a label corrected in place left its dataset.json and
    every result after it as they were. Its conversion now carries the fingerprint of its files too."""
    from test_sources_msd import CASES, TASKS, make_task

    make_task(tmp_path / "raw" / "msd_spleen", "msd_spleen")
    task, prefix, _ = TASKS["msd_spleen"]
    _a_label_corrected_in_place_is_converted_again(tmp_path, "msd_spleen", f"{task}/labelsTr/{prefix}_{CASES[0]}.nii.gz")


def test_lock_recovery_removes_the_locks_of_a_dead_run_alone(tmp_path):
    """Two runs' Snakemake locks in one folder, one run alive (this process), one dead: any later parse (a dry run
    here) removes the dead run's lock files and record, never the live run's, which a second run on its outputs must
    still meet. (One record for every run, overwritten by each run that started, let the parse after a later run's
    death remove the whole lock folder under a live run.)"""
    import socket

    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    for run, pid in ((0, os.getpid()), (1, dead.pid)):
        for kind in ("input", "output"):
            (locks / f"{run}.{kind}.lock").write_text(f"{tmp_path}/out{run}\n")
        (locks / f"s2dc-owner-{host}-{pid}").write_text(f"{host} {pid} {run}.input.lock {run}.output.lock\n")
    plan = snakemake(tmp_path, "--config", "scale=smoke", "-n")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert f"Removing the lock of a Snakemake run that no longer exists ({host} {dead.pid})" in plan.stderr
    assert sorted(p.name for p in locks.iterdir()) == ["0.input.lock", "0.output.lock", f"s2dc-owner-{host}-{os.getpid()}"]


def test_a_run_that_ends_keeps_the_locks_of_a_run_still_alive(tmp_path):
    """Snakemake, when a run ends, removed the whole lock folder, the locks of another live run included: `dvc repro`
    during a `snakemake` ran its data stage (`snakemake data`, nothing to do), which unlocked the running Snakemake,
    and its benchmark stage then started the running one's jobs beside them (exit 0; the first run failed on a
    fine-tuning folder the other held). A run that ends now removes its own lock files and record only; `snakemake
    --unlock` still removes every lock."""
    import socket

    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    host = socket.gethostname()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        for kind in ("input", "output"):
            (locks / f"0.{kind}.lock").write_text(f"{tmp_path}/elsewhere\n")
        (locks / f"s2dc-owner-{host}-{live.pid}").write_text(f"{host} {live.pid} 0.input.lock 0.output.lock\n")
        run = snakemake(tmp_path, "--cores", "1", "--config", "scale=smoke", "--", "resources/smoke/btcv/dataset.json")
        assert run.returncode == 0, run.stderr[-3000:]
        assert sorted(p.name for p in locks.iterdir()) == ["0.input.lock", "0.output.lock",
                                                            f"s2dc-owner-{host}-{live.pid}"]
        unlock = snakemake(tmp_path, "--unlock", "--config", "scale=smoke")
        assert unlock.returncode == 0, unlock.stderr[-3000:]
        assert not locks.exists() or not any(locks.iterdir())
    finally:
        live.kill()
        live.wait()


def test_lock_recovery_keeps_the_locks_of_a_dead_run_whose_jobs_still_run(tmp_path, caplog):
    """`kill -9` of Snakemake alone leaves the jobs it started running. Its locks were removed all the same, so the
    rerun (after an option changed) started the same job again beside the survivor: a pretraining of other options in
    another run folder, both exporting to one encoder.pt, and the survivor's, finishing last, was kept as the new
    run's, with exit 0. A later parse now refuses while a process carrying the dead run's mark still runs, naming it,
    and keeps the dead run's locks; once it has ended, they are removed."""
    import socket

    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    for kind in ("input", "output"):
        (locks / f"0.{kind}.lock").write_text(f"{tmp_path}/out0\n")
    (locks / f"s2dc-owner-{host}-{dead.pid}").write_text(f"{host} {dead.pid} 0.input.lock 0.output.lock\n")
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                           env={**os.environ, "S2DC_SNAKEMAKE_RUN": f"{host}-{dead.pid}"})
    try:
        plan = snakemake(tmp_path, "--config", "scale=smoke", "-n")
        out = plan.stdout + plan.stderr + caplog.text  # Snakemake logs the error to its logger
        assert plan.returncode != 0
        assert f"jobs it started still run: pid {job.pid} (" in out and "Nothing was run" in out, out[-3000:]
        assert sorted(p.name for p in locks.iterdir()) == ["0.input.lock", "0.output.lock",
                                                            f"s2dc-owner-{host}-{dead.pid}"]
    finally:
        job.kill()
        job.wait()
    plan = snakemake(tmp_path, "--config", "scale=smoke", "-n")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert f"Removing the lock of a Snakemake run that no longer exists ({host} {dead.pid})" in plan.stderr
    assert not (locks / "0.output.lock").exists()


def test_a_release_moved_to_another_disk_and_linked_again_is_converted_again(tmp_path):
    """`data/raw/btcv` a link to another disk: the converted dataset.json lists the release's files through the
    link's resolved target. Moved to a second disk with its times (`cp -a`, `rsync -a`), the link re-pointed and the
    first copy removed, the release kept its fingerprint, so Snakemake had nothing to do and every job read files
    that were gone (a review found it). The path through the link is part of the conversion's stamp now."""
    from test_registry import btcv_release

    disk1, disk2 = tmp_path / "disk1" / "btcv", tmp_path / "disk2" / "btcv"
    btcv_release(disk1)
    work = tmp_path / "work"
    (work / "data" / "raw").mkdir(parents=True)
    link = work / "data" / "raw" / "btcv"
    link.symlink_to(disk1)
    changed = copy.deepcopy(PARAMS)
    changed["scales"]["smoke"]["raw"] = "data/raw"
    changed["scales"]["smoke"]["datasets"]["btcv"] = {"source": "real"}
    config = write_params(tmp_path / "real_btcv.yaml", changed)
    target = "resources/smoke/btcv/dataset.json"
    done = snakemake(work, "--cores", "1", target, "--config", "scale=smoke", configfile=config)
    assert done.returncode == 0, done.stderr[-3000:]
    assert snakemake(work, "-n", target, "--config", "scale=smoke", configfile=config).returncode == 0

    shutil.copytree(disk1, disk2, copy_function=shutil.copy2)  # times kept
    link.unlink()
    link.symlink_to(disk2)
    shutil.rmtree(disk1)
    plan = snakemake(work, "-n", target, "--config", "scale=smoke", configfile=config)
    assert plan.returncode == 0 and re.search(r"^prepared_dataset\s+1$", plan.stdout, flags=re.M), plan.stdout[-1500:]
    done = snakemake(work, "--cores", "1", target, "--config", "scale=smoke", configfile=config)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((work / target).read_text())
    assert all(((work / target).parent / case["image"]).is_file() for case in doc["training"])


def test_a_project_moved_with_its_release_outside_is_converted_again(tmp_path):
    """`raw:` an absolute folder outside the repository (the README allows it), no link: the dataset.json lists the
    release's files relative to resources/<scale>/<name>. The project moved to another depth (`mv`: times and
    .snakemake kept), those paths pointed nowhere while Snakemake had nothing to do (a review of the fix above found
    it). For a release outside the project the path to it is part of the conversion's stamp."""
    from test_registry import btcv_release

    release = btcv_release(tmp_path / "disk" / "raw" / "btcv")
    work = tmp_path / "home" / "proj"
    work.mkdir(parents=True)
    changed = copy.deepcopy(PARAMS)
    changed["scales"]["smoke"]["raw"] = str(release.parent)
    changed["scales"]["smoke"]["datasets"]["btcv"] = {"source": "real"}
    config = write_params(tmp_path / "real_btcv.yaml", changed)
    target = "resources/smoke/btcv/dataset.json"
    done = snakemake(work, "--cores", "1", target, "--config", "scale=smoke", configfile=config)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Nothing to be done" in snakemake(work, "-n", target, "--config", "scale=smoke", configfile=config).stdout

    moved = tmp_path / "home" / "projects" / "2026" / "proj"
    moved.parent.mkdir(parents=True)
    shutil.move(work, moved)  # a rename: times kept
    plan = snakemake(moved, "-n", target, "--config", "scale=smoke", configfile=config)
    assert plan.returncode == 0 and re.search(r"^prepared_dataset\s+1$", plan.stdout, flags=re.M), plan.stdout[-1500:]
