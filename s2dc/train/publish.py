"""The copies of a pretraining run's summary and curves that `s2dc pretrain --export-summary/--export-curves` publish
beside its encoder (the workflow's outputs): each written into a work sibling, then renamed in, so that a kill leaves
it whole or absent, never half written (which the workflow's start check would take for a user's file)."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from ..files import check_folder_path, remove_abandoned, rename_durably, replace_folder, work_sibling
from .checkpoint import lock_folder
from .outputs import foreign_curve_files, is_pretrain_summary


def check_copy_location(output: Path, run_dir: Path, what: str) -> None:
    """Refuse a path for a copy of the run's ``what`` (its encoder, summary or curves) inside the run's folder (where
    the run, and in checkpoints/ the next export and resume, take every file for their own) or at or above it
    (renaming the copy in would move the run's folder aside): the one policy of `s2dc export-encoder` and of
    `s2dc pretrain --export-*`, which checks it before training."""
    path, run = Path(output).resolve(), Path(run_dir).resolve()
    if path == run or path in run.parents:
        raise ValueError(f"the output '{output}' {'is' if path == run else 'holds'} the run's folder '{run_dir}'; "
                         f"copy the {what} elsewhere")
    if run in path.parents:
        raise ValueError(f"the output '{output}' lies in the run's folder '{run_dir}', where the run writes; copy "
                         f"the {what} elsewhere")


def check_summary_output(output: Path, run_dir: Path) -> None:
    """Refuse an ``--export-summary`` path in or above the run's folder, a folder, or an existing file that is no
    pretraining run's summary (a user's file of that name)."""
    output = Path(output)
    check_copy_location(output, run_dir, "summary")
    if output.is_dir():
        raise ValueError(f"'{output}' is a folder; give the .json file the run's summary is copied to")
    if output.exists() and not is_pretrain_summary(output):
        raise ValueError(f"'{output}' exists and is not a pretraining run's summary; refusing to overwrite it "
                         "(remove it or copy the summary elsewhere)")
    check_folder_path(output.parent, f"the folder of '{output}'")


def check_curves_output(output: Path, run_dir: Path) -> None:
    """Refuse an ``--export-curves`` path in or above the run's folder, a file, or a folder holding anything but the
    curve files s2dc writes (a note of a user's: :func:`s2dc.train.outputs.foreign_curve_files`)."""
    output = Path(output)
    check_copy_location(output, run_dir, "curves")
    if output.exists() and not output.is_dir():
        raise ValueError(f"'{output}' is a file; give the folder the run's curves are copied to")
    foreign = foreign_curve_files(output) if output.is_dir() else []
    if foreign:
        raise ValueError(f"'{foreign[0]}' is not a curve file s2dc writes; refusing to replace the folder '{output}' "
                         "(move the file out of it, or copy the curves elsewhere)")
    check_folder_path(output.parent, f"the folder of '{output}'")


def export_summary(run_dir: str | Path, output: str | Path) -> str:
    """Copy the run's ``summary.json`` to ``output``, whole or not at all (:func:`_publish`); returns the report."""
    run_dir, output = Path(run_dir), Path(output)
    check_summary_output(output, run_dir)
    with _held(run_dir):
        _publish(output, lambda work: shutil.copyfile(run_dir / "summary.json", work), rename_durably)
    return f"{output}: the run's summary"


def export_curves(run_dir: str | Path, output: str | Path) -> str:
    """Copy the run's ``dvclive/`` to the folder ``output``, whole or not at all (:func:`_publish`), replacing an
    earlier copy; returns the report."""
    run_dir, output = Path(run_dir), Path(output)
    check_curves_output(output, run_dir)
    with _held(run_dir):
        _publish(output, lambda work: shutil.copytree(run_dir / "dvclive", work, copy_function=shutil.copy),
                 replace_folder)
    return f"{output}: the run's curves"


def _publish(output: Path, copy, rename) -> None:
    """``copy(work)`` into a work sibling of ``output`` (:func:`s2dc.files.work_sibling`), then ``rename(work,
    output)``. Killed on the way, it leaves ``output`` as it was (or absent) and the work sibling, which the next
    copy beside ``output`` removes first (:func:`s2dc.files.remove_abandoned`, as an export of the encoder does)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(output.parent)
    work = work_sibling(output, "tmp")
    try:
        copy(work)
        rename(work, output)
    finally:
        if work.is_dir() and not work.is_symlink():
            shutil.rmtree(work, ignore_errors=True)
        else:
            work.unlink(missing_ok=True)


@contextlib.contextmanager
def _held(run_dir: Path):
    """Hold the lock of a pretraining run's folder (one with a ``run.json``) while its files are copied."""
    lock = lock_folder(run_dir) if (run_dir / "run.json").is_file() else None
    try:
        yield
    finally:
        if lock is not None:
            lock.close()
