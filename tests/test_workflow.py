"""Snakemake conventions: the default profile, commands that need no --cores, rule threads and resources."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from conftest import copy_run, copy_tracked, params_error, REPO, snakemake


def test_bare_snakemake_reads_the_default_profile_and_plans_the_paper_scale_without_data(tmp_path):
    """`snakemake` with no --profile picks up profiles/default beside the Snakefile (rerun-incomplete etc.);
    at scale paper it plans every job of the benchmark and of the two second targets with none of the real data
    present (each release is checked in its own job: test_pipeline.py); profiles/slurm sends every job that asks
    for a GPU to its GPU partition."""
    import yaml

    run = snakemake(tmp_path, "-n", "all", "ablation", "sweep", "--config", "scale=paper")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert f"workflow specific profile {REPO / 'profiles/default'}" in out
    # The full benchmark: 13 releases (3 of them open archives, downloaded first), one encoder per modality,
    # 10 datasets x {scratch, s2dc} x 3 label ratios x 3 seeds, the frozen-encoder protocol on the 10 datasets,
    # the structure figures of BTCV, one table. The loss ablation: 4 more variants pretrained on 2 pools (CT, PET)
    # and fine-tuned on BTCV and AutoPET at 100 % x 3 seeds, probed on both, drawn on BTCV (the one dataset of
    # probe.figures among them). The sweep: 4 workers and the export.
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", run.stdout, flags=re.M))
    assert {k: int(v) for k, v in counts.items()} == {
        "download_archive": 3, "prepared_dataset": 13, "pretrain": 3 + 8, "finetune": 180 + 24, "probe": 10,
        "structure_figures": 1, "benchmark_table": 1, "benchmark_plots": 1, "all": 1,
        "ablation_probe": 2, "ablation_figures": 1, "ablation_table": 1, "ablation": 1,
        "sweep_worker": 4, "sweep_export": 1, "sweep": 1, "total": 256}, run.stdout[-2000:]

    # On a cluster a job that asks for GPUs (sbatch --gpus, from its `gpu` resource) must go to a partition that has
    # them: sbatch refuses `--gpus` on a partition without GPUs.
    gpu_rules = set(re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: .*\bgpu=[1-9]", run.stdout, flags=re.M))
    assert {"pretrain", "finetune", "probe", "ablation_probe", "ablation_figures", "sweep_worker"} <= gpu_rules
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())

    def partition(rule):
        return profile.get("set-resources", {}).get(rule, {}).get("slurm_partition",
                                                                   profile["default-resources"]["slurm_partition"])

    assert {rule: partition(rule) for rule in gpu_rules} == {rule: "gpu" for rule in gpu_rules}


def test_dag_and_report_need_no_cores(tmp_path, smoke_run):
    """`--dag` and `--report` work without --cores and without the default profile (which sets cores); the report
    of the smoke run with its two second targets (ablation, sweep) holds the benchmark table and figures, the probe
    table and structure figures, the ablation table and every variant's structure figures, the sweep's table and
    figures, with their captions; then
    changing one variant's loss overrides replans only that variant's jobs, and spelling options another way (`0`
    for a float, a default written out) or changing a run-local option (how often a job logs or saves, its loader
    processes) replans none, the sweep included."""
    import yaml

    work = copy_run(smoke_run, tmp_path / "work")
    dag = snakemake(tmp_path, "--dag", "--workflow-profile", "none", "--config", "scale=smoke")
    second = snakemake(work, "--config", "scale=smoke", "--cores", "2", "ablation", "sweep")
    assert second.returncode == 0, second.stderr[-3000:]
    report = snakemake(work, "--config", "scale=smoke", "--report", "report.html", "--workflow-profile", "none",
                       "all", "ablation", "sweep")  # targets after an option of one value: --config takes several
    assert dag.returncode == 0, dag.stderr[-3000:]
    assert dag.stdout.lstrip().startswith("digraph") and "pretrain" in dag.stdout
    assert report.returncode == 0, report.stderr[-3000:]
    html = (work / "report.html").read_text()
    assert "Structure awareness" in html and "similarity.png" in html and "tsne.png" in html
    assert "white cross" in html  # the caption of the similarity map
    assert "Loss ablation" in html and "ablation.html" in html and "Kendall" in html
    assert "label_ratio.png" in html and "synthetic_btcv.png" in html and "hollow and dashed on the same axis" in html
    assert "benchmark.html" in html and "frozen-encoder protocol" in html
    assert "effect.png" in html and "does pretraining show" in html  # the verdicts' figure, with its caption
    assert "Sweep" in html and "trials.html" in html and "parallel_coordinate.png" in html and "median pruner" in html
    budget = yaml.safe_load((REPO / "params.yaml").read_text())["scales"]["smoke"]["sweep"]["budget"]
    best = yaml.safe_load((work / "results/smoke/sweep/best.yaml").read_text())
    assert best["budget"] == best["finished"] == budget and set(best["best"]["params"]) == {"pretrain"}
    figures = work / "results/smoke/ablation/figures/btcv"
    assert (figures / "similarity.png").stat().st_size > 0 and (figures / "tsne.png").stat().st_size > 0
    assert html.count("similarity.png") >= 2  # the benchmark's and the variants' structure figures
    table = (work / "results/smoke/ablation/ablation.md").read_text()
    assert "| lg | L_g | dual_softmax |" in table and "83.43 (#2)" in table and "84.14 (#1)" in table

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    respelled = copy.deepcopy(params)
    respelled["variants"]["lg"] = {"weight_p2p": 0, "weight_p2s": 0}  # params.yaml: 0.0, the same run
    smoke = respelled["scales"]["smoke"]  # defaults written out (s2dc.train.config / finetune_config): the same runs
    smoke["pretrain"]["options"]["optim"]["batch_size"] = 1
    smoke["finetune"]["options"]["train"]["flip_prob"] = 0.1
    smoke["finetune"]["options"]["eval"]["overlap"] = 0.5
    smoke["pretrain"]["options"]["run"].update(log_every=7, checkpoint_every=50)  # how a job runs, not what it computes
    smoke["finetune"]["options"]["train"]["log_every"] = 3
    smoke["finetune"]["options"]["data"]["workers"] = 1
    params["variants"]["lg"] = {**params["variants"]["lg"], "global_temperature": 0.5}
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(params, sort_keys=False))  # same order: same params
    (tmp_path / "respelled.yaml").write_text(yaml.safe_dump(respelled, sort_keys=False))
    same = snakemake(work, "--config", "scale=smoke", "-n", "all", "ablation", "sweep",
                     configfile=tmp_path / "respelled.yaml")
    assert same.returncode == 0 and "Nothing to be done" in same.stdout + same.stderr, same.stdout[-3000:]
    replan = snakemake(work, "--config", "scale=smoke", "-n", "ablation", configfile=tmp_path / "changed.yaml")
    jobs = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", replan.stdout, flags=re.M)}
    assert jobs == {"pretrain": 1, "finetune": 1, "ablation_probe": 1, "ablation_figures": 1, "ablation_table": 1,
                    "ablation": 1, "total": 6}, \
        replan.stdout[-3000:]


def test_converting_a_release_is_a_cluster_job_not_a_login_node_one():
    """On a cluster the `localrules` run on the submit (login) node: only jobs that are quick or need the internet
    belong there. Converting a release is neither (CC-CCII: the slices of ~4,000 scans stacked into volumes), so
    `prepared_dataset` is sent to the cluster like the other stages, with its own memory and run time."""
    snakefile = (REPO / "Snakefile").read_text()
    block = re.search(r"^localrules:\n((?:    \w+,\n)+)", snakefile, flags=re.M)
    local = set(re.findall(r"(\w+),", block.group(1)))
    assert "download_archive" in local and "all" in local  # the internet; nothing to compute
    assert "prepared_dataset" not in local, sorted(local)
    rule = (REPO / "workflow/rules/data.smk").read_text().split("rule prepared_dataset:")[1].split("\nrule ")[0]
    assert re.search(r"resources:\n\s+mem_mb=\d+,\n\s+runtime=\d+", rule), rule


def test_a_user_with_one_real_dataset_runs_just_its_rows(tmp_path):
    """`--config only=... methods=...` plans only those rows and what they need: MSD Spleen from scratch needs
    its download and conversion; BTCV with S²DC also the CT pool and its encoder; a wrong name is refused."""
    import yaml

    runs = {
        "spleen": ("only=msd_spleen", "methods=scratch"),
        "btcv": ("only=btcv",),
    }
    for name in runs:
        (tmp_path / name).mkdir()
    counts = {}
    for name in ("spleen", "btcv"):
        run = snakemake(tmp_path / name, "-n", "--config", "scale=paper", *runs[name])
        assert run.returncode == 0, run.stderr[-2000:]
        counts[name] = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", run.stdout, flags=re.M)}
        said = "no probe and no structure figure planned: they read the s2dc encoder"  # said, not silently left out
        assert (said in run.stderr) == (name == "spleen"), run.stderr[-2000:]
    assert counts["spleen"] == {"download_archive": 1, "prepared_dataset": 1, "finetune": 9, "benchmark_table": 1,
                                "benchmark_plots": 1, "all": 1, "total": 14}
    assert counts["btcv"] == {"prepared_dataset": 2, "pretrain": 1, "finetune": 18, "probe": 1, "structure_figures": 1,
                              "benchmark_table": 1, "benchmark_plots": 1, "all": 1, "total": 26}
    # refused when the workflow is parsed (in-process; Snakemake stops on these checks: test_pipeline.py)
    out = params_error(yaml.safe_load((REPO / "params.yaml").read_text()), scale="paper", only="btcv,spleen")
    assert "--config only=btcv,spleen" in out and "got ['spleen']" in out


def test_a_forced_download_keeps_a_release_extracted_by_hand(tmp_path):
    """The download job's output is s2dc's record beside the release, not a file of it: `--forcerun
    download_archive` (or -F) deletes that record and runs `s2dc download` again, which finds the release complete
    and records it anew, every file of it as it was (the job's output was the release's own dataset.json, which
    Snakemake deleted first: the release was then refused as one s2dc did not extract)."""
    task = tmp_path / "data/raw/msd_spleen/Task09_Spleen"
    (task / "imagesTr").mkdir(parents=True)
    (task / "dataset.json").write_text('{"name": "Spleen"}\n')
    (task / "imagesTr" / "spleen_2.nii.gz").write_bytes(b"a volume extracted by hand")
    before = {p: p.read_bytes() for p in task.rglob("*") if p.is_file()}
    record = "data/raw/msd_spleen/.Task09_Spleen.extracted.json"
    for extra in ((), ("--forcerun", "download_archive")):
        run = snakemake(tmp_path, "--cores", "1", record, *extra, "--config", "scale=paper")  # the target after
        # an option of one value (--configfile and --config take several)
        assert run.returncode == 0, run.stderr[-3000:]
        assert (tmp_path / record).is_file() and {p: p.read_bytes() for p in before} == before
    assert "download_archive" in run.stdout + run.stderr  # the forced run ran the job


def test_quick_spans_the_benchmark_and_smoke_every_task_and_modality():
    """The embedded default has all ten rows and one encoder per modality; the smoke DAG the tests run has every
    task and every modality at least once (its end-to-end run: test_pipeline.py)."""
    import yaml

    from s2dc.data import registry

    scales = yaml.safe_load((REPO / "params.yaml").read_text())["scales"]
    quick = scales["quick"]
    assert sorted(quick["experiments"]["datasets"]) == sorted(registry.downstream_names())
    assert sorted(quick["pretrain"]["modalities"]) == sorted(registry.MODALITIES)
    smoke = scales["smoke"]["experiments"]["datasets"]
    assert {registry.get(d).task for d in smoke} == set(registry.TASK_METRICS)
    assert {registry.get(d).modality for d in smoke} == set(registry.MODALITIES)
    assert sorted(scales["smoke"]["pretrain"]["modalities"]) == sorted(registry.MODALITIES)


def test_probe_stage_of_must_name_an_experiment_dataset():
    """probe.stage_of is checked when the workflow is parsed, naming the stray key (in-process: the checks
    conftest.params_error runs; Snakemake stops on them: test_pipeline.py)."""
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["scales"]["smoke"]["probe"]["stage_of"] = {"msd_lung": 1}  # not a smoke experiment
    assert "probe.stage_of names ['msd_lung']" in params_error(params, scale="smoke")


def test_structure_figures_anchor_on_a_label_or_on_a_twins_anatomy(tmp_path):
    """probe.figures names a class of the dataset's labels, or {structure, labels: anatomy} a tissue of its twin's
    anatomy map (quick: white matter on the BraTS 2021 twin); anything else stops the parse, naming the key.
    The probe's and the figures' seed and the t-SNE's token cap come from params.yaml through the rules' commands
    (never from a command-line default that no code hash covers), so that changing one reruns the jobs."""
    import yaml

    plan = snakemake(tmp_path, "-n", "-p", "--forceall", "--config", "scale=quick", "--cores", "1",
                     "results/quick/figures/brats21/similarity.png", "results/quick/probe/btcv.json")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "--structure 'white matter' --labels anatomy" in plan.stdout
    probes = [line for line in plan.stdout.splitlines() if "s2dc probe" in line]
    figures = [line for line in plan.stdout.splitlines() if "s2dc figures" in line]
    assert probes and figures and all(" --seed 0 " in c for c in probes + figures), probes + figures
    assert all(re.search(r" --tsne-tokens \d+ ", c) for c in figures), figures
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    bad = {"tissue": ({"structure": "liver", "labels": "tissue"}, "probe.figures.btcv.labels: 'tissue' is not a map of btcv's cases"),
           "not_drawn": ({"structure": "white matter", "labels": "anatomy"}, "'anatomy' is not a map of btcv's cases"),
           "not_a_label": ("white matter", "'white matter' is not a class of btcv's 'label' map")}
    for name, (entry, message) in bad.items():  # refused when the workflow is parsed (in-process)
        params["scales"]["smoke"]["probe"]["figures"] = {"btcv": entry}
        out = params_error(params, scale="smoke")
        assert message in out, (name, out[-2000:])


def test_the_sweep_study_changes_with_the_data_it_runs_on(tmp_path):
    """A sweep never reuses trials run on other data: changing how the pool or the sweep's dataset is made names a
    new study (the workers and the export all get it); changing a dataset the sweep does not read keeps the name."""
    import yaml

    def study(name, change=None):
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        if change:
            params["scales"]["smoke"]["datasets"][change]["seed"] += 1
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        plan = snakemake(tmp_path, "-n", "-p", "--forceall", "--config", "scale=smoke", "--cores", "1", "sweep",
                         configfile=tmp_path / f"{name}.yaml")
        assert plan.returncode == 0, plan.stderr[-3000:]
        names = set(re.findall(r"--study '?(s2dc-smoke-\w+)", plan.stdout))
        assert len(names) == 1 and plan.stdout.count(next(iter(names))) >= 3, plan.stdout[-3000:]  # 2 workers, export
        return names.pop()

    same = study("same")
    assert study("pool", "ct_pool") != same and study("data", "btcv") != same
    assert study("other", "udpet") == same


def test_dvc_tracks_every_variant_the_benchmark_may_pretrain():
    """experiments.methods may name any variant; its loss options then shape the benchmark's encoders, so DVC's
    pretraining stage tracks all of `variants` (not only variants.s2dc), as the loss ablation's does; the fine-tuning
    code hash covers the defaults it fills in, and the sweep's study name its own code."""
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert "variants" in stages["pretrain"]["params"], stages["pretrain"]["params"]
    common = (REPO / "workflow/rules/common.smk").read_text()
    assert re.search(r'"finetune": \[[^]]*"s2dc.downstream.defaults"', common)
    study = common.split("def sweep_study")[1].split("\ndef ")[0]
    assert "CODE['sweep']" in study, study


