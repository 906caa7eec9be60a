"""What makes two runs the same run: their options, their data and their code.

A pretraining run records its identity in ``run.json`` and in every checkpoint; a run is only resumed
from a checkpoint whose identity equals the current one, so a run never mixes two configurations, two
datasets or two versions of the training code.

* options: every option that changes what is computed (not where it is written, how often it is logged
  or how many loader processes read the data), with the number of processes and the precision the forward
  passes compute in (``run.amp: auto`` is bf16 on a GPU and fp32 on the CPU: the precision counts, not the
  option; the device does not, like the machine);
* data: the dataset.json's bytes, each listed volume's path, size, modification time, inode and status-change
  time (as Git's index judges files: cheap, and any write changes them), and a hash of the volumes' bytes, read when
  a run starts afresh (by the main process of a pretraining) and when a file's time or inode changed since the run
  recorded it (by every process): a volume rewritten with the same bytes (a twin made again, data copied to another
  disk) leaves the run resumable (:func:`run_differences`); a resume whose files kept their stamps reads none;
* code: a hash of the s2dc modules that training imports (their syntax trees without docstrings, so
  comments and documentation do not count), and the torch and MONAI versions. The registry's dataset entries
  (:data:`s2dc.fingerprint.DATA_MODULES`) are data, not code: a fine-tuning counts the entry of the dataset it reads instead
  (``dataset_spec``: :func:`s2dc.data.registry.spec_digest`, None for a dataset the registry does not know). A
  pretraining computes nothing from its pool's entry (its intensity preset comes as options); the encoder export
  reads the pool's modality, and the pretraining job reruns (and exports again) when the entry changes (its param).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

from ..files import file_sha256, file_stamp
from ..messages import listed

# Options that do not change what a run computes.
RUN_LOCAL = {
    "data": {"source", "cache_dir", "workers"},
    "encoder": {"use_checkpoint"},
    "run": {"out_dir", "resume", "progress", "log_every", "checkpoint_every", "keep_last", "device", "amp"},
}


def result_options(config: dict, run_local: dict[str, set[str]] = RUN_LOCAL) -> dict[str, object]:
    """``{"section.field": value}`` of the options that change what a run computes: those of ``config``
    (``{section: {field: value}}``) not in ``run_local`` (default: the pretraining's, :data:`RUN_LOCAL`)."""
    return {f"{section}.{name}": value for section, fields in config.items() for name, value in fields.items()
            if name not in run_local.get(section, ())}


def data_fingerprint(source: str | Path, paths: list[Path]) -> dict:
    """``{"dataset_json": sha256 or None, "files": [[path relative to the source, size, mtime_ns, inode, ctime_ns],
    ...]}``: each file's :func:`~s2dc.files.file_stamp`, as the preprocessing cache keys it."""
    source = Path(source)
    base = source if source.is_dir() else source.parent
    files = []
    for path in paths:
        rel = Path(path).relative_to(base) if Path(path).is_relative_to(base) else Path(path)
        files.append([str(rel), *file_stamp(path).values()])
    dataset_json = None if source.is_dir() else hashlib.sha256(source.read_bytes()).hexdigest()
    return {"dataset_json": dataset_json, "files": files}


def volumes_sha256(paths: list[Path]) -> str:
    """SHA-256 of the files' bytes, in order (of their SHA-256s): what a run's data hold, whatever their times."""
    joined = "\n".join(file_sha256(path) for path in paths)
    return hashlib.sha256(joined.encode()).hexdigest()


def record_content(identity: dict, content: Callable[[], str]) -> None:
    """Set ``identity["data"]["content_sha256"]`` from ``content()`` (the volumes' :func:`volumes_sha256`) unless it
    is known: a resumed run whose files kept their stamps has it from its run already, and reads no byte."""
    if "content_sha256" not in identity["data"]:
        identity["data"]["content_sha256"] = content()


def run_differences(found: dict, current: dict, content: Callable[[], str]) -> list[str]:
    """:func:`differences` between the identity of a run ``found`` and the ``current`` one, except that volumes
    rewritten with the same bytes do not count: when the data differ only by the files' times or inodes (the same
    dataset.json, file names and sizes) and ``found`` records the hash of its volumes' bytes, ``content()`` (their
    :func:`volumes_sha256` now) decides. Where the data are the same, ``current`` takes their hash."""
    lines = differences(found, current)
    old, new = found.get("data") or {}, current.get("data") or {}
    known = old.get("content_sha256")
    data_lines = _data_differences(old, new, limit=5)
    if known and not data_lines:
        new["content_sha256"] = known
    elif known and _same_but_stamps(old, new) and content() == known:
        lines = [line for line in lines if line not in data_lines]
        if "content_sha256" not in new:  # said once, when this identity first learns that its data are the run's
            changed = sum(a != b for a, b in zip(old["files"], new["files"]))
            verdict = ": the run stands" if not lines else " (the data are the run's; what else differs is said next)"
            print(f"{changed} data file(s) were written again since the run started (their times or inodes changed), "
                  f"with the same bytes{verdict}", file=sys.stderr, flush=True)
        new["content_sha256"] = known
    return lines


def _same_but_stamps(old: dict, new: dict) -> bool:
    """The same dataset.json, the same files in the same order with the same sizes (times and inodes aside)."""
    old_files, new_files = old.get("files", []), new.get("files", [])
    return old.get("dataset_json") == new.get("dataset_json") and len(old_files) == len(new_files) and all(
        a[:2] == b[:2] for a, b in zip(old_files, new_files))


def option_changes(old: dict, new: dict, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(key, old value, new value)`` for each key whose value differs, in key order, the values as ``repr`` or
    ``(absent)`` where a side lacks the key; where both values are dicts, their own changes under ``key.``."""
    changes = []
    for key in sorted(set(old) | set(new), key=str):
        was, now = old.get(key, ABSENT), new.get(key, ABSENT)
        if was == now:
            continue
        if isinstance(was, dict) and isinstance(now, dict):
            changes += option_changes(was, now, f"{prefix}{key}.")
        else:
            changes.append((f"{prefix}{key}", *(v if v is ABSENT else repr(v) for v in (was, now))))
    return changes


#: How :func:`option_changes` shows the value of a key that one side lacks.
ABSENT = "(absent)"


def differences(old: dict, new: dict, limit: int = 5) -> list[str]:
    """Human-readable differences between two identities (``{"options", "world_size", "precision", "data",
    "dataset_spec", "code", "libraries"}``), each line naming what changed and how."""
    lines = [f"{key}: {was} in the run, {now} now"
             for key, was, now in option_changes(old.get("options", {}), new.get("options", {}))]
    if old.get("world_size") != new.get("world_size"):
        lines.append(f"processes (world size): {old.get('world_size')} in the run, {new.get('world_size')} now")
    if old.get("precision") != new.get("precision"):
        lines.append(f"precision: {old.get('precision')!r} in the run, {new.get('precision')!r} now")
    lines += _data_differences(old.get("data") or {}, new.get("data") or {}, limit)
    if old.get("dataset_spec") != new.get("dataset_spec"):
        lines.append("dataset: its registry entry (s2dc.data.datasets) changed since the run started")
    if old.get("code") != new.get("code"):
        lines.append("code: the s2dc training code changed since the run started")
    if old.get("libraries") != new.get("libraries"):
        lines.append(f"libraries: {old.get('libraries')} in the run, {new.get('libraries')} now")
    return lines


def _data_differences(old: dict, new: dict, limit: int) -> list[str]:
    lines = []
    if old.get("dataset_json") != new.get("dataset_json"):
        lines.append("data: the dataset.json changed")
    before = {f[0]: f[1:] for f in old.get("files", [])}
    after = {f[0]: f[1:] for f in new.get("files", [])}
    for label, names in (("added", sorted(set(after) - set(before))), ("removed", sorted(set(before) - set(after))),
                         ("changed (size, time or inode)", sorted(k for k in set(before) & set(after) if before[k] != after[k]))):
        if names:
            lines.append(f"data: {len(names)} volume(s) {label}: {listed(names, limit)}")
    return lines
