"""Device check of every task's training path: the three encoders, all ten downstream twins, both protocols.

    python bench/gpu_tasks.py --out DIR [--device cuda] [--pretrain-steps 600] [--finetune-steps 300]
                              [--seeds 0 1] [--parallel 8] [--budget-s 480]

What the `quick` scale's DAG does, with the `s2dc` command line, but on one GPU and with longer budgets:
synthetic twins of the three pools and the ten datasets (registry order), one S²DC encoder per modality
(`s2dc pretrain`, then `export-encoder`), every dataset fine-tuned from scratch and from its modality's encoder
for each seed (`s2dc finetune`, the dataset's registry preset), and the frozen-encoder protocol (`s2dc probe`).
Jobs run ``--parallel`` at a time (the quick models do not fill a GPU). A job still running when
``--budget-s`` is spent is stopped and reported as such; whatever finished is summarised.

Writes ``DIR/gpu_tasks.json`` (per job: command, wall seconds, return code, metrics) and ``DIR/gpu_tasks.md``
(one row per dataset: scratch and S²DC fine-tuning scores, mean ± sd over seeds; probe scores), and the logs
under ``DIR/logs``. ``--device cpu --tiny`` tries the plumbing on a CPU in a minute or two.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from s2dc.data import registry  # noqa: E402
from s2dc.data.preprocess import PreprocessConfig  # noqa: E402

ENCODER = ["--encoder.feature_size", "12", "--encoder.num_heads", "1", "2", "3", "4", "--encoder.window_size", "4",
           "--encoder.token_stage", "2", "--views.roi_size", "64", "64", "32", "--views.grid", "2",
           "--head.hidden_dim", "512", "--head.embed_dim", "128", "--loss.queue_size", "64",
           "--loss.match_temperature", "0.1", "--optim.warmup_steps", "50", "--optim.lr", "1e-3"]
MODEL = ["--model.feature_size", "12", "--model.num_heads", "1", "2", "3", "4", "--model.window_size", "4",
         "--train.roi_size", "64", "64", "32", "--train.samples_per_volume", "2", "--train.lr", "3e-3",
         "--eval.sw_batch_size", "4"]


def preset_options(name: str) -> list[str]:
    """The intensity options of a dataset's registry preset (as the workflow passes them)."""
    fields = PreprocessConfig.from_preset(registry.get(name).preset).intensity_fields()
    return [part for key, value in fields.items() for part in (f"--preprocess.{key}", str(value))]


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
        print(f"{name}: {status} in {job['wall_s']} s", flush=True)
        return job


def mean_sd(values: list[float]) -> str:
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f} (n={len(values)})"