def test_dvcs_data_stage_tracks_where_the_releases_are_read_from():
    """A dataset converted from its release is read from scales.<scale>.raw (a Snakemake param of the conversion):
    DVC's data stage tracks that key, and every scale sets it (DVC refuses a params entry that params.yaml lacks)."""
    import yaml

    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["data"]
    assert "scales.${scale}.raw" in stage["params"], stage["params"]
    scales = yaml.safe_load((REPO / "params.yaml").read_text())["scales"]
    assert all(isinstance(scales[s].get("raw"), str) for s in scales), {s: scales[s].get("raw") for s in scales}


def test_the_sweeps_dvc_outputs_are_made_whatever_the_study_storage():
    """sweep.storage may be a database URL (a cluster's sweep); DVC's sweep stage then must not expect a journal
    file: its outputs are what the export writes (the study's storage is the workers', not an output)."""
    import yaml

    stage = yaml.safe_load((REPO / "experiments/dvc.yaml").read_text())["stages"]["sweep"]
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"]]
    assert outs and not [o for o in outs if "journal" in o], outs
    assert {"results/${scale}/sweep/trials.csv", "results/${scale}/sweep/best.yaml"} <= set(outs)


def test_the_architecture_is_written_once(tmp_path):
    """Fine-tuning takes the network's sizes from pretrain.options.encoder (the scratch run too); a size repeated
    under finetune.options.model is refused, naming the key."""
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    encoder = params["scales"]["smoke"]["pretrain"]["options"]["encoder"]
    plan = snakemake(tmp_path, "-n", "-p", "--config", "scale=smoke", "--forceall")
    commands = [line for line in plan.stdout.splitlines() if "s2dc finetune" in line]
    assert commands and all(f"--model.feature_size {encoder['feature_size']} " in c for c in commands)
    assert all("--model.num_heads " + " ".join(map(str, encoder["num_heads"])) in c for c in commands)
    params["scales"]["smoke"]["finetune"]["options"]["model"] = {"feature_size": 24}
    assert "finetune.options.model.feature_size: the architecture is set once" in params_error(params, scale="smoke")


