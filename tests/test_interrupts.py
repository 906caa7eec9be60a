"""Commands killed (``kill -9``) in the middle of a write: what they leave is never taken for a user's file or a
result, and the next run (or the workflow's start) carries on."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from s2dc.train.live import MetricLog
from s2dc.train.outputs import foreign_curve_files


def killed_before_rename(code: str, target: str, cwd) -> None:
    """Run ``code`` in a child Python that kills itself with SIGKILL when an atomic write is about to rename its
    temporary file onto a path ending in ``target``: what ``kill -9`` at that moment leaves behind."""
    prelude = textwrap.dedent(f"""
        import os, signal
        real = os.replace
        def replace(src, dst, *args, **kwargs):
            if str(dst).endswith({target!r}):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst, *args, **kwargs)
        os.replace = replace
        """)
    done = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, capture_output=True, text=True)
    assert done.returncode == -9, done.stderr


def test_a_curve_log_killed_while_writing_leaves_nothing_for_the_next_run_to_copy(tmp_path):
    """A pretraining killed while it wrote its curves' metrics.json (or a curve cut back at resume) left the temporary
    file in its dvclive/, which the resumed run kept: the workflow copies that folder as the encoder's curves, and its
    start check then refused every later run ('... is not a curve file s2dc writes ... (nothing was run)')."""
    killed_before_rename("""
        from s2dc.train.live import MetricLog
        log = MetricLog("live")
        for step in (1, 2, 3):
            log.log(step, {"pretrain/loss": step / 10})
        log.close()
        """, "live/metrics.json", tmp_path)
    live = tmp_path / "live"
    assert [p.name.split(".")[1] for p in live.glob(".*.tmp")] == ["metrics"]
    MetricLog(live, resume_step=3).close()  # the run resumed from its checkpoint at step 3
    assert foreign_curve_files(live) == []
    killed_before_rename("""
        from s2dc.train.live import MetricLog
        MetricLog("live", resume_step=2)
        """, "loss.tsv", tmp_path)
    assert [p.name.split(".")[1] for p in live.rglob(".*.tmp")] == ["loss"]
    MetricLog(live, resume_step=2).close()  # resumed from its checkpoint at step 2
    assert foreign_curve_files(live) == []
    (live / "notes").mkdir()
    (live / "notes" / ".draft.tmp").write_text("mine")  # a file of a user's is no write of the log's
    MetricLog(live).close()  # the run started afresh
    assert [p.name for p in foreign_curve_files(live)] == [".draft.tmp"]


def test_a_plots_job_killed_while_writing_does_not_stop_the_workflows_next_start(tmp_path, monkeypatch):
    """`kill -9` of a Snakemake run (its process group) while its plots job renamed a figure or a curve table in left
    the temporary file in results/<scale>/figures/benchmark/ or curves/: running the same command again stopped at
    start ('... .label_ratio.png.<pid>.tmp is not a figure s2dc plots drew ... (nothing was run)'), where the README
    promises that the killed run is recovered by running it again (the job, unfinished, is run again and Snakemake
    deletes those folders first). A user's file there is still refused."""
    import pytest
    import yaml
    from snakemake.utils import validate

    from s2dc.workflow_checks import ForeignOutputError, check_job_outputs

    for target in ("figures/benchmark/label_ratio.png", "curves/.s2dc-curves.json"):
        killed_before_rename(f"""
            from pathlib import Path
            from s2dc.files import atomic_write_bytes
            atomic_write_bytes(Path("results/smoke/{target}"), b"drawn")
            """, target, tmp_path)
    left = sorted(p.name.split(f".{socket.gethostname()}.")[0] for p in (tmp_path / "results/smoke").rglob(".*.tmp"))
    assert left == ["..s2dc-curves.json", ".label_ratio.png"]
    repo = Path(__file__).resolve().parents[1]
    config = {**yaml.safe_load((repo / "params.yaml").read_text()), "scale": "smoke"}
    validate(config, str(repo / "workflow/schemas/params.schema.yaml"))
    monkeypatch.chdir(tmp_path)
    check_job_outputs(config)
    (tmp_path / "results/smoke/figures/benchmark/.notes.tmp").write_text("mine")
    with pytest.raises(ForeignOutputError, match="notes.tmp"):
        check_job_outputs(config)


