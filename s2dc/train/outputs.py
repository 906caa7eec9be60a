"""How the workflow's start check tells the files that pretraining and fine-tuning jobs wrote from a user's files of
the same names, without torch (s2dc/workflow_checks.py): an exported encoder, a pretraining summary, its DVCLive
curves, a fine-tuning metrics.json."""

from __future__ import annotations

import hashlib
import json
import pickletools
import zipfile
from pathlib import Path

from ..files import is_json_with

#: Keys of the dict `s2dc export-encoder` saves (s2dc/export.py), and the prefix of its weights' names.
ENCODER_KEYS = frozenset({"state_dict", "encoder", "preprocess", "source", "step", "which"})
WEIGHT_PREFIX = "swinViT."
#: Pickle opcodes that push a str, and those that only keep the last pushed object in the memo.
STRING_OPS = frozenset({"BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE"})
MEMO_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})
#: Keys every pretraining summary.json and every fine-tuning metrics.json holds.
SUMMARY_KEYS = {"steps", "losses_this_run", "checkpoint"}
FINETUNE_KEYS = {"method", "label_ratio", "seed", "train_cases", "steps"}


def _pickle_ops(path: Path) -> list | None:
    """The opcodes of a torch.save archive's small ``data.pkl`` (the weights themselves untouched), or None where
    ``path`` is not such an archive (not a zip, unreadable, no ``data.pkl``, a damaged pickle)."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
            return list(pickletools.genops(archive.read(name))) if name is not None else None
    except (zipfile.BadZipFile, OSError, ValueError):
        return None


def is_exported_encoder(path: Path) -> bool:
    """Is ``path`` a torch.save archive whose pickle names every key of :data:`ENCODER_KEYS` and a ``swinViT.*``
    weight?"""
    ops = _pickle_ops(path)
    if ops is None:
        return False
    strings = {arg for _, arg, _ in ops if isinstance(arg, str)}
    return ENCODER_KEYS <= strings and any(s.startswith(WEIGHT_PREFIX) for s in strings)


def exported_from(path: Path) -> str | None:
    """The checkpoint an exported encoder records it was written from (its ``source``), or None where it records
    none that can be read from its pickle."""
    ops = _pickle_ops(path) or []
    for i, (op, arg, _) in enumerate(ops):
        if arg == "source" and op.name in STRING_OPS:  # the key; its value follows, after the memo's bookkeeping
            value = next((o for o in ops[i + 1:] if o[0].name not in MEMO_OPS), None)
            return value[1] if value is not None and value[0].name in STRING_OPS else None
    return None


def result_sha256(doc: dict) -> str:
    """The checksum a fine-tuning run records of the metrics.json it writes (``result_sha256``): of every other key,
    as canonical JSON, so that the tables tell the run's file from one edited after it."""
    body = {k: v for k, v in doc.items() if k != "result_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def edit_found(doc: dict) -> str | None:
    """How the result ``doc`` (a fine-tuning's metrics.json, a probe result) shows it is not what its run wrote, or
    None: a ``result_sha256`` that its content does not give, or none beside the ``code`` that every s2dc recording a
    result's code records with its checksum (result_sha256 since 2026-12-03, code since 2026-12-05): deleted with an
    edit. (A result written before both were recorded is taken as it is.)"""
    if "result_sha256" in doc:
        return "its result_sha256 differs" if doc["result_sha256"] != result_sha256(doc) else None
    if "code" in doc:
        return "its result_sha256 is missing, which the s2dc that recorded its code writes"
    return None


def is_edited(doc: dict) -> bool:
    """Whether :func:`edit_found` finds the result ``doc`` edited after its run wrote it."""
    return edit_found(doc) is not None


def is_pretrain_summary(path: Path) -> bool:
    return is_json_with(path, SUMMARY_KEYS)


def is_finetune_metrics(path: Path) -> bool:
    return is_json_with(path, FINETUNE_KEYS)


def foreign_curve_files(folder: Path) -> list[Path]:
    """The files in a DVCLive folder that s2dc's curve log (s2dc/train/live.py) does not write: anything but its
    ``metrics.json`` (a JSON object), ``plots/metrics/**/*.tsv`` tables with a ``step`` column and Snakemake's
    ``.snakemake_timestamp``."""
    foreign = []
    for path in sorted(Path(folder).rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            ours = False
        elif rel == ".snakemake_timestamp":
            ours = True
        elif rel == "metrics.json":
            ours = is_json_with(path, set())
        else:
            ours = rel.startswith("plots/metrics/") and path.suffix == ".tsv" and _starts_with_step(path)
        if not ours:
            foreign.append(path)
    return foreign


def _starts_with_step(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().startswith("step\t")
    except (OSError, UnicodeDecodeError):
        return False