def test_the_workflow_lints_clean(tmp_path):
    """`snakemake --lint` finds nothing (an acceptance point): e.g. a rule's shell text reading a global of the
    Snakefile instead of its params, or a docstring that the linter takes for a rule beside functions."""
    lint = snakemake(tmp_path, "--lint")
    out = lint.stdout + lint.stderr
    assert lint.returncode == 0 and "Congratulations, your workflow is in a good condition" in out, out[-3000:]


def test_the_commands_get_each_option_of_its_declared_type():
    """An integer written for a float option reaches the command as that float (and an integer option stays one),
    so `0` and `0.0` in params.yaml are one command line: Snakemake reruns nothing for it."""
    from s2dc.workflow_checks import typed_options

    written = {"train": {"lr": 1, "flip_prob": 0, "steps": 32, "warmup_steps": 4}, "model": {"num_heads": [1, 2, 3, 4]}}
    typed = typed_options("finetune", written)
    assert typed == {"train": {"lr": 1.0, "flip_prob": 0.0, "steps": 32, "warmup_steps": 4},
                     "model": {"num_heads": [1, 2, 3, 4]}}
    assert [type(v) for v in typed["train"].values()] == [float, float, int, int]
    assert typed_options("pretrain", {"loss": {"weight_p2p": 0}}) == {"loss": {"weight_p2p": 0.0}}
    assert str(typed_options("pretrain", {"loss": {"weight_p2p": 0}})["loss"]["weight_p2p"]) == "0.0"


