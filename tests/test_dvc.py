"""DVC over Snakemake: after a Snakemake run, DVC redoes nothing and deletes nothing that Snakemake made.

The smoke DAG's outputs (the shared run, copied) in a `git init`-ed copy of the tracked files (DVC needs
a Git repository, and `dvc exp run` a commit), then `dvc exp run -S scale=smoke` (params.yaml stays at
its default scale), a second, unchanged `dvc exp run`, and `dvc exp apply` of the first experiment.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO, copy_run, copy_tracked, with_venv_path
from s2dc.report.tables import table_refusal

SCRATCH = ("/runs/", "/cache/")  # pretraining run folders and preprocessing caches; fine-tuned model.pt and a
# fine-tuning run's lock below


def _env() -> dict[str, str]:
    return {**with_venv_path(), "DVC_NO_ANALYTICS": "1"}


def _run(workdir: Path, *cmd: str, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(list(cmd), cwd=workdir, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def dvc(workdir: Path, *args: str) -> str:
    done = _run(workdir, sys.executable, "-m", "dvc", *args)
    return done.stdout + done.stderr


def git(workdir: Path, *args: str) -> str:
    return _run(workdir, "git", *args).stdout


def tracked_copy(dest: Path) -> Path:
    """This repository's tracked files (as in the working tree), committed to a new Git repository."""
    copy_tracked(dest)
    git(dest, "init", "-q")
    git(dest, "config", "user.name", "test")
    git(dest, "config", "user.email", "test@example.com")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "base")
    return dest


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under resources/ and results/ -> (inode, mtime in ns, size)."""
    files = {}
    for top in ("resources", "results"):
        for path in sorted((root / top).rglob("*")):
            if path.is_file():
                st = path.stat()
                files[str(path.relative_to(root))] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return files


def is_scratch(path: str) -> bool:
    return any(s in path for s in SCRATCH) or path.endswith(("/model.pt", "/.lock"))


def test_dvc_after_snakemake_redoes_and_deletes_nothing(tmp_path, smoke_run):
    work = copy_run(smoke_run, tracked_copy(tmp_path / "repo"))  # Snakemake has nothing to do here (step 1 shows it)
    made = snapshot(work)
    assert any(is_scratch(f) for f in made) and "results/smoke/pretrain/CT/s2dc/encoder.pt" in made

    # 1. The first experiment finds nothing to do: DVC deletes nothing and every Snakemake call is a no-op.
    out = dvc(work, "exp", "run", "-n", "first", "-S", "scale=smoke")
    assert "No file hash info found" not in out, out[-3000:]
    assert out.count("Nothing to be done") == 3 and "Job stats" not in out, out[-6000:]
    assert snapshot(work) == made

    # 2. Unchanged, a second one: DVC runs the data stage alone (always, as only Snakemake sees a release changed
    #    in place under `raw:`), Snakemake finds nothing to convert, and the stages after it are skipped.
    out = dvc(work, "exp", "run", "-n", "second", "-S", "scale=smoke")
    assert "Running stage 'data'" in out and out.count("Running stage") == 1, out[-3000:]
    assert out.count("Nothing to be done") == 1 and "Job stats" not in out, out[-3000:]
    assert out.count("didn't change, skipping") == 2, out[-3000:]
    assert snapshot(work) == made

    # 3. dvc.lock hashes the data, encoders, per-run metrics and tables, not the scratch inside their folders.
    outs = {o["path"]: o for stage in yaml.safe_load((work / "dvc.lock").read_text())["stages"].values()
            for o in stage["outs"]}
    for folder in ("resources/smoke", "results/smoke/pretrain", "results/smoke/finetune", "results/smoke/probe"):
        kept = [f for f in made if f.startswith(folder + "/") and not is_scratch(f)]
        assert outs[folder]["nfiles"] == len(kept), (folder, outs[folder], kept)
    modalities = yaml.safe_load((REPO / "params.yaml").read_text())["scales"]["smoke"]["pretrain"]["modalities"]
    for modality in modalities:  # beside each encoder: its summary and its DVCLive curves
        for name in ("encoder.pt", "summary.json", "dvclive/plots/metrics/pretrain/loss_p2s.tsv"):
            assert f"results/smoke/pretrain/{modality}/s2dc/{name}" in made
    for table in ("benchmark.csv", "benchmark.md", "metrics.json", ".s2dc-tables.json"):  # the tables and their record
        assert outs[f"results/smoke/{table}"]["md5"]

    # 4. Applying an experiment brings back its Git-tracked files and leaves Snakemake's outputs alone.
    dvc(work, "exp", "apply", "first")
    after = snapshot(work)
    untracked = git(work, "ls-files", "--others", "--exclude-standard", "results").splitlines()
    for path, stat in made.items():
        assert path in after, f"dvc exp apply deleted {path}"
        if path not in untracked:  # the tables are rewritten from the experiment commit, with the same content
            assert after[path] == stat, path
    # the tables' record came back with them (the experiment commit holds it): the next report replaces them
    (first,) = [ref for ref in git(work, "for-each-ref", "--format=%(refname)", "refs/exps").split() if ref.endswith("/first")]
    assert "results/smoke/.s2dc-tables.json" in git(work, "ls-tree", "-r", "--name-only", first, "results/smoke").split()
    assert all(table_refusal(work / "results/smoke" / name) is None for name in ("benchmark.md", "benchmark.csv"))
    status = dvc(work, "status", "dvc.yaml")  # experiments/dvc.yaml never ran
    assert status.split() == ["data:", "always", "changed"], status  # the data stage alone, always

    # 5. `dvc plots show` draws the declared curves: each encoder's loss terms, each dataset's two methods.
    plots = json.loads(_run(work, sys.executable, "-m", "dvc", "plots", "show", "--json").stdout)["data"]
    fields = {name: {v.get("field") or v.get("filename::field", "").split("::")[0].rsplit("/", 1)[-1] for p in plot
                     for v in p["content"]["data"]["values"]} for name, plot in plots.items()}
    for modality in modalities:
        terms = fields[f"results/smoke/curves/pretrain_loss/{modality}_s2dc.tsv"]
        assert terms == {"loss", "loss_global", "loss_p2p", "loss_p2s"}, fields
    assert not [name for name in fields if "pretrain_loss" in name and name.split("/")[-1].split("_")[0] not in modalities]
    datasets = yaml.safe_load((REPO / "params.yaml").read_text())["scales"]["smoke"]["experiments"]["datasets"]
    for kind in ("train_loss", "val_score"):
        for dataset in datasets:
            assert fields[f"results/smoke/curves/{kind}/synthetic_{dataset}.tsv"] == {"scratch", "s2dc"}, fields
    html = _run(work, sys.executable, "-m", "dvc", "plots", "show", "-o", str(tmp_path / "plots")).stdout
    page = (tmp_path / "plots" / "index.html").read_text()
    assert "index.html" in html and "curves/pretrain_loss/CT_s2dc.tsv" in page and "curves/val_score/synthetic_btcv.tsv" in page


def test_dvcignore_leaves_out_scratch_of_every_scale(tmp_path):
    """Checkpoints, caches and fine-tuned weights are outside DVC's hashes; what DVC versions is not."""
    ignored = [
        "results/quick/pretrain/CT/s2dc/runs/0123456789/checkpoints/step_00000200.pt",
        "results/quick/pretrain/CT/s2dc/runs/0123456789/dvclive/metrics.json",
        "results/quick/ablation/pretrain/PET/lg/runs/0123456789/checkpoints/step_00000200.pt",
        "results/quick/ablation/finetune/segmentation/autopet/lg/labels20pct/seed0/model.pt",
        "results/quick/cache/finetune/seg1-0123/a.pt",
        "results/smoke/finetune/segmentation/btcv/s2dc/labels50pct/seed0/cache/seg1-0123/a.pt",
        "results/paper/finetune/segmentation/btcv/s2dc/labels10pct/seed0/model.pt",
        "results/quick/finetune/segmentation/btcv/s2dc/labels10pct/seed0/.lock",
        "results/quick/ablation/finetune/segmentation/autopet/lg/labels20pct/seed0/.lock",
    ]
    versioned = [
        "resources/quick/btcv/imagesTr/case_0000.nii.gz",
        "results/quick/pretrain/CT/s2dc/encoder.pt",
        "results/quick/pretrain/CT/s2dc/summary.json",
        "results/quick/ablation/pretrain/PET/lg/encoder.pt",
        "results/quick/ablation/finetune/segmentation/autopet/lg/labels20pct/seed0/metrics.json",
        "results/quick/ablation/ablation.csv",
        "results/quick/finetune/segmentation/btcv/s2dc/labels10pct/seed0/metrics.json",
        "results/quick/finetune/segmentation/btcv/s2dc/labels10pct/seed0/split.json",
        "results/quick/finetune/segmentation/btcv/s2dc/labels10pct/seed0/dvclive/metrics.json",
        "results/quick/probe/btcv.json",
    ]
    shutil.copytree(REPO / ".dvc", tmp_path / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    shutil.copy2(REPO / ".dvcignore", tmp_path / ".dvcignore")
    git(tmp_path, "init", "-q")
    for name in ignored + versioned:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    checked = subprocess.run([sys.executable, "-m", "dvc", "check-ignore", *ignored, *versioned], cwd=tmp_path,
                             env=_env(), capture_output=True, text=True)
    assert sorted(checked.stdout.split()) == sorted(ignored), checked.stdout + checked.stderr


def test_each_stage_tracks_the_parameters_that_choose_its_jobs(tmp_path):
    """A parameter that changes which jobs a stage's Snakemake target runs makes the stage stale in `dvc status`:
    `experiments.methods` chooses the encoders `pretrained` builds (a method added was pretrained by the benchmark
    stage, leaving dvc.lock's pretrain outputs stale right after `dvc repro`), `experiments.label_ratios` and
    `datasets` which of the ablation's runs are the benchmark's."""
    work = tracked_copy(tmp_path / "repo")
    params = yaml.safe_load((work / "params.yaml").read_text())
    scale = params["scale"]
    grid = params["scales"][scale]["experiments"]
    changes = {("dvc.yaml:pretrain", "methods"): [*grid["methods"], "lg"],
               ("experiments/dvc.yaml:ablation", "label_ratios"): [0.5],
               ("experiments/dvc.yaml:ablation", "datasets"): grid["datasets"][:1]}
    # All three changes in one params.yaml and one `dvc status` of both stages (each start of DVC costs ~1.2 s of
    # CPU): `dvc status` names each tracked key that differs from dvc.lock, so each change is still seen by its own
    # key (or by the section that holds it, tracked whole), whatever the other changes.
    changed = yaml.safe_load((REPO / "params.yaml").read_text())
    for (_, key), value in changes.items():
        changed["scales"][scale]["experiments"][key] = value
    (work / "params.yaml").write_text(yaml.safe_dump(changed))
    stages = sorted({stage for stage, _ in changes})
    status = json.loads(_run(work, sys.executable, "-m", "dvc", "status", "--json", *stages).stdout)
    for stage, key in changes:
        changed_deps = [entry["changed deps"] for entry in status.get(stage.removeprefix("dvc.yaml:"), [])
                        if "changed deps" in entry]
        params = {name for deps in changed_deps for name, how in deps.get("params.yaml", {}).items()
                  if how in ("new", "modified")}  # the tracked params that differ from dvc.lock
        assert params & {f"scales.{scale}.experiments.{key}", f"scales.{scale}.experiments"}, (stage, status)
