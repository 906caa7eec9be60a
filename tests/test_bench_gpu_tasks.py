"""bench/gpu_tasks.py's table (docs/quick_scale.md sections 13-14 are printed by its --summarise): each validation
step's mean, sample sd, verdict and seed-by-seed differences against an independent computation, from records in its
own format."""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys

import pytest

from conftest import REPO


def _gpu_tasks():
    spec = importlib.util.spec_from_file_location("gpu_tasks", REPO / "bench" / "gpu_tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _job(dataset: str, method: str, seed: int, by_step: dict[int, float], steps: int = 384) -> dict:
    """A finished fine-tuning as gpu_tasks.json records it: Dice fractions in the history, the final score in %."""
    history = [{"step": s, "dice_mean": v} for s, v in sorted(by_step.items())]
    final = by_step[steps]
    return {"name": f"ft{steps}_{dataset}_{method}_{seed}", "rc": 0,
            "metrics": {"task": "segmentation", "steps": steps, "dice_mean": final, "history": history,
                        "score": {"key": "dice_mean", "name": "Dice", "value": 100 * final}}}


def test_the_summary_pools_seeds_per_step_and_says_beyond_only_above_the_larger_sd(tmp_path, capsys, monkeypatch):
    s2dc = {0: {128: 0.10, 384: 0.50}, 1: {128: 0.20, 384: 0.56}, 2: {128: 0.30, 384: 0.59}}
    # at step 128 S²DC is 5 points ahead: above scratch's sd (1), below its own (10): not beyond
    scratch = {0: {128: 0.14, 384: 0.40}, 1: {128: 0.15, 384: 0.42}, 2: {128: 0.16, 384: 0.47}}
    jobs = [_job("msd_spleen", "s2dc", seed, v) for seed, v in s2dc.items()] + \
           [_job("msd_spleen", "scratch", seed, v) for seed, v in scratch.items()]
    # two records, as two device calls wrote them: seeds 0-1 in the order they finished (not the seeds'), then seed 2
    records = []
    for name, part in (("a.json", [jobs[1], jobs[3], jobs[0], jobs[4]]), ("b.json", [jobs[5], jobs[2]])):
        path = tmp_path / name
        path.write_text(json.dumps({"args": {"datasets": "['msd_spleen']", "finetune_steps": "[384]"}, "jobs": part}))
        records.append(str(path))
    module = _gpu_tasks()
    monkeypatch.setattr(sys, "argv", ["gpu_tasks.py", "--summarise", *records])
    assert module.main() == 0
    rows = {int(line.split("|")[5]): [c.strip() for c in line.split("|")[1:-1]]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| msd_spleen")}
    assert sorted(rows) == [128, 384]
    for step, verdict in ((128, "no"), (384, "yes")):
        a = [100 * s2dc[seed][step] for seed in range(3)]
        b = [100 * scratch[seed][step] for seed in range(3)]
        diff, spread = statistics.mean(a) - statistics.mean(b), max(statistics.stdev(a), statistics.stdev(b))
        row = rows[step]
        assert row[5] == f"{statistics.mean(b):.2f} ± {statistics.stdev(b):.2f} (n=3)"
        assert row[6] == f"{statistics.mean(a):.2f} ± {statistics.stdev(a):.2f} (n=3)"
        assert row[7] == f"{diff:+.2f}" and row[8] == verdict == ("yes" if diff > spread else "no")
        pairs = " / ".join(f"{100 * (s2dc[seed][step] - scratch[seed][step]):+.1f}" for seed in range(3))
        assert row[9] == f"{pairs} (seeds 0, 1, 2)", row[9]


def test_records_of_two_label_ratio_subsets_are_not_pooled(tmp_path, monkeypatch, capsys):
    """Runs on one fixed subset (--split-seed) and runs whose seeds draw their own are two experiments: refused."""
    records = []
    for name, args in (("fixed.json", {"split_seed": "1"}), ("own.json", {})):
        path = tmp_path / name
        path.write_text(json.dumps({"args": {"datasets": "['msd_spleen']", "finetune_steps": "[384]", **args},
                                    "jobs": [_job("msd_spleen", "s2dc", 0, {384: 0.5})]}))
        records.append(str(path))
    monkeypatch.setattr(sys, "argv", ["gpu_tasks.py", "--summarise", *records])
    with pytest.raises(SystemExit) as stop:
        _gpu_tasks().main()
    assert stop.value.code == 2
    assert "different label-ratio subsets" in capsys.readouterr().err


def test_every_command_the_device_check_starts_is_one_the_command_line_takes(tmp_path, monkeypatch):
    """The lent-GPU check (bench/gpu_lpft.sh runs this script) wrote the scale's options and then its own
    --train.steps, --train.warmup_steps, --eval.every and --optim.steps after them, and --val-fraction for the pools:
    since the command line refuses an option given twice and a pool's validation fraction, every job it started
    exited 2. Each command it builds is parsed here by s2dc's own parser and checked as the command checks it."""
    from types import SimpleNamespace

    from s2dc.cli import build_parser

    module = _gpu_tasks()
    started = []

    def parse(argv, **_):
        args = argv[3:]  # [python, -m, s2dc.cli, command, ...]
        started.append(args)
        try:
            parsed = build_parser(args[0]).parse_args(args)
            if args[0] == "synth":
                from s2dc.data.synthetic.writer import check_twin_params
                check_twin_params(parsed.kind, parsed.cases, parsed.seed, parsed.shape, (1.0, 1.0, 1.0),
                                  parsed.val_fraction)
        except (SystemExit, ValueError):
            return SimpleNamespace(returncode=2)
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(module.subprocess, "run", parse)
    monkeypatch.setattr(sys, "argv", ["gpu_tasks.py", "--out", str(tmp_path), "--device", "cpu", "--pretrain-steps",
                                      "10", "--finetune-steps", "8", "--seeds", "0", "--datasets", "btcv", "cc_ccii",
                                      "--lpft", "0.25", "--eval-every", "4", "--split-seed", "1", "--no-probe",
                                      "--parallel", "1"])
    module.main()
    jobs = json.loads((tmp_path / "gpu_tasks.json").read_text())["jobs"]
    assert {j["name"].split("_")[0] for j in jobs} >= {"synth", "pretrain", "export", "ft8"}, jobs
    assert [j for j in jobs if j["rc"] != 0] == [], [(j["name"], j["command"]) for j in jobs if j["rc"] != 0]
    finetune = next(a for a in started if a[0] == "finetune")
    assert finetune[finetune.index("--train.steps") + 1] == "8" and "--eval.every" in finetune