def test_an_option_written_as_its_default_is_left_off_the_command_unless_it_overrides_something():
    """A default written out in params.yaml (pretraining's batch size 1, fine-tuning's flip probability 0.1) gives the
    command line of the unwritten one, so that Snakemake reruns nothing for it. Kept: a value equal to the default that
    overrides the options before it (the dataset's intensity preset, `base`), and the options that the fine-tuning
    command fills from elsewhere when they are absent (the network's sizes from the encoder file, the intensity from
    the dataset's preset): there, absent is not the default."""
    from s2dc.workflow_checks import typed_options

    assert typed_options("pretrain", {"optim": {"batch_size": 1, "steps": 5, "warmup_steps": 1},
                                      "run": {"log_every": 10}}) == {"optim": {"steps": 5, "warmup_steps": 1}}
    assert typed_options("finetune", {"train": {"flip_prob": 0.1, "lr": 1}}) == {"train": {"lr": 1.0}}
    zscore = {"preprocess": {"intensity": "zscore"}}  # the MRI pool's preset; "ct" is the command's default
    assert typed_options("pretrain", {"preprocess": {"intensity": "ct"}}, base=zscore) == \
        {"preprocess": {"intensity": "ct"}}
    assert typed_options("pretrain", {"preprocess": {"intensity": "zscore"}}, base=zscore) == {}
    needed = {"views": {"roi_size": [64, 64, 32], "grid": 2}}  # without roi_size: 48-voxel crops, refused
    assert typed_options("pretrain", needed) == needed
    architecture = {"feature_size": 48, "num_heads": [3, 6, 12, 24], "window_size": 7}  # FinetuneConfig's defaults
    assert typed_options("finetune", {"model": architecture, "preprocess": {"intensity": "ct", "a_min": -1000}}) == \
        {"model": architecture, "preprocess": {"intensity": "ct", "a_min": -1000.0}}


def test_the_run_folder_of_a_pretraining_tells_precision_and_device_apart():
    """Where a pretraining runs and in which precision change its numbers, though its run identity leaves them out
    (they are the machine's): bf16 and fp32 runs, or a CPU and a CUDA one, get folders of their own, so switching
    back finds the finished run; written as their default, `auto`, they keep the folder of the unwritten ones."""
    import yaml

    from s2dc.workflow_checks import pretrain_run_options

    params = {**yaml.safe_load((REPO / "params.yaml").read_text()), "scale": "smoke"}

    def options(**run):
        changed = copy.deepcopy(params)
        changed["scales"]["smoke"]["pretrain"]["options"]["run"].update(run)
        return pretrain_run_options(changed, "s2dc", "CT")

    plain = options()
    assert options(amp="auto", device="auto") == plain
    runs = [options(amp="bf16"), options(amp="off"), options(device="cpu"), options(device="cuda")]
    assert all(run != plain for run in runs) and len({str(sorted(run.items())) for run in runs}) == 4


def test_variants_are_planned_in_their_own_folders_and_checked(tmp_path):
    """The ablation target pretrains only the variants the benchmark lacks, under ablation/, with the variant's loss
    overrides on the command line; a method that is no variant, a bad loss override and an ablation dataset outside
    the experiments are refused, naming the key. A pretraining's run folder is named after what it computes, not
    after how params.yaml spells it: `0` for `0.0` (passed as 0.0), a default written out and a run-local option
    (how often it logs) keep the folder, so that `--run.resume if_unchanged` finds the finished run there and trains
    nothing; a changed loss weight is another run, in another folder."""
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    cases = {
        "method": (("scales", "smoke", "experiments", "methods"), ["scratch", "s2dc", "nope"],
                   "scales.smoke.experiments.methods: ['nope'] is not a pretraining variant"),
        "override": (("variants", "lg"), {"weight_p2p": -1.0},
                     "pretrain.options with variants.lg: loss.weight_p2p must be a finite number >= 0"),
        "dataset": (("scales", "smoke", "ablation", "datasets"), ["autopet"],
                    "scales.smoke.ablation.datasets names ['autopet']"),
        # a name of no dataset: named with its key (it was a traceback of the registry's lookup)
        "typo": (("scales", "smoke", "ablation", "datasets"), ["btcv", "BTCV"],
                 "scales.smoke.ablation.datasets names ['BTCV']"),
        "experiments typo": (("scales", "smoke", "experiments", "datasets"), ["btcv", "Btcv"],
                             "scales.smoke.experiments.datasets"),
    }
    refused = {}
    for name, (keys, value, message) in cases.items():
        bad = copy.deepcopy(params)
        node = bad
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
        refused[name] = params_error(bad, scale="smoke")  # when the workflow is parsed (in-process)
    respelled = copy.deepcopy(params)
    respelled["variants"]["lg"] = {"weight_p2p": 0, "weight_p2s": 0}  # params.yaml: 0.0
    respelled["variants"]["s2dc"] = {"weight_p2s": 0.25}  # the default 0.5: another run
    options = respelled["scales"]["smoke"]["pretrain"]["options"]
    options["loss"]["global_temperature"] = 0.9  # LossConfig's default, written out
    options["run"]["log_every"] = 5
    (tmp_path / "respelled.yaml").write_text(yaml.safe_dump(respelled, sort_keys=False))
    (tmp_path / "other").mkdir()
    other = snakemake(tmp_path / "other", "--config", "scale=smoke", "-n", "-p", "--forceall", "ablation",
                      configfile=tmp_path / "respelled.yaml")
    plan = snakemake(tmp_path, "--config", "scale=smoke", "-n", "-p", "--forceall", "ablation")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert other.returncode == 0, other.stderr[-3000:]

    def run_folders(out: str) -> dict[str, str]:  # variant -> the run folder of its CT pretraining
        found = re.findall(r"--run\.out_dir (results/smoke/\S*pretrain/CT/(\w+)/runs/\w+)", out)
        return {variant: folder for folder, variant in found}

    folders, respelled_folders = run_folders(plan.stdout), run_folders(other.stdout)
    assert set(folders) == {"lg", "s2dc"} == set(respelled_folders), (folders, respelled_folders)
    assert respelled_folders["lg"] == folders["lg"] and respelled_folders["s2dc"] != folders["s2dc"]
    lg_respelled = [line for line in other.stdout.splitlines() if folders["lg"] in line and "--run.out_dir" in line]
    assert len(lg_respelled) == 1 and "--loss.weight_p2p 0.0 --loss.weight_p2s 0.0" in lg_respelled[0]
    assert "--run.log_every 5" in lg_respelled[0]  # a run-local option still reaches the command
    jobs = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", plan.stdout, flags=re.M)}
    # lg on CT (s2dc's encoder is the benchmark's), both variants fine-tuned on BTCV
    assert jobs["pretrain"] == 2 and jobs["finetune"] == 2 and jobs["ablation_table"] == 1, jobs
    pretrain = [line for line in plan.stdout.splitlines() if " pretrain " in line and "--run.out_dir" in line]
    lg = [c for c in pretrain if "results/smoke/ablation/pretrain/CT/lg/runs/" in c]
    assert len(lg) == 1 and "--loss.weight_p2p 0.0 --loss.weight_p2s 0.0" in lg[0]
    assert any("results/smoke/pretrain/CT/s2dc/runs/" in c and "--loss.weight_p2p" not in c for c in pretrain)
    assert "--terms lg=global:dual_softmax s2dc=global+p2p+p2s:dual_softmax" in plan.stdout
    for name, (_, _, message) in cases.items():
        assert message in refused[name], (name, refused[name][-2000:])