def test_a_report_killed_while_renaming_its_tables_in_leaves_nothing_after_its_rerun(tmp_path):
    """`s2dc report` (and `ablation-table`) stage every table beside it, then rename them in; `kill -9` between the
    renames left the staged tables (``.benchmark.md.<host>.<pid>.tmp``), and its rerun, which wrote every table,
    kept them: `git add results/<scale>` (the README's way to record a baseline) took them in."""
    from s2dc.report.tables import _write_all

    texts = {"benchmark.csv": "dataset,task,metric,method,label_ratio,\n",
             "benchmark.md": "| dataset | task | metric | method | labels |\n"}
    killed_before_rename(f"""
        from pathlib import Path
        from s2dc.report.tables import _write_all
        _write_all(Path("out"), {texts!r})
        """, "out/benchmark.md", tmp_path)
    out = tmp_path / "out"
    assert [p.name.split(".")[1] for p in out.glob(".*.tmp")] == ["benchmark"]
    (out / ".draft.tmp").write_text("mine")
    _write_all(out, texts)
    assert sorted(p.name for p in out.iterdir()) == [".draft.tmp", ".s2dc-tables.json", "benchmark.csv", "benchmark.md"]


def test_plots_remove_what_a_killed_plots_run_was_renaming_in(tmp_path):
    """`kill -9` of `s2dc plots` while it renamed a figure or curve table in left the temporary file
    (``.label_ratio.png.<pid>.tmp``) in --figures or --curves, and its rerun kept it (in results/<scale>/, `git add
    results/<scale>` took it in). A file of a user's there stays."""
    from test_report import write_run

    from s2dc.cli import main

    for target in ("figures/label_ratio.png", "curves/val_score/x.tsv"):
        killed_before_rename(f"""
            from pathlib import Path
            from s2dc.files import atomic_write_bytes
            atomic_write_bytes(Path("{target}"), b"drawn")
            """, target, tmp_path)
    assert len(list(tmp_path.rglob(".*.tmp"))) == 2
    (tmp_path / "figures" / ".draft.tmp").write_text("mine")
    (tmp_path / "run/dvclive/plots/metrics/train").mkdir(parents=True)
    (tmp_path / "run/dvclive/plots/metrics/train/loss.tsv").write_text("step\tloss\n1\t0.5\n")
    run = write_run(tmp_path / "run", "s2dc", 0, 0.5, name="metrics.json")
    assert main(["plots", str(run), "--figures", str(tmp_path / "figures"), "--curves", str(tmp_path / "curves")]) == 0
    assert [p.name for p in tmp_path.rglob(".*.tmp")] == [".draft.tmp"]


#: A process id above Linux's pid_max (2**22): no process has it, so a file named after it is a killed process's.
GONE = 99999999


def test_plots_remove_only_their_own_temporaries_not_a_users_or_another_hosts(tmp_path):
    """The clean-up of what a killed `s2dc plots` left searched the whole of --figures and --curves, folders the user
    chooses, and deleted every '.<name>.<digits>.tmp' whose number is no process of this host: a user's
    '.todo.<n>.tmp', and the live temporary file of a run on another node sharing the file system (--figures
    results/<scale> while a SLURM job writes its metrics.json there). Only the temporary files of what plots writes
    go (a figure, a curve table, the curves' record)."""
    from test_report import write_run

    from s2dc.cli import main

    figures, curves = tmp_path / "figures", tmp_path / "curves"
    host = socket.gethostname()
    kept = [figures / f".todo.{GONE}.tmp", figures / "notes" / f".draft.{host}.{GONE}.tmp",
            figures / "run" / "dvclive" / f".metrics.json.{host}.{GONE}.tmp", curves / f".mine.csv.{host}.{GONE}.tmp",
            figures / f".label_ratio.png.elsewhere.{GONE}.tmp"]  # another node's, maybe running
    gone = [figures / f".label_ratio.png.{host}.{GONE}.tmp", figures / "per_class" / f".x.png.{host}.{GONE}.tmp",
            curves / f"..s2dc-curves.json.{host}.{GONE}.tmp", curves / "val_score" / f".x.tsv.{host}.{GONE}.tmp"]
    for path in kept + gone:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("left")
    (tmp_path / "run/dvclive/plots/metrics/train").mkdir(parents=True)
    (tmp_path / "run/dvclive/plots/metrics/train/loss.tsv").write_text("step\tloss\n1\t0.5\n")
    run = write_run(tmp_path / "run", "s2dc", 0, 0.5, name="metrics.json")
    assert main(["plots", str(run), "--figures", str(figures), "--curves", str(curves)]) == 0
    assert [p for p in kept + gone if p.exists()] == kept


