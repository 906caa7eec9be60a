"""Shared fixtures: tiny NIfTI volumes, tiny configurations, labelled cases, and one smoke-DAG run."""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from s2dc.runtime import MALLOC_ENV, flush_denormals, import_monai_lean

# The processes pytest-xdist starts next (its workers, which run most tests in-process) allocate as the s2dc
# commands do: glibc reads its tuning only at a process's start (s2dc.runtime.reexec_with_tuned_malloc).
for _key, _value in MALLOC_ENV.items():
    os.environ.setdefault(_key, _value)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2` (pyproject's addopts): two workers share the cores, so each computes with one thread, and so
    # do the commands it starts (OpenMP threads of two processes fighting for two cores slow both tenfold).
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_collection(session):
    """Before the test modules import s2dc (in each process that runs tests; pytest-xdist's controller collects
    nothing, so it starts the workers without importing torch or MONAI): MONAI as the s2dc commands import it,
    which also collects faster (~2 s per worker), with denormals flushed as the commands flush them (so that a run in
    a test process and one in a command's process compute alike)."""
    flush_denormals()
    import_monai_lean()


def pytest_collection_finish(session):
    """Once the tests are collected: what the collection imported (torch, MONAI, s2dc, the test modules; ~10^6
    objects) is moved out of the garbage collector's reach (``gc.freeze``), so that its full collections in the
    tests, and the teardown at exit, stop walking it again and again."""
    gc.freeze()


TINY = {
    "encoder": {"feature_size": 12, "num_heads": [1, 2, 3, 4], "window_size": 4, "token_stage": 3},
    "views": {"roi_size": [64, 64, 32], "grid": 2},
    "head": {"hidden_dim": 64, "embed_dim": 32},
    "loss": {"queue_size": 8},
    "optim": {"steps": 6, "warmup_steps": 0, "lr": 1e-3},  # no warm-up: tests run it for one step
    "run": {"checkpoint_every": 3, "keep_last": 10, "log_every": 1, "progress": False},
    "data": {"workers": 0},
}


def write_volume(path, rng, shape=(72, 70, 40)):
    """A CT-like volume: air outside a soft-tissue body holding two bright, randomly placed structures."""
    vol = np.full(shape, -1000.0, np.float32)
    vol[6:-6, 6:-6, 3:-3] = rng.normal(40, 25, (shape[0] - 12, shape[1] - 12, shape[2] - 6))
    size = (16, 14, 8)
    for value in (300.0, -200.0):
        x, y, z = (int(rng.integers(4, max(5, s - d - 4))) for s, d in zip(shape, size))
        vol[x : x + size[0], y : y + size[1], z : z + size[2]] = value
    nib.save(nib.Nifti1Image(vol, np.diag([1.5, 1.5, 2.0, 1.0])), str(path))
    return path


def write_pool(root, count: int):
    """``count`` CT-like volumes in ``root/imagesTr`` and an MSD-style ``root/dataset.json`` listing them."""
    (root / "imagesTr").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"case{i}.nii.gz" for i in range(count)]
    for name in names:
        write_volume(root / "imagesTr" / name, rng)
    (root / "dataset.json").write_text(json.dumps({"training": [{"image": f"./imagesTr/{n}"} for n in names]}))
    return root


@pytest.fixture(scope="session")
def volumes_dir(tmp_path_factory):
    """A folder of four small CT-like volumes and an MSD-style dataset.json pointing at them."""
    return write_pool(tmp_path_factory.mktemp("volumes"), 4)


@pytest.fixture
def tiny_config(tmp_path):
    """Write the tiny YAML config; returns its path."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture(scope="session")
def one_step_run(tmp_path_factory, volumes_dir):
    """The run folder of the tiny pretraining (TINY) finished after one step on :func:`volumes_dir`'s imagesTr/, as
    `s2dc pretrain --optim.steps 1` leaves it (shared: tests read it or export from it, never change it)."""
    from s2dc.cli import main

    root = tmp_path_factory.mktemp("one-step")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    assert main(["pretrain", "--config", str(root / "tiny.yaml"), "--data.source", str(volumes_dir / "imagesTr"),
                 "--run.out_dir", str(root / "run"), "--optim.steps", "1"]) == 0
    return root / "run"


# --------------------------------------------------------------------------- segmentation cases

SHAPE = (64, 48, 32)
MODEL = {"feature_size": 12, "num_heads": [1, 2, 3, 4], "window_size": 4}
TINY_FT = {
    "model": MODEL,
    "train": {"steps": 30, "batch_size": 1, "roi_size": [64, 32, 32], "samples_per_volume": 1, "lr": 5e-3,
              "warmup_steps": 0, "log_every": 5},  # no warm-up: tests run it for one step; one crop a volume, as
    # the quick and smoke scales draw (test_finetune.py draws two where the draw is what it tests)
    "eval": {"every": 0, "overlap": 0.25, "sw_batch_size": 2},
    "data": {"workers": 0},
    "run": {"progress": False},
}
NAMES = {"0": "background", "1": "bright", "2": "dark"}
def sealed(doc: dict) -> dict:
    """``doc`` (a hand-made fine-tuning metrics.json or probe result) with the checksum its run would record of it,
    computed here: ``result_sha256``, the SHA-256 of its other keys as sorted, default-separated JSON. Every s2dc that
    records a result's ``code`` records it, and the tables take a result with a code and no checksum as edited."""
    body = {k: v for k, v in doc.items() if k != "result_sha256"}
    return {**body, "result_sha256": hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()}


#: The code hash a hand-made result records (a fine-tuning's metrics.json, a probe result): that of one version of the
#: code, any 64 hex digits; the tables refuse the results of one dataset made by two.
CODE = "c0de" * 16


def write_case(folder, name, rng, shape=SHAPE):
    """CT-like image (air, soft-tissue body) with a bright (class 1) and a dark (class 2) box, and its label."""
    image = np.full(shape, -1000.0, np.float32)
    label = np.zeros(shape, np.uint8)
    image[4:-4, 4:-4, 2:-2] = rng.normal(40, 20, (shape[0] - 8, shape[1] - 8, shape[2] - 4))
    for cls, value, size in ((1, 200.0, (16, 14, 10)), (2, -100.0, (14, 12, 8))):
        for _ in range(100):  # place the boxes inside the body without overlap
            x, y, z = (int(rng.integers(5, s - d - 5)) for s, d in zip(shape, size))
            box = (slice(x, x + size[0]), slice(y, y + size[1]), slice(z, z + size[2]))
            if not label[box].any():
                break
        image[box] = rng.normal(value, 20, size)
        label[box] = cls
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    nib.save(nib.Nifti1Image(image, affine), str(folder / "imagesTr" / f"{name}.nii.gz"))
    nib.save(nib.Nifti1Image(label, affine), str(folder / "labelsTr" / f"{name}.nii.gz"))
    return {"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"}


#: The validation cases' shape: the tiny fine-tuning crop's (TINY_FT), one window of the sliding-window inference
#: each, half the evaluation of a SHAPE volume (the smoke DAG's validation slides over two windows a volume).
VAL_SHAPE = (64, 32, 32)


def write_listing(path: Path, name: str | None = None) -> Path:
    """A dataset.json at ``path`` (named ``name`` if given) that lists one training case, an empty file beside it:
    what a check that the json lists its cases reads, without a volume. Returns ``path``."""
    (path.parent / f"{path.stem}.nii.gz").write_bytes(b"")
    path.write_text(json.dumps({**({"name": name} if name else {}), "training": [{"image": f"./{path.stem}.nii.gz"}]}))
    return path


def write_boxes(root, shape=SHAPE, val_shape=VAL_SHAPE):
    """Five training cases of ``shape`` and two validation cases of ``val_shape`` (:func:`write_case`) with an
    MSD-style dataset.json."""
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    spec = {"name": "Boxes", "labels": NAMES,
            "training": [write_case(root, f"train{i}", rng, shape) for i in range(5)],
            "validation": [write_case(root, f"val{i}", rng, val_shape) for i in range(2)]}
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


@pytest.fixture(scope="module")
def seg_dir(tmp_path_factory):
    """Five training and two validation cases with an MSD-style dataset.json (:func:`write_boxes`)."""
    return write_boxes(tmp_path_factory.mktemp("seg"))


@pytest.fixture(scope="session")
def finished_finetuning(tmp_path_factory):
    """A finished one-step fine-tuning (TINY_FT, ``--train.steps 1``, as test_trust.finetune_argv runs it) of its own
    boxes (:func:`write_boxes`): (its dataset.json, its run folder). Shared by the tests of a process: they copy the
    folder (``shutil.copytree``) before they run into it, never change it."""
    from s2dc.cli import main

    root = tmp_path_factory.mktemp("finished_finetuning")
    (root / "seg").mkdir()
    source = write_boxes(root / "seg") / "dataset.json"
    (root / "ft.yaml").write_text(yaml.safe_dump(TINY_FT))
    run = root / "run"
    assert main(["finetune", "--config", str(root / "ft.yaml"), "--data.source", str(source), "--run.out_dir",
                 str(run), "--train.steps", "1"]) == 0
    return source, run


# --------------------------------------------------------------------------- the workflow

REPO = Path(__file__).resolve().parents[1]


def stopped_at_third_replace(real):
    """os.replace that is interrupted (KeyboardInterrupt) on its third call: a write of several files stopped
    between two renames."""
    calls = []

    def replace(src, dst, *args, **kwargs):
        calls.append(dst)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(src, dst, *args, **kwargs)
    return replace


def snakemake(workdir: Path, *args: str, configfile: Path | None = None):
    """Run this repository's Snakefile with its working directory in ``workdir``, as `snakemake <args>` would, with
    what it and its jobs write to stdout and stderr, in this process (:func:`run_here`)."""
    argv = ["--snakefile", str(REPO / "Snakefile"), "--configfile", str(configfile or REPO / "params.yaml"), *args]
    return run_here(workdir, argv)


def with_venv_path() -> dict[str, str]:
    """This process's environment with the virtual environment's commands (`s2dc`, `snakemake`) first on PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def run_here(workdir: Path, argv: list[str]) -> subprocess.CompletedProcess:
    """`snakemake <argv>` run through Snakemake's own command line in this process, in ``workdir``, with the status
    it exits with and what it and the jobs it starts write to file descriptors 1 and 2. A new process spends ~2 s of
    the Intel Xeon's CPU (docs/benchmarks.md) importing Snakemake and tearing down, several times a dry run of the
    smoke DAG in a process that has Snakemake (~0.4 s). The working directory, PATH, the standard streams and the
    SIGTERM handler (a run's scheduler sets its own) are this process's, so the main thread only, and they are
    restored after."""
    from snakemake.cli import main

    assert threading.current_thread() is threading.main_thread(), "Snakemake runs in the test's main thread only"
    here, environ, on_sigterm = os.getcwd(), dict(os.environ), signal.getsignal(signal.SIGTERM)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        os.chdir(workdir)
        os.environ.update(with_venv_path())
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    main(argv)
                    code = 0
                except SystemExit as stop:
                    code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        finally:
            out.flush()
            err.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            os.chdir(here)
            os.environ.clear()
            os.environ.update(environ)
            signal.signal(signal.SIGTERM, on_sigterm)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(["snakemake", *argv], code, out.read(), err.read())


def params_error(params: dict, **config: str) -> str:
    """The message with which parsing the workflow refuses ``params`` (params.yaml's content, with ``config`` as from
    `--config key=value`), found in-process: the schema's validation, then s2dc.workflow_checks.check_params, as
    workflow/rules/common.smk runs them at start (test_pipeline.py starts Snakemake on a case of each); '' if none."""
    from snakemake.exceptions import WorkflowError

    from s2dc.workflow_checks import ParamsError, check_params, validate_params

    full = {**copy.deepcopy(params), **config}
    try:
        validate_params(full, REPO / "workflow/schemas/params.schema.yaml")
        check_params(full, schema=REPO / "workflow/schemas/params.schema.yaml")
    except (WorkflowError, ParamsError) as err:
        return str(err)
    return ""


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """A folder in which the whole smoke DAG ran once (shared: tests read it or copy it, never change it).

    Shared by the pytest-xdist workers too: the first one to need it runs the DAG under a file lock in their
    common temporary folder, the others wait for it and reuse it."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's own
    workdir = root / "smoke-shared"
    with FileLock(str(root / "smoke-shared.lock")):
        if not (root / "smoke-shared.complete").exists():
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir()
            done = snakemake(workdir, "--cores", "2", "--config", "scale=smoke")
            assert done.returncode == 0, done.stderr[-4000:]
            (root / "smoke-shared.complete").touch()
    return workdir


#: Readers of the smoke run that take longest, scheduled first among the readers.
LONG_SMOKE_READERS = ("test_dag_and_report_need_no_cores", "test_kill_minus_nine_then_a_plain_rerun_recovers",
                      "test_dvc_after_snakemake_redoes_and_deletes_nothing")

#: Modules of small unit tests (each well under a second; ~430 tests, ~45 s in all), placed last.
FILLER_MODULES = ("test_losses", "test_download", "test_views", "test_tune_space", "test_registry",
                  "test_data_volumes", "test_data_layer", "test_sources_common", "test_sources_msd",
                  "test_sources_mri", "test_sources_petcc", "test_bootstrap", "test_identity", "test_synthetic",
                  "test_twct", "test_twmri", "test_twpet", "test_queue_ema")


def pytest_collection_modifyitems(config, items):
    """Order for two workers on two cores under ``--dist worksteal`` (pyproject's addopts), which hands the first
    half of this list to one worker and the second half to the other, and lets a worker that runs dry take the back
    half of the other's queue: one reader of the smoke run first (its worker builds the smoke DAG at once), then
    the other tests that do not read it, then the other readers, the longest first, then the small unit tests of
    :data:`FILLER_MODULES`. So the second worker starts on small unit tests while the first builds the DAG, and takes
    the other readers when it has run dry (measured: the DAG done before it reached them). Every worker sorts
    alike (xdist requires it)."""
    readers = [item for item in items if "smoke_run" in getattr(item, "fixturenames", ())]
    if not readers:
        return
    first = next((item for item in readers if item.originalname not in LONG_SMOKE_READERS), readers[0])
    others, filler = [], []
    for item in items:
        if "smoke_run" not in getattr(item, "fixturenames", ()):
            (filler if item.module.__name__ in FILLER_MODULES else others).append(item)
    rank = {name: i for i, name in enumerate(LONG_SMOKE_READERS)}
    rest = sorted((item for item in readers if item is not first), key=lambda item: rank.get(item.originalname, 99))
    items[:] = [first, *others, *rest, *filler]


def copy_tracked(dest: Path, *folders: str) -> Path:
    """Copy the files Git tracks in this repository (under ``folders``, or all of them) into ``dest``, at the same
    relative paths, as the working tree holds them: what a fresh clone holds, not the runs a workspace made beside
    them (gigabytes of caches and checkpoints under results/quick). Returns ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-z", *folders], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout
    names = [name for name in listed.split("\0") if name and (REPO / name).is_file()]
    assert names, f"git tracks no file under {folders}"
    for name in names:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest / name)
    return dest


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a workflow folder with its modification times and Snakemake's metadata."""
    shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
    return dst


def signal_at_line(at: int | None, call) -> tuple[int, BaseException | None]:
    """Run ``call()`` with a real SIGINT sent to this process at its ``at``-th line event in s2dc/files.py and
    s2dc/recorded.py (None: none sent; Python runs the handler as os.kill returns, so on that line: a Ctrl-C landing
    between two lines); returns the number of line events there and what the call raised (None if nothing)."""
    import s2dc.files
    import s2dc.recorded

    ours, events, raised = {s2dc.files.__file__, s2dc.recorded.__file__}, [0], None

    def line(frame, event, arg):
        if event == "line":
            events[0] += 1
            if events[0] == at:
                os.kill(os.getpid(), signal.SIGINT)
        return line

    # Python's own Ctrl-C handler, whatever this process was started with (a shell's `cmd &` starts it ignoring SIGINT)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.settrace(lambda frame, event, arg: line if frame.f_code.co_filename in ours else None)
    try:
        call()
    except BaseException as err:  # noqa: BLE001 - what it raised is the result
        raised = err
    finally:
        sys.settrace(None)
        signal.signal(signal.SIGINT, previous)
    return events[0], raised