def test_a_users_file_where_a_job_writes_stops_the_workflow_before_snakemake_deletes_it(tmp_path, monkeypatch):
    """Snakemake deletes a job's outputs before it runs the job (a directory() output with everything in it), so the
    refusal of a user's file by `s2dc report`, `ablation-table`, `plots`, `probe`, `figures`, `sweep export`,
    `pretrain`, `finetune`, `synth` and `prepare` (notes named benchmark.md or probe/btcv.md, a curve table or a picture
    of one's own, a best.yaml edited by hand, one's own encoder.pt, summary.json, dvclive/ note, metrics.json or
    dataset.json, a table it wrote and the user edited since, the tables' record left with a merge's conflict markers)
    never sees it: the file
    was gone without a word. The workflow refuses at start instead, naming the file, and leaves it as it
    was; the committed tables, curves, probe results, figures and sweep export of the quick scale are its own.
    Two cases start Snakemake (the check is wired into every start); the others run the same check in-process, on the
    config Snakemake would hold (params.yaml validated by its schema, with --config scale=smoke)."""
    import hashlib
    import json

    import pytest
    import yaml
    from snakemake.utils import validate

    from s2dc.workflow_checks import ForeignOutputError, check_job_outputs

    results = "results/smoke"
    cases = {  # a user's file where a table or plot job writes
        "notes": (f"{results}/benchmark.md", "my notes on the benchmark\n"),
        "ablation": (f"{results}/ablation/ablation.md", "my notes on the ablation\n"),
        "curve": (f"{results}/curves/val_score/my_baseline.tsv", "step\tmine\n1\t0.5\n"),
        "figure": (f"{results}/figures/benchmark/notes.txt", "which figure goes in the paper\n"),
        "probe notes": (f"{results}/probe/btcv.md", "my notes on the probe\n"),
        "ablation probe": (f"{results}/ablation/probe/btcv.json", '{"my": "results"}\n'),
        "structure figure": (f"{results}/figures/btcv/tsne.png", "my own picture\n"),
        "best options": (f"{results}/sweep/best.yaml", "best:\n  value: 0.5  # tuned by hand\n"),
        "run metrics": (f"{results}/finetune/segmentation/btcv/s2dc/labels50pct/seed0/metrics.json", '{"dice": 0.5}\n'),
        "encoder": (f"{results}/pretrain/CT/s2dc/encoder.pt", "which encoder this was\n"),
        "summary": (f"{results}/pretrain/CT/s2dc/summary.json", '{"my": "summary"}\n'),
        "curves": (f"{results}/pretrain/MRI/s2dc/dvclive/notes.txt", "the loss looked odd at step 40\n"),
        "dataset json": ("resources/smoke/btcv/dataset.json", '{"name": "my own list of the cases"}\n'),
    }
    edited = {  # a table s2dc wrote there (recorded beside it by its SHA-256), edited by hand since
        "edited table": (f"{results}/benchmark.csv", "dataset,task,metric,method,label_ratio,mean\nbtcv,x,Dice,s2dc,0.5,71\n"),
        "edited ablation": (f"{results}/ablation/ablation.md", "Loss ablation (poster Table 2): mine, now\n"),
    }
    cases.update(edited)
    cases["broken record"] = (f"{results}/ablation/.s2dc-tables.json", '<<<<<<< HEAD\n{}\n=======\n{}\n>>>>>>> b\n')
    through_snakemake = ("notes", "dataset json")
    for name, (path, text) in cases.items():
        (tmp_path / name / path).parent.mkdir(parents=True)
        (tmp_path / name / path).write_text(text)
    for name, (path, text) in edited.items():
        written = hashlib.sha256(text.replace("71", "70").replace("mine, now", "ours").encode()).hexdigest()
        (tmp_path / name / path).with_name(".s2dc-tables.json").write_text(json.dumps({Path(path).name: [written]}))
    copy_tracked(tmp_path / "own", "results/quick")  # the committed tables, not a workspace's runs
    plans = {name: snakemake(tmp_path / name, "-n", "--config", "scale=smoke") for name in through_snakemake}
    own = snakemake(tmp_path / "own", "-n", "--config", "scale=quick")
    config = {**yaml.safe_load((REPO / "params.yaml").read_text()), "scale": "smoke"}
    validate(config, str(REPO / "workflow/schemas/params.schema.yaml"))
    for name, (path, text) in cases.items():
        if name in through_snakemake:
            plan = plans[name]
            out = plan.stdout + plan.stderr
            assert plan.returncode != 0, (name, out[-3000:])
        else:
            monkeypatch.chdir(tmp_path / name)
            with pytest.raises(ForeignOutputError) as refused:
                check_job_outputs(config)
            out = str(refused.value)
        assert path in out and "Snakemake deletes" in out, (name, out[-3000:])
        assert (tmp_path / name / path).read_text() == text, name
    assert own.returncode == 0, (own.stdout + own.stderr)[-3000:]


@pytest.mark.parametrize("path", ["results/smoke/sweep", "results/smoke/figures/btcv", "results/smoke/probe",
                                  "results/smoke/finetune/segmentation", "results/smoke/finetune/segmentation/btcv",
                                  "results/smoke/finetune/segmentation/btcv/scratch", "results/smoke/pretrain/CT/s2dc",
                                  "results/smoke/ablation/finetune/segmentation/btcv", "link:results/smoke/sweep",
                                  "link:results/smoke/pretrain"])
