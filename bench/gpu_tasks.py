"""Device check of every task's training path, with the options of a params.yaml scale (default `quick`).

    python bench/gpu_tasks.py --out DIR [--scale quick] [--device cuda] [--encoders DIR]
                              [--pretrain-steps 500] [--finetune-steps 32 160] [--seeds 0 1 2]
                              [--parallel 12] [--budget-s 480] [--no-probe]
                              [--datasets btcv msd_spleen ...] [--lpft 0.33] [--eval-every 128]
                              [--split-seed 1]
    python bench/gpu_tasks.py --summarise RUN1/gpu_tasks.json RUN2/gpu_tasks.json ...

What the scale's DAG does, with the `s2dc` command line and the scale's own options (params.yaml, read
through `s2dc.workflow_checks`, as the workflow reads them), but on one device and at one or several
fine-tuning budgets: the scale's synthetic twins (cases, shape, seed and validation share of params.yaml),
one S²DC encoder per modality (`s2dc pretrain` + `export-encoder`; or `--encoders DIR` holding
`encoder_<MODALITY>.pt`, e.g. the CPU pipeline's, and then `--pretrain-steps` runs one short pretraining
on the CT pool only, to check that path), every dataset fine-tuned from scratch and from its modality's
encoder for each seed and each budget of `--finetune-steps` (at the scale's lowest label ratio), and
the frozen-encoder protocol (`s2dc probe` at the scale's stages). Jobs run `--parallel` at a time (the
small models do not fill a GPU); a job still running when `--budget-s` is spent is stopped and
reported; whatever finished is summarised. `--lpft F` fine-tunes both arms with LP-FT (the encoder frozen for
the first F x steps, `train.frozen_encoder_steps`); `--eval-every N` validates every N steps too and the table
gives each of those steps (the run's schedule is its whole budget's); `--split-seed N` trains every seed on one
label-ratio subset (`data.split_seed`; default: each seed its own). `--summarise` pools records of one split only.

Writes DIR/gpu_tasks.json (per job: command, wall seconds, return code, metrics), DIR/gpu_tasks.md
(per dataset and budget: scratch and S²DC, mean ± sample sd over seeds, and whether S²DC is above
scratch by more than the larger of the two sds; the probes) and the logs under DIR/logs.
`--device cpu --scale smoke` tries the plumbing on a CPU in a minute or two.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from s2dc import workflow_checks as checks  # noqa: E402
from s2dc.workflow_checks import cli_arguments as cli  # noqa: E402
from s2dc.data import registry  # noqa: E402
from s2dc.downstream.tasks import TASKS  # noqa: E402
from s2dc.tune.space import merge_options  # noqa: E402


class Runner:
    """Runs ``s2dc`` commands with logs under out/logs, records each, and stops starting jobs after the budget."""

    def __init__(self, out: Path, budget_s: float):
        self.out, self.deadline, self.jobs, self.lock = out, time.monotonic() + budget_s, [], threading.Lock()
        (out / "logs").mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str, args: list[str], metrics: Path | None = None) -> dict:
        job = {"name": name, "command": "s2dc " + shlex.join(args)}
        left = self.deadline - time.monotonic()
        if left < 5:
            job.update(rc=None, status="not started (budget spent)")
            with self.lock:
                self.jobs.append(job)
            return job
        t0 = time.monotonic()
        with open(self.out / "logs" / f"{name}.log", "w") as log:
            try:
                rc = subprocess.run([sys.executable, "-m", "s2dc.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                                    timeout=left).returncode
                status = "ok" if rc == 0 else "failed"
            except subprocess.TimeoutExpired:
                rc, status = None, "stopped (budget spent)"
        job.update(rc=rc, status=status, wall_s=round(time.monotonic() - t0, 1))
        if rc == 0 and metrics is not None and metrics.exists():
            job["metrics"] = json.loads(metrics.read_text())
        with self.lock:  # the record so far, in case the machine is taken back before the end
            self.jobs.append(job)
            (self.out / "jobs.json").write_text(json.dumps(self.jobs, indent=1))
        print(f"{name}: {status} in {job.get('wall_s')} s", flush=True)
        return job


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def scores_by_step(metrics: dict) -> dict[int, float]:
    """``{step: score}`` of a fine-tuning's metrics.json: each validation of its history, in the score's unit."""
    score = metrics["score"]
    scale = 100.0 if TASKS[metrics["task"]].percent else 1.0
    by_step = {h["step"]: scale * h[score["key"]] for h in metrics.get("history", []) if score["key"] in h}
    return {**by_step, metrics["steps"]: score["value"]}


def summary(jobs: list[dict], datasets: list[str], budgets: list[int]) -> str:
    """Per dataset, budget and validation step: each arm's mean ± sample sd over seeds, the difference, whether it
    exceeds the larger sd, and the paired differences seed by seed (a seed fixes the subset, unless --split-seed
    did, and the decoder's first weights for both arms), in seed order whatever order the jobs finished in."""
    rows = ["| dataset | task | metric | budget | step | scratch | S²DC | S²DC − scratch | above by more than the larger sd "
            "| S²DC − scratch seed by seed |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name in datasets:
        spec = registry.get(name)
        for steps in budgets:
            runs = {m: {int(j["name"].rsplit("_", 1)[1]): scores_by_step(j["metrics"]) for j in jobs
                        if j["name"].startswith(f"ft{steps}_{name}_{m}_") and "metrics" in j} for m in ("scratch", "s2dc")}
            if not all(runs.values()):
                rows.append(f"| {name} | {spec.task} | {spec.metrics[0]} | {steps} | — | — | — | — | — | — |")
                continue
            common = sorted(set.intersection(*(set(r) for rs in runs.values() for r in rs.values())))
            paired = sorted(set(runs["scratch"]) & set(runs["s2dc"]))
            for step in common:
                scores = {m: [rs[seed][step] for seed in sorted(rs)] for m, rs in runs.items()}
                (ms, ss), (mp, sp) = mean_sd(scores["scratch"]), mean_sd(scores["s2dc"])
                n = min(len(v) for v in scores.values())
                above = "—" if n < 2 else ("yes" if mp - ms > max(ss, sp) else "no")
                pairs = " / ".join(f"{runs['s2dc'][seed][step] - runs['scratch'][seed][step]:+.1f}" for seed in paired)
                rows.append(f"| {name} | {spec.task} | {spec.metrics[0]} | {steps} | {step} "
                            f"| {ms:.2f} ± {ss:.2f} (n={len(scores['scratch'])}) "
                            f"| {mp:.2f} ± {sp:.2f} (n={len(scores['s2dc'])}) | {mp - ms:+.2f} | {above} "
                            f"| {pairs} (seeds {', '.join(map(str, paired))}) |")
    rows += ["", "| dataset | stage | probe: voxels / random / S²DC (balanced accuracy or R², %) |", "|---|---|---|"]
    for name in datasets:
        probe = next((j["metrics"] for j in jobs if j["name"] == f"probe_{name}" and "metrics" in j), None)
        if probe:
            text = " / ".join(f"{100 * probe['encoders'][e]['score']:.1f}" for e in ("voxels", "random", "s2dc"))
            rows.append(f"| {name} | {probe.get('stage', '—')} | {text} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="the folder written (required unless --summarise)")
    ap.add_argument("--summarise", type=Path, nargs="+", metavar="GPU_TASKS_JSON",
                    help="print the table of these runs' gpu_tasks.json together (seeds of one budget pooled) and exit")
    ap.add_argument("--scale", default="quick", help="the params.yaml scale whose datasets and options are used")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--encoders", type=Path, help="folder with encoder_<MODALITY>.pt: no pretraining of the three")
    ap.add_argument("--pretrain-steps", type=int, help="pretraining steps (default: the scale's)")
    ap.add_argument("--finetune-steps", type=int, nargs="+", help="fine-tuning budgets (default: the scale's)")
    ap.add_argument("--seeds", type=int, nargs="+", help="default: the scale's experiments.seeds")
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--budget-s", type=float, default=480)
    ap.add_argument("--no-probe", action="store_true", help="leave out the frozen-encoder protocol")
    ap.add_argument("--datasets", nargs="+", help="default: the scale's experiments.datasets")
    ap.add_argument("--lpft", type=float, default=0.0,
                    help="LP-FT: the encoder frozen for this fraction of each budget's steps (both arms)")
    ap.add_argument("--eval-every", type=int, default=0, help="validate every N steps too (default: the scale's)")
    ap.add_argument("--split-seed", type=int, help="one label-ratio subset for every seed (data.split_seed)")
    a = ap.parse_args()
    if a.summarise:
        records = [json.loads(f.read_text()) for f in a.summarise]
        splits = {str(f): r["args"].get("split_seed", "None") for f, r in zip(a.summarise, records)}
        if len(set(splits.values())) > 1:
            ap.error(f"records of different label-ratio subsets (--split-seed per record: {splits}) are not one "
                     "experiment's seeds; summarise each apart")
        jobs = [j for r in records for j in r["jobs"]]
        datasets = list(dict.fromkeys(n for r in records for n in yaml.safe_load(r["args"]["datasets"])))
        budgets = sorted({b for r in records for b in yaml.safe_load(r["args"]["finetune_steps"])})
        print(summary(jobs, datasets, budgets))
        return 0
    if a.out is None:
        ap.error("--out is required")
    config = yaml.safe_load((ROOT / "params.yaml").read_text())
    config["scale"] = a.scale
    p = config["scales"][a.scale]
    out, data = a.out.resolve(), a.out.resolve() / "data"
    run = Runner(out, a.budget_s)
    device = ["--run.device", a.device]
    pretrain_options = checks.variant_options(config, "s2dc")
    pretrain_options["data"] = {k: v for k, v in pretrain_options.get("data", {}).items() if k != "workers"}
    finetune_options = checks.finetune_options(config)
    finetune_options["data"] = {k: v for k, v in finetune_options.get("data", {}).items() if k not in ("cache_dir", "workers")}
    scale_steps = finetune_options["train"]["steps"]
    budgets = a.finetune_steps or [scale_steps]
    seeds = a.seeds if a.seeds is not None else p["experiments"]["seeds"]
    ratio = min(p["experiments"]["label_ratios"])
    datasets = list(a.datasets or p["experiments"]["datasets"])
    unknown = sorted(set(datasets) - set(p["experiments"]["datasets"]))
    if unknown or not 0 <= a.lpft < 1:
        ap.error(f"--datasets must be among {p['experiments']['datasets']} (got {unknown}); --lpft in [0, 1)")
    modalities = sorted({registry.get(n).modality for n in datasets})
    pools = [registry.pool_for(m) for m in modalities]
    probe = p["probe"]

    def synth(name: str) -> dict:
        spec = p["datasets"][name]
        held_out = ["--val-fraction", str(spec["val_fraction"])] if "val_fraction" in spec else []  # a pool: none
        return run(f"synth_{name}", ["synth", "--kind", name, "--out", str(data / name), "--seed", str(spec["seed"]),
                                     "--cases", str(spec["cases"]), "--shape", *map(str, spec["shape"]), *held_out])

    def pretrain(modality: str, steps: int | None, export_to: Path) -> dict:
        pool, workdir = registry.pool_for(modality), out / "pretrain" / modality
        options = merge_options(checks.preset_sections(pool), pretrain_options)  # each option once
        if steps:
            options = merge_options(options, {"optim": {"steps": steps}})
        job = run(f"pretrain_{modality}", ["pretrain", *cli(options), *device,
                                           "--run.progress", "false", "--data.workers", "2",
                                           "--data.source", str(data / pool / "dataset.json"),
                                           "--run.out_dir", str(workdir)], workdir / "summary.json")
        if job["rc"] == 0:
            run(f"export_{modality}", ["export-encoder", str(workdir), str(export_to)])
        return job

    encoders = a.encoders.resolve() if a.encoders else out

    def finetune(name: str, method: str, seed: int, steps: int) -> dict:
        init = "scratch" if method == "scratch" else str(encoders / f"encoder_{registry.get(name).modality}.pt")
        ft = out / "finetune" / f"{steps}_{name}_{method}_{seed}"
        warmup = min(steps - 1, max(1, round(finetune_options["train"].get("warmup_steps", 1) * steps / scale_steps)))
        own = {"train": {"steps": steps, "warmup_steps": warmup}}  # over the scale's options: each option once
        if a.lpft:
            own["train"]["frozen_encoder_steps"] = round(a.lpft * steps)
        if a.eval_every:
            own["eval"] = {"every": a.eval_every}
        if a.split_seed is not None:
            own["data"] = {"split_seed": a.split_seed}
        options = merge_options(merge_options(checks.preset_sections(name), finetune_options), own)
        return run(f"ft{steps}_{name}_{method}_{seed}", [
            "finetune", *cli(options), *device, "--data.workers", "2", "--data.label_ratio", str(ratio),
            "--run.seed", str(seed), "--run.method", method, "--run.progress", "false", "--model.init", init,
            "--data.source", str(data / name / "dataset.json"), "--run.out_dir", str(ft)], ft / "metrics.json")

    def frozen(name: str) -> dict:
        stage = probe.get("stage_of", {}).get(name, probe["stage"])
        encoder = encoders / f"encoder_{registry.get(name).modality}.pt"
        return run(f"probe_{name}", ["probe", "voxels", "random", f"s2dc={encoder}", "--device", a.device,
                                     "--source", str(data / name / "dataset.json"), "--stage", str(stage),
                                     "--seed", str(probe.get("seed", 0)),
                                     "--out", str(out / "probe" / f"{name}.json")], out / "probe" / f"{name}.json")

    t0 = time.monotonic()
    with ThreadPoolExecutor(a.parallel) as pool:
        list(pool.map(synth, datasets + ([] if a.encoders and not a.pretrain_steps else pools)))
        if a.encoders:  # the given encoders; a short pretraining on the first pool checks that path
            checked = [pool.submit(pretrain, modalities[0], a.pretrain_steps, out / "encoder_check.pt")] \
                if a.pretrain_steps else []
        else:
            list(pool.map(lambda m: pretrain(m, a.pretrain_steps, out / f"encoder_{m}.pt"), modalities))
            checked = []
        jobs = [(n, m, s, b) for b in budgets for s in seeds for n in datasets for m in ("s2dc", "scratch")]
        futures = checked + [pool.submit(finetune, *j) for j in jobs]
        if not a.no_probe:
            futures += [pool.submit(frozen, n) for n in datasets]
        for f in futures:
            f.result()
    table = summary(run.jobs, datasets, budgets)
    wall = time.monotonic() - t0
    (out / "gpu_tasks.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()},
                                                     "wall_s": round(wall, 1), "jobs": run.jobs}, indent=1))
    (out / "gpu_tasks.md").write_text(table + "\n")
    print(table)
    bad = [j["name"] for j in run.jobs if j["rc"] != 0]
    print(f"{len(run.jobs)} jobs in {wall:.0f} s; not ok: {bad or 'none'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