def test_the_workflows_start_still_refuses_a_users_file_named_like_a_temporary(tmp_path, monkeypatch):
    """The start check passes over the temporary file of a killed plots job (Snakemake deletes the folder and runs
    the job again), but took any '.<name>.<digits>.tmp' for one: a user's '.notes.<n>.tmp' in figures/benchmark/
    was no longer refused, and was lost with the folder. Only a figure's temporary there (a curve table's or the
    record's in curves/) is passed over."""
    import pytest
    import yaml
    from snakemake.utils import validate

    from s2dc.workflow_checks import ForeignOutputError, check_job_outputs

    repo = Path(__file__).resolve().parents[1]
    config = {**yaml.safe_load((repo / "params.yaml").read_text()), "scale": "smoke"}
    validate(config, str(repo / "workflow/schemas/params.schema.yaml"))
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "results/smoke"
    host = socket.gethostname()
    for path in (root / f"figures/benchmark/.label_ratio.png.{host}.{GONE}.tmp",
                 root / f"figures/benchmark/per_class/.x.png.{host}.{GONE}.tmp",
                 root / f"curves/train_loss/.x.tsv.{host}.{GONE}.tmp",
                 root / f"curves/..s2dc-curves.json.{host}.{GONE}.tmp"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("left")
    check_job_outputs(config)
    for mine in (f"figures/benchmark/.notes.{GONE}.tmp", f"curves/.mine.csv.{host}.{GONE}.tmp",
                 f"figures/benchmark/.label_ratio.png.elsewhere.{GONE}.tmp"):
        (root / mine).write_text("mine")
        with pytest.raises(ForeignOutputError, match=re.escape(Path(mine).name)):
            check_job_outputs(config)
        (root / mine).unlink()


#: Loaded (as `sitecustomize`) by every Python the killed Snakemake run starts: the pretraining job renaming one of
#: its published outputs into results/ (not its run folder's own file) SIGKILLs the whole run first.
KILL_AT_RENAME = """
import os, signal
_real = os.replace
def _replace(src, dst, *args, **kwargs):
    path = os.path.abspath(dst)
    if path.endswith("/" + os.environ["KILL_AT"]) and "/results/" in path and "/runs/" not in path:
        _kill_all()
    return _real(src, dst, *args, **kwargs)
def _kill_all():
    os.killpg(int(open(os.environ["KILL_GROUP_FILE"]).read()), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
os.replace = _replace
"""

#: `cp` for the killed run: a copy onto the published output (as the pretraining job's `cp` made them) is left half
#: written, then the whole run SIGKILLed; any other copy is the real `cp`'s.
KILL_IN_CP = """
import os, signal, subprocess, sys
from pathlib import Path
dst = Path(sys.argv[-1])
if dst.name == os.environ["KILL_AT"] and "/results/" in str(dst.resolve()) and "runs" not in dst.parts:
    subprocess.run(["/bin/cp", *sys.argv[1:]], check=True)
    half = max(dst.rglob("*.json"), key=lambda p: p.stat().st_size) if dst.is_dir() else dst
    half.write_bytes(half.read_bytes()[: half.stat().st_size // 2])
    os.killpg(int(open(os.environ["KILL_GROUP_FILE"]).read()), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
sys.exit(subprocess.run(["/bin/cp", *sys.argv[1:]]).returncode)
"""


@pytest.mark.parametrize("kill_at", ["summary.json", "dvclive"])
def test_a_pretraining_killed_while_publishing_its_outputs_is_redone_by_the_next_start(tmp_path, kill_at):
    """`kill -9` of a Snakemake run (its process group) while the pretraining job put its summary.json or dvclive/
    into results/ left it half written (`cp`), and the next start refused it ('... is not a pretraining run's
    summary ... (nothing was run)', '... is not a curve file s2dc writes ...'): the user had to delete it by hand.
    Each output appears whole or not at all, and the same command again redoes the job and leaves nothing of the
    killed one's beside the outputs."""
    import json

    from conftest import REPO, snakemake, with_venv_path

    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(KILL_AT_RENAME)
    (hooks / "cp").write_text(f"#!{sys.executable}\n{KILL_IN_CP}")
    (hooks / "cp").chmod(0o755)
    work, group = tmp_path / "work", tmp_path / "group"
    work.mkdir()
    target = ("--config", "scale=smoke", "--cores", "1", "results/smoke/pretrain/CT/s2dc/encoder.pt")
    env = with_venv_path()
    env.update(PATH=f"{hooks}{os.pathsep}{env['PATH']}", KILL_AT=kill_at, KILL_GROUP_FILE=str(group),
               PYTHONPATH=os.pathsep.join([str(hooks), *filter(None, [env.get("PYTHONPATH")])]))
    killed = subprocess.Popen([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                               "--configfile", str(REPO / "params.yaml"), *target], cwd=work, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    group.write_text(str(killed.pid))
    out = killed.communicate(timeout=600)[0]
    assert killed.returncode == -signal.SIGKILL, out[-3000:]
    variant = work / "results/smoke/pretrain/CT/s2dc"
    (run,) = variant.glob("runs/*/")
    left = {name: (variant / name).exists() for name in ("summary.json", "dvclive")}
    whole = {"summary.json": lambda: (variant / "summary.json").read_bytes() == (run / "summary.json").read_bytes(),
             "dvclive": lambda: curves(variant / "dvclive") == curves(run / "dvclive")}
    after_kill = {name: not there or whole[name]() for name, there in left.items()}
    work_files = [p.name for p in variant.glob(f".{kill_at}.*")]  # what the killed copy was renaming in

    rerun = snakemake(work, *target)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    assert after_kill == {"summary.json": True, "dvclive": True}, after_kill  # whole or absent
    assert len(work_files) == 1 and not left[kill_at], work_files  # killed in the copy's rename, which it left
    assert sorted(p.name for p in variant.iterdir()) == ["dvclive", "encoder.pt", "runs", "summary.json"]
    assert whole["summary.json"]() and whole["dvclive"]()
    assert json.loads((variant / "summary.json").read_text())["steps"] > 0


def curves(folder):
    """{path: bytes} of the curve files in a dvclive/ folder (Snakemake's timestamp aside)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".snakemake_timestamp"}


def test_plots_stopped_on_the_way_leave_the_previous_runs_figures_whole(tmp_path, monkeypatch):
    """`s2dc plots` wrote its figures one by one: stopped between two (a full disk here; Ctrl-C alike), --figures held
    the new run's first figures beside the previous run's others. They are renamed in as one now: stopped on the way,
    every figure of the previous run is as it was, and no staged file is left."""
    import errno

    import s2dc.files
    import s2dc.recorded
    from test_effect import probe_file, run_folder

    from s2dc.cli import main

    def plots(tag, dice):
        runs = [run_folder(tmp_path / f"{tag}_{method}_{seed}", method, seed, d, "synthetic_btcv", 0.2)
                for method, values in dice.items() for seed, d in enumerate(values)]
        probe = probe_file(tmp_path, "synthetic_btcv", "segmentation", "balanced accuracy",
                           {"random": (0.2, 0.05), "voxels": (0.3, 0.04)})
        return main(["plots", *map(str, runs), "--probe", str(probe), "--figures", str(figures),
                     "--curves", str(tmp_path / f"curves_{tag}")])

    figures = tmp_path / "figures"
    assert plots("first", {"s2dc": [0.40, 0.44], "scratch": [0.20, 0.26]}) == 0
    before = {p.relative_to(figures).as_posix(): p.read_bytes() for p in figures.rglob("*") if p.is_file()}
    assert sorted(before) == ["effect.png", "label_ratio.png", "per_class/synthetic_btcv.png"]

    real, renamed = s2dc.files.rename_durably, []

    def full_after_one(new, target):  # the second figure renamed in finds the disk full
        if str(target).endswith(".png"):
            renamed.append(target)
            if len(renamed) == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(target))
        return real(new, target)

    monkeypatch.setattr(s2dc.files, "rename_durably", full_after_one)
    monkeypatch.setattr(s2dc.recorded, "rename_durably", full_after_one)
    assert plots("second", {"s2dc": [0.10, 0.12], "scratch": [0.50, 0.60]}) == 1
    after = {p.relative_to(figures).as_posix(): p.read_bytes() for p in figures.rglob("*") if p.is_file()}
    assert after == before