def test_a_file_where_the_workflow_writes_a_folder_stops_it_at_start(tmp_path, monkeypatch, path):
    """A file where a job's folder goes (the sweep's export, a dataset's structure figures): it passed the start
    check, and Snakemake's own traceback (NotADirectoryError) came at the job, after the jobs before it had run; now
    the start names it, and leaves it."""
    import yaml
    from snakemake.utils import validate

    from s2dc.workflow_checks import ForeignOutputError, check_job_outputs

    link, path = path.startswith("link:"), path.removeprefix("link:")
    (tmp_path / path).parent.mkdir(parents=True)
    if link:  # a link to a disk not mounted
        (tmp_path / path).symlink_to(tmp_path / "unmounted")
    else:
        (tmp_path / path).write_text("a note of mine\n")
    config = {**yaml.safe_load((REPO / "params.yaml").read_text()), "scale": "smoke"}
    validate(config, str(REPO / "workflow/schemas/params.schema.yaml"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ForeignOutputError, match=rf"'{path}' is a file \(or a link to nothing\) where the workflow "
                                                 "writes a folder"):
        check_job_outputs(config)
    assert (tmp_path / path).is_symlink() if link else (tmp_path / path).read_text() == "a note of mine\n"


def test_probe_results_and_figures_of_datasets_no_longer_in_the_experiments_are_named_as_left_over(tmp_path):
    """A dataset removed from the experiments (or from probe.figures, or the ablation) leaves its probe result and
    structure figures in results/<scale>/probe/ and figures/<dataset>/, beside the current ones and committed with
    them as a baseline (`git add dvc.lock results/<scale>`): the tables leave them out, but nothing said they are not
    of this params.yaml. The workflow names them at start (and deletes nothing); current ones are not named."""
    import hashlib
    import json
    import shutil

    results = tmp_path / "results/smoke"
    left = ["probe/msd_lung.json", "probe/msd_lung.md", "figures/brats21/similarity.png",
            "ablation/probe/cc_ccii.json"]
    current = ["probe/btcv.json", "probe/btcv.md", "ablation/probe/btcv.json"]
    table = "| encoder |\n"  # the probe result records the checksum of the table beside it (its own, not notes)
    probe_result = json.dumps({"source": "dataset.json", "metric": "balanced accuracy", "stage": 2, "encoders": {},
                               "table_sha256": hashlib.sha256(table.encode()).hexdigest()}) + "\n"
    for name in left + current:
        (results / name).parent.mkdir(parents=True, exist_ok=True)
        (results / name).write_text(probe_result if name.endswith(".json") else table)
    (results / "figures/btcv").mkdir()
    shutil.copy(REPO / "results/quick/figures/btcv/similarity.png", results / "figures/btcv/similarity.png")
    plan = snakemake(tmp_path, "-n", "--config", "scale=smoke")
    out = plan.stdout + plan.stderr
    assert plan.returncode == 0, out[-3000:]
    note = [line for line in out.splitlines() if "not outputs of the current params.yaml" in line]
    assert len(note) == 1, out[-3000:]
    assert all(f"results/smoke/{name.removesuffix('/similarity.png')}" in note[0] for name in left), note  # a folder
    assert not [name for name in [*current, "figures/btcv"] if f"results/smoke/{name}" in note[0]], note
    assert all((results / name).exists() for name in left + current)


def test_a_name_given_twice_in_only_or_methods_is_refused_at_parse():
    """`--config only=btcv,btcv` passed each run twice to the table job, which refused them ("a run counts once")
    after Snakemake had deleted the tables: refused when the workflow is parsed instead, naming the name."""
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    out = params_error(params, scale="smoke", only="btcv, btcv")
    assert "--config only=btcv, btcv" in out and "'btcv' twice" in out
    out = params_error(params, scale="smoke", methods="s2dc,scratch,s2dc")
    assert "--config methods=s2dc,scratch,s2dc" in out and "'s2dc' twice" in out


def test_dvcs_ablation_stage_tracks_the_grid_that_places_its_runs():
    """experiments.methods decides whether the ablation reuses the benchmark's encoder of a variant or pretrains its
    own under ablation/, and its datasets, label ratios and seeds whether it reuses a benchmark's fine-tuning (`tree`
    in common.smk): DVC's ablation stage tracks the whole section, as Snakemake's plan reads it
    (tests/test_dvc.py::test_each_stage_tracks_the_parameters_that_choose_its_jobs changes each)."""
    import yaml

    stage = yaml.safe_load((REPO / "experiments/dvc.yaml").read_text())["stages"]["ablation"]
    assert "scales.${scale}.experiments" in stage["params"], stage["params"]


def test_the_ablation_never_writes_into_the_benchmarks_tree(tmp_path):
    """`dvc repro`'s outputs (results/<scale>/finetune) are the benchmark's runs alone: an ablation run of a method
    the benchmark also has (s2dc) goes under ablation/finetune unless it is one of the benchmark's own runs (its
    dataset, label ratio and seed), which the ablation reuses. Here the ablation's 20 % is no ratio of the
    benchmark's (50 %): both variants' runs are under ablation/, and the table reads them there."""
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["scales"]["smoke"]["ablation"]["label_ratio"] = 0.2
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    plan = snakemake(tmp_path, "--config", "scale=smoke", "-n", "-p", "--forceall", "ablation",
                     configfile=tmp_path / "changed.yaml")
    assert plan.returncode == 0, plan.stderr[-3000:]
    outdirs = re.findall(r"--run\.out_dir (\S+)", "\n".join(line for line in plan.stdout.splitlines()
                                                             if "s2dc finetune" in line))
    assert sorted(outdirs) == [f"results/smoke/ablation/finetune/segmentation/btcv/{v}/labels20pct/seed0"
                               for v in ("lg", "s2dc")], outdirs
    table = [line for line in plan.stdout.splitlines() if "ablation-table" in line]
    assert table and "results/smoke/ablation/finetune/segmentation/btcv/s2dc/labels20pct/seed0/metrics.json" in table[0]
    assert "results/smoke/finetune/" not in plan.stdout.split("ablation-table", 1)[1].split("\n")[0]


def test_the_cluster_profile_is_given_as_the_workflow_profile():
    """Given with --profile, profiles/slurm is loaded beside profiles/default, whose `cores: all` wins and caps every
    job's threads (its sbatch --cpus-per-task) at the login node's cores; as --workflow-profile it replaces it. No
    command the project documents gives it with --profile (checked with the SLURM plugin and a recording sbatch:
    docs/slurm.md)."""
    import yaml

    assert yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())["cores"] == "all"
    assert "cores" not in yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    for name in ("README.md", "bench/slurm_check.sh", "profiles/slurm/config.yaml"):
        text = (REPO / name).read_text()
        assert "snakemake --workflow-profile profiles/slurm" in text and "snakemake --profile profiles/slurm" not in text


def test_a_missing_run_under_existing_tables_is_made_again(tmp_path, smoke_run):
    """A job interrupted after its output went (a forced rerun killed, Ctrl-C's clean-up) leaves the tables built on a
    metrics.json or encoder that no longer exists: Snakemake redoes a job for a missing file only when a target needs
    it, and the tables were up to date, so a rerun said "Nothing to be done", exit 0. The default target asks for
    every run, encoder and probe itself, so the rerun makes the missing ones and the tables after them again."""
    work = copy_run(smoke_run, tmp_path / "work")
    run = next((work / "results/smoke/finetune").rglob("metrics.json"))
    run.unlink()
    (work / "results/smoke/pretrain/PET/s2dc/encoder.pt").unlink()
    plan = snakemake(work, "-n", "--config", "scale=smoke")
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", plan.stdout, flags=re.M)}
    assert jobs.get("finetune", 0) >= 1 and jobs.get("pretrain") == 1 and jobs.get("benchmark_table") == 1, \
        plan.stdout[-3000:]
    assert str(run.relative_to(work)) in plan.stdout


