"""Atomic checkpoints: write to a temporary file in the same folder, then rename; keep the newest K."""

from __future__ import annotations

import fcntl
import os
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..files import check_folder_path, rename_durably, work_sibling

_NAME = re.compile(r"^step_(\d{8})\.pt$")


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to ``path`` so that a crash leaves either the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = work_sibling(path)  # opened as every file is: its mode follows the umask
    try:
        with open(tmp, "wb") as f:
            try:
                torch.save(obj, f)
            except RuntimeError as err:  # torch reports what stopped a write as "unexpected pos N vs M"
                if isinstance(err.__context__, (KeyboardInterrupt, SystemExit)):  # Ctrl-C, SIGTERM (s2dc.cli.entry)
                    raise err.__context__ from None
                if not isinstance(err.__context__, OSError):
                    raise
                raise OSError(err.__context__.errno, err.__context__.strerror, str(path)) from err  # a full disk
        rename_durably(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def lock_folder(folder: Path):
    """Hold an exclusive lock on ``folder`` (``folder/.lock``) for as long as the returned file stays open, so
    that two processes never write one run folder; raises ``ValueError`` naming the holder if it is taken."""
    folder = Path(folder)
    check_folder_path(folder, "run.out_dir")
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "a+")  # noqa: SIM115 - kept open: the lock lives as long as the file
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ValueError(f"'{folder}' is in use by {holder}; wait for it to finish or stop it first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"s2dc pid {os.getpid()}\n")
    handle.flush()
    return handle


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"step_{step:08d}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def prune(folder: Path, keep_last: int) -> None:
    for old in list_checkpoints(folder)[:-keep_last]:
        old.unlink(missing_ok=True)


def _is_torch_archive(path: Path) -> bool:
    """Is ``path`` a zip archive with a ``<name>/data.pkl``, as ``torch.save`` writes?"""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Load a training checkpoint (tensors and plain Python only: ``weights_only=True``); raises ValueError naming
    the file if it is not one (another kind of file, a damaged one, or one holding other objects)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint '{path}' is a folder; expected a checkpoint file in it, e.g. "
                         f"'{path / 'checkpoints' / 'step_00001000.pt'}'")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    if not _is_torch_archive(path):
        raise ValueError(f"'{path}' is not a checkpoint: not a file written by torch.save (a zip archive holding a "
                         "data.pkl); expected an s2dc pretraining checkpoint, an exported encoder or a fine-tuning "
                         "checkpoint")
    with zipfile.ZipFile(path) as archive:  # torch.load does not check the entries' CRC-32: a flipped byte loads
        if (bad := archive.testzip()) is not None:
            raise ValueError(f"'{path}' is damaged: its entry '{bad}' fails its checksum (a copy or disk error); "
                             "use another copy of the file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name, without torch's advice to unpickle it
        reason = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in reason or "Weights only" in reason:
            reason = "it holds objects other than tensors and plain Python, which s2dc never writes"
        raise ValueError(f"could not read checkpoint '{path}' (a zip archive, but not one torch.save wrote as s2dc "
                         f"does): {reason}") from err


def rng_state() -> dict:
    """Python, NumPy and torch (CPU and CUDA) generator states, as tensors and plain Python."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