def summary(jobs: list[dict]) -> str:
    rows = ["| dataset | task | fine-tuning metric | scratch | S²DC | frozen-encoder probe (balanced accuracy or R², %): "
            "voxels / random / S²DC |", "|---|---|---|---|---|---|"]
    for name in registry.downstream_names():
        spec = registry.get(name)
        scores = {m: [j["metrics"]["score"]["value"] for j in jobs if j["name"].startswith(f"ft_{name}_{m}_") and "metrics" in j]
                  for m in ("scratch", "s2dc")}
        probe = next((j["metrics"] for j in jobs if j["name"] == f"probe_{name}" and "metrics" in j), None)
        probe_text = " / ".join(f"{100 * probe['encoders'][e]['score']:.1f}" for e in ("voxels", "random", "s2dc")
                                ) if probe else "—"
        rows.append(f"| {name} | {spec.task} | {spec.metrics[0]} | {mean_sd(scores['scratch'])} | "
                    f"{mean_sd(scores['s2dc'])} | {probe_text} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--pretrain-steps", type=int, default=600)
    ap.add_argument("--finetune-steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--label-ratio", type=float, default=0.2)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--budget-s", type=float, default=480)
    ap.add_argument("--encoders", type=Path, help="folder with encoder_<MODALITY>.pt of an earlier run: no pretraining")
    ap.add_argument("--skip-finetune", action="store_true", help="only the frozen-encoder protocol")
    ap.add_argument("--tiny", action="store_true", help="few cases and steps: the plumbing on a CPU")
    a = ap.parse_args()
    out, data = a.out.resolve(), a.out.resolve() / "data"
    run = Runner(out, a.budget_s)
    pool_cases, cases = (4, 6) if a.tiny else (16, 20)
    device = ["--run.device", a.device]

    def synth(name: str) -> dict:
        shape = ["96", "96", "64"] if registry.get(name).task == "pretraining" else ["64", "64", "48"]
        return run(f"synth_{name}", ["synth", "--kind", name, "--out", str(data / name), "--seed", "1",
                                     "--cases", str(pool_cases if registry.get(name).task == "pretraining" else cases),
                                     "--shape", *shape])

    def pretrain(modality: str) -> dict:
        pool, workdir = registry.pool_for(modality), out / "pretrain" / modality
        job = run(f"pretrain_{modality}", ["pretrain", *ENCODER, *preset_options(pool), *device,
                                           "--optim.steps", str(a.pretrain_steps), "--run.checkpoint_every", "100000",
                                           "--run.progress", "false", "--data.workers", "2",
                                           "--data.source", str(data / pool / "dataset.json"),
                                           "--run.out_dir", str(workdir)], workdir / "summary.json")
        if job["rc"] == 0:
            run(f"export_{modality}", ["export-encoder", str(workdir), str(out / f"encoder_{modality}.pt")])
        return job

    def finetune(name: str, method: str, seed: int) -> dict:
        init = "scratch" if method == "scratch" else str((a.encoders or out) / f"encoder_{registry.get(name).modality}.pt")
        ft = out / "finetune" / f"{name}_{method}_{seed}"
        return run(f"ft_{name}_{method}_{seed}", [
            "finetune", *MODEL, *preset_options(name), *device, "--train.steps", str(a.finetune_steps),
            "--train.warmup_steps", str(max(1, a.finetune_steps // 10)), "--eval.every", "100000",
            "--data.workers", "2", "--data.label_ratio", str(a.label_ratio), "--run.seed", str(seed),
            "--run.method", method, "--run.progress", "false", "--model.init", init,
            "--data.source", str(data / name / "dataset.json"), "--run.out_dir", str(ft)], ft / "metrics.json")

    def probe(name: str) -> dict:
        encoder = (a.encoders or out) / f"encoder_{registry.get(name).modality}.pt"
        return run(f"probe_{name}", ["probe", "voxels", "random", f"s2dc={encoder}", "--device", a.device,
                                     "--source", str(data / name / "dataset.json"), "--stage", "2",
                                     "--out", str(out / "probe" / f"{name}.json")], out / "probe" / f"{name}.json")

    if a.tiny:
        global ENCODER  # noqa: PLW0603
        ENCODER = [*ENCODER, "--head.hidden_dim", "64", "--head.embed_dim", "32", "--loss.queue_size", "8",
                   "--optim.warmup_steps", "1"]
    t0 = time.monotonic()
    with ThreadPoolExecutor(a.parallel) as pool:
        downstream = registry.downstream_names()
        list(pool.map(synth, downstream if a.encoders else registry.names()))
        if not a.encoders:
            list(pool.map(pretrain, ["CT", "MRI", "PET"]))
        futures = [pool.submit(probe, n) for n in downstream if not registry.get(n).regions]  # cheap: first
        if not a.skip_finetune:
            jobs = [(n, m, s) for s in a.seeds for n in downstream for m in ("s2dc", "scratch")]
            futures += [pool.submit(finetune, *j) for j in jobs]
        for f in futures:
            f.result()
    table = summary(run.jobs)
    wall = time.monotonic() - t0
    (out / "gpu_tasks.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()},
                                                     "wall_s": round(wall, 1), "jobs": run.jobs}, indent=1))
    (out / "gpu_tasks.md").write_text(table + "\n")
    print(table)
    bad = [j["name"] for j in run.jobs if j["rc"] not in (0,)]
    print(f"{len(run.jobs)} jobs in {wall:.0f} s; not ok: {bad or 'none'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