def test_an_encoder_copied_from_another_pretraining_folder_stops_the_workflow(tmp_path, monkeypatch):
    """Snakemake never looks inside its outputs: the MRI encoder copied by hand over the PET one (or an ablation
    variant's over the benchmark's s2dc, or an export of one's own) is an export s2dc wrote, so the start check let it
    pass, and every PET fine-tuning and probe was redone from it as the PET encoder, exit 0. Each encoder.pt records
    the checkpoint it was exported from; one that its own folder's pretraining did not export (a checkpoint outside its
    runs/) stops the workflow, naming both; one exported there passes."""
    import pytest
    import torch
    import yaml
    from snakemake.utils import validate

    from s2dc.workflow_checks import ForeignOutputError, check_job_outputs

    def export(folder: str, source: str) -> None:
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": {"swinViT.patch_embed.proj.weight": torch.zeros(1)}, "encoder": {}, "preprocess": None,
                    "source": source, "step": 2, "which": "teacher"}, tmp_path / folder / "encoder.pt")

    config = {**yaml.safe_load((REPO / "params.yaml").read_text()), "scale": "smoke"}
    validate(config, str(REPO / "workflow/schemas/params.schema.yaml"))
    monkeypatch.chdir(tmp_path)
    export("results/smoke/pretrain/MRI/s2dc", "results/smoke/pretrain/MRI/s2dc/runs/6fad7f6635/checkpoints/step_2.pt")
    export("results/smoke/ablation/pretrain/CT/lg", "results/smoke/ablation/pretrain/CT/lg/runs/1/checkpoints/step_2.pt")
    check_job_outputs(config)  # each exported by its own folder's pretraining
    for folder, source in (("results/smoke/pretrain/PET/s2dc", "results/smoke/pretrain/MRI/s2dc/runs/6fad7f6635/"
                            "checkpoints/step_00000002.pt"),
                           ("results/smoke/pretrain/CT/s2dc", "results/smoke/ablation/pretrain/CT/lg/runs/1/checkpoints/"
                            "step_00000002.pt"),
                           ("results/smoke/pretrain/CT/s2dc", "/home/me/runs/ct/checkpoints/step_00100000.pt")):
        export(folder, source)
        with pytest.raises(ForeignOutputError) as refused:
            check_job_outputs(config)
        assert f"'{folder}/encoder.pt'" in str(refused.value) and source in str(refused.value), str(refused.value)
        (tmp_path / folder / "encoder.pt").unlink()
    check_job_outputs(config)


def test_a_dataset_can_have_fine_tuning_options_of_its_own(tmp_path):
    """scales.<scale>.datasets.<name>.finetune overrides the scale's fine-tuning options for that dataset's jobs only
    (scale paper: the release resamples BTCV to 1.5 mm isotropic, CC-CCII and BraTS 2023 not at all); an option the
    rule sets, a network size, a run-local option or fine-tuning options of a pretraining pool are refused, naming
    the key."""
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    smoke = params["scales"]["smoke"]
    smoke["datasets"]["btcv"]["finetune"] = {"preprocess": {"spacing": [2.0, 2.0, 2.5]}, "train": {"steps": 3}}
    config = tmp_path / "params.yaml"
    config.write_text(yaml.safe_dump(params))
    plan = snakemake(tmp_path, "-n", "-p", "--config", "scale=smoke", "--forceall", configfile=config)
    assert plan.returncode == 0, plan.stderr[-2000:]
    commands = [line for line in plan.stdout.splitlines() if "s2dc finetune" in line]
    btcv = [c for c in commands if "/btcv/dataset.json" in c]
    others = [c for c in commands if "/btcv/dataset.json" not in c]
    assert btcv and others
    assert all("--preprocess.spacing 2.0 2.0 2.5" in c and "--train.steps 3 " in c for c in btcv), btcv[0]
    assert not any("--preprocess.spacing" in c or "--train.steps 3 " in c for c in others), others[0]
    assert all("--train.steps 2 " in c for c in others)  # the scale's own

    for entry, message in [
        ({"btcv": {"train": {"steps": 0}}}, "scales.smoke.datasets.btcv.finetune: "),
        ({"btcv": {"data": {"label_ratio": 0.5}}}, "datasets.btcv.finetune.data.label_ratio: the workflow's finetune rule sets it"),
        ({"btcv": {"model": {"feature_size": 24}}}, "datasets.btcv.finetune.model.feature_size: the architecture is set once"),
        ({"btcv": {"data": {"workers": 2}}}, "datasets.btcv.finetune.data.workers: how a job runs, not what it computes"),
        ({"ct_pool": {"train": {"steps": 3}}}, "datasets.ct_pool.finetune: ct_pool is a pretraining pool"),
    ]:
        wrong = copy.deepcopy(params)
        for name, options in entry.items():
            wrong["scales"]["smoke"]["datasets"][name]["finetune"] = options
        assert message in params_error(wrong, scale="smoke")


def test_every_job_that_reads_a_registry_entry_carries_its_digest():
    """The registry's entries are data, left out of the code hash (s2dc.fingerprint.DATA_MODULES): a job that reads
    a dataset's entry carries that entry's digest (`entry`, registry.spec_digest), the tables and plots that of what
    they read of it (`registry`, registry.report_digest), so that an edited entry reruns its jobs and is never silently reused; the sweep's
    study name counts the entries of the pool and the dataset it runs on. A rule of s2dc code (code=CODE[...]) with
    neither would be such a job."""
    rules = {}
    for path in sorted((REPO / "workflow/rules").glob("*.smk")):
        for block in re.split(r"\n(?=rule \w+:)", path.read_text())[1:]:
            rules[re.match(r"rule (\w+):", block).group(1)] = block
    per_dataset = {"synthetic_dataset", "prepared_dataset", "pretrain", "finetune", "probe", "structure_figures",
                   "ablation_probe", "ablation_figures"}
    whole = {"benchmark_table", "benchmark_plots", "ablation_table"}
    for name in per_dataset:
        assert "entry=lambda w: entry(" in rules[name], name
    for name in whole:
        assert "registry=lambda w: report_entries(" in rules[name], name
    coded = {name for name, block in rules.items() if "code=CODE[" in block}
    assert coded - per_dataset - whole == {"sweep_export"}  # its study name (sweep_study) counts the entries
    assert "study=sweep_study()" in rules["sweep_export"] and "study=sweep_study()" in rules["sweep_worker"]
    common = (REPO / "workflow/rules/common.smk").read_text()
    study = common.split("def sweep_study")[1].split("\ndef ")[0]
    assert "entry(name)" in study, study


def test_dvcs_fine_tuning_stages_track_the_datasets_own_options():
    """A dataset's own fine-tuning options live in scales.<scale>.datasets (datasets.<name>.finetune): DVC's stages
    that fine-tune (benchmark, ablation, sweep) track that section, else `dvc repro` skipped them after such an edit
    (the twin made again is byte for byte the same, so `resources/` looked unchanged; found by review)."""
    import yaml

    stages = {**yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"],
              **yaml.safe_load((REPO / "experiments/dvc.yaml").read_text())["stages"]}
    for name in ("benchmark", "ablation", "sweep"):
        assert "scales.${scale}.datasets" in stages[name]["params"], (name, stages[name]["params"])


def test_a_launcher_spelled_another_way_reruns_no_pretraining(tmp_path, smoke_run):
    """`b17581b` named a pretraining's run folder after the launcher's words, so that `--nproc_per_node=4` for
    `--nproc_per_node 4` finds the same run; but the launcher as written was the job's param, so the respelling still
    reran every pretraining (exporting its encoder again) and, through the new encoder.pt, every fine-tuning, probe,
    figure and table after it (`snakemake -n` at smoke after a finished run: 15 jobs for `launcher: "s2dc "`)."""
    import yaml

    work = copy_run(smoke_run, tmp_path / "work")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for spelled in ("s2dc ", "'s2dc'", " s2dc"):
        params["scales"]["smoke"]["pretrain"]["launcher"] = spelled
        (tmp_path / "respelled.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        again = snakemake(work, "-n", "--config", "scale=smoke", configfile=tmp_path / "respelled.yaml")
        assert again.returncode == 0, again.stderr[-3000:]
        assert "Nothing to be done" in again.stdout + again.stderr, (spelled, again.stdout[-3000:])
    params["scales"]["smoke"]["pretrain"]["launcher"] = "python -m s2dc.cli"  # other words: another run
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    other = snakemake(work, "-n", "--config", "scale=smoke", configfile=tmp_path / "other.yaml")
    jobs = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", other.stdout, flags=re.M)}
    assert other.returncode == 0 and "Params have changed" in other.stdout and jobs.get("pretrain") == 3, \
        other.stdout[-3000:]


def test_a_twin_entry_reworded_without_change_reruns_nothing_and_names_no_new_study(tmp_path, smoke_run):
    """A synthetic dataset's entry was its twin job's param as written: its keys reordered, or `val_fraction: 0.25`
    (the default) left out, redrew the twin (the same bytes) and reran every job after it; and a `finetune: {}` on
    the sweep's dataset named a new sweep study (every trial again). None of these changes what is computed: nothing
    to be done, and the same study. A changed entry (another seed) still reruns its twin."""
    import yaml

    def plan(configfile):
        """One dry run of the default target and the sweep (which the smoke run did not run): its jobs, and the study
        each sweep job is given."""
        run = snakemake(work, "-n", "-p", "all", "sweep", "--config", "scale=smoke", configfile=configfile)
        assert run.returncode == 0, run.stderr[-3000:]
        jobs = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", run.stdout, flags=re.M)}
        return jobs, re.findall(r"--study (s2dc-smoke-\w+)", run.stdout)

    work = copy_run(smoke_run, tmp_path / "work")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    sweep_only, before = plan(None)
    assert set(sweep_only) == {"sweep_worker", "sweep_export", "sweep", "total"}, sweep_only  # `all`: nothing to do
    datasets = params["scales"]["smoke"]["datasets"]
    assert before and datasets["udpet"]["val_fraction"] == 0.25 and params["scales"]["smoke"]["sweep"]["dataset"] == "btcv"
    datasets["btcv"] = {"finetune": {}, **dict(reversed(datasets["btcv"].items()))}
    datasets["ct_pool"] = dict(reversed(datasets["ct_pool"].items()))
    datasets["udpet"] = {k: v for k, v in datasets["udpet"].items() if k != "val_fraction"}
    (tmp_path / "reworded.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert plan(tmp_path / "reworded.yaml") == (sweep_only, before)  # nothing of `all` to do, the same study
    datasets["btcv"]["seed"] += 1  # another twin: drawn again, and what reads it
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    jobs, other = plan(tmp_path / "other.yaml")
    assert jobs.get("synthetic_dataset") == 1 and other and other != before, jobs


def test_a_run_metrics_edited_by_hand_is_not_deleted_by_the_next_run(tmp_path, smoke_run):
    """A fine-tuning run's metrics.json records its result_sha256, and the report refuses it edited (as a probe result,
    `50a0d09`); but the start check knew a run's metrics.json by its keys alone: after a hand edit (a score corrected)
    and a change that reruns that run (its dataset's fine-tuning options), `snakemake` deleted the edited file before
    the job and wrote a new one, exit 0. It now stops at start, naming the file, and leaves it as it was."""
    import json

    import yaml

    work = copy_run(smoke_run, tmp_path / "work")
    run = "results/smoke/finetune/segmentation/btcv/scratch/labels50pct/seed0/metrics.json"
    doc = json.loads((work / run).read_text())
    doc["score"]["value"] = 99.0  # edited by hand
    edited = json.dumps(doc, indent=2)
    (work / run).write_text(edited)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["scales"]["smoke"]["datasets"]["btcv"]["finetune"] = {"train": {"lr": 2.0e-3}}
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    again = snakemake(work, "--cores", "1", run, "--config", "scale=smoke", configfile=tmp_path / "changed.yaml")
    out = again.stdout + again.stderr
    assert again.returncode != 0, out[-3000:]
    assert run in out and "result_sha256" in out and "Snakemake deletes" in out, out[-3000:]
    assert (work / run).read_text() == edited


def test_the_lock_file_of_the_plots_job_on_nfs_is_not_taken_for_a_users_file_at_the_next_start(tmp_path,
                                                                                                monkeypatch):
    """Where a folder's flock is refused (NFSv4: EBADF), `s2dc plots` locks `.s2dc.lock` in results/<scale>/curves,
    which the workflow's start check then took for a user's file there, refusing every later start (a review found
    it). An empty `.s2dc.lock` is s2dc's; anything else by that name is still refused."""
    import errno
    import fcntl
    import os
    import stat

    import pandas as pd
    import yaml
    from snakemake.utils import validate

    from s2dc.report.curves import write_curves
    from s2dc.workflow_checks import ForeignOutputError, check_job_outputs

    real = fcntl.flock

    def nfs4(fd, op):
        if stat.S_ISDIR(os.fstat(fd).st_mode) and op & fcntl.LOCK_EX:
            raise OSError(errno.EBADF, "Bad file descriptor")
        return real(fd, op)

    monkeypatch.setattr(fcntl, "flock", nfs4)
    config = {**yaml.safe_load((REPO / "params.yaml").read_text()), "scale": "smoke"}
    validate(config, str(REPO / "workflow/schemas/params.schema.yaml"))
    monkeypatch.chdir(tmp_path)
    curves = Path("results/smoke/curves")
    write_curves({"val_score/btcv.tsv": pd.DataFrame({"step": [1, 2], "s2dc": [0.5, 0.6]})}, curves)
    assert (curves / ".s2dc.lock").is_file()
    check_job_outputs(config)
    (curves / ".s2dc.lock").write_text("my notes\n")
    with pytest.raises(ForeignOutputError, match=r"\.s2dc\.lock"):
        check_job_outputs(config)
