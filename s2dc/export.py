"""Encoder export for downstream use: SwinUNETR ``swinViT.*`` weights with strict key checks."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.networks.nets import SwinUNETR

from .data.datalist import read_datalist, registry_spec
from .data.errors import DataError
from .data.preprocess_config import PreprocessConfig
from .files import check_folder_path, remove_abandoned, rename_durably, work_sibling
from .models.encoder import EncoderConfig
from .train.checkpoint import atomic_save, list_checkpoints, load_checkpoint, lock_folder
from .train.finite import require_finite
from .train.publish import check_copy_location

PREFIX = "swinViT."


def swinunetr_for(cfg: EncoderConfig, out_channels: int = 1, **kwargs) -> SwinUNETR:
    """A ``SwinUNETR(use_v2=True)`` whose encoder has the sizes of ``cfg``."""
    return SwinUNETR(
        in_channels=cfg.in_channels, out_channels=out_channels, feature_size=cfg.feature_size,
        depths=cfg.depths, num_heads=cfg.num_heads, window_size=cfg.window_size, patch_size=cfg.patch_size,
        use_v2=True, **kwargs,
    )


def load_pretrained_encoder(model: SwinUNETR, path: str | Path) -> str:
    """Load exported encoder weights into ``model.swinViT`` strictly; returns a one-line report.

    Raises ``ValueError`` listing every missing or unexpected key (never a silent partial load).
    """
    blob = load_checkpoint(Path(path))
    if "state_dict" not in blob:
        raise ValueError(f"'{path}' is not an exported encoder (no 'state_dict'; use `s2dc export-encoder`)")
    weights = _tensors(blob["state_dict"], f"entry 'state_dict' of '{path}'")
    foreign = [k for k in weights if not k.startswith(PREFIX)]
    if foreign:
        raise ValueError(f"'{path}' has keys outside '{PREFIX}*': {foreign[:5]}")
    return _load_swinvit_strictly(model, {k[len(PREFIX):]: v for k, v in weights.items()}, path)


_PATCH = "patch_embed.proj.weight"


def _inflate_channels(encoder: dict, target: dict) -> tuple[dict, str]:
    """A one-channel encoder for a C-channel model: the patch embedding ``(F, 1, p, p, p)`` repeated over the C
    channels and divided by C, so an image whose channels are all equal gives the one-channel features."""
    have, want = encoder.get(_PATCH), target.get(_PATCH)
    if have is None or want is None or have.shape[1] != 1 or want.shape[1] == 1 or have.shape[0] != want.shape[0]:
        return encoder, ""
    channels = want.shape[1]
    inflated = {**encoder, _PATCH: have.repeat(1, channels, 1, 1, 1) / channels}
    return inflated, f"; input channels 1 -> {channels} (patch embedding repeated and divided by {channels})"


def _load_swinvit_strictly(model: SwinUNETR, encoder: dict, path: str | Path) -> str:
    """``model.swinViT.load_state_dict(encoder, strict=True)`` after a check that lists every mismatch (a
    one-channel encoder is first inflated to a multi-channel model's input, see :func:`_inflate_channels`)."""
    target = model.swinViT.state_dict()
    encoder, inflated = _inflate_channels(encoder, target)
    missing = sorted(set(target) - set(encoder))
    unexpected = sorted(set(encoder) - set(target))
    shape = sorted(k for k in set(target) & set(encoder) if target[k].shape != encoder[k].shape)
    if missing or unexpected or shape:
        raise ValueError(
            f"encoder weights in '{path}' do not match this SwinUNETR: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)}), shape mismatch {shape[:5]} ({len(shape)})"
        )
    require_finite(encoder, f"encoder weights in '{path}'")
    model.swinViT.load_state_dict(encoder, strict=True)
    count = sum(v.numel() for v in encoder.values())
    return (f"loaded {len(encoder)} tensors ({count:,} values) into SwinUNETR.swinViT; missing keys: none; "
            f"unexpected keys: none{inflated}")


# Encoder options that change the encoder's weights (names and shapes).
SIZE_FIELDS = ("in_channels", "feature_size", "depths", "num_heads", "window_size", "patch_size")


def _check_sizes(found: dict | None, expected: EncoderConfig | None, path: str | Path) -> None:
    """Raise ``ValueError`` naming both sides when the encoder sizes ``found`` in a file differ from ``expected``."""
    if found is None or expected is None:
        return
    want = expected.to_dict()
    differ = [f for f in SIZE_FIELDS if f in found and _as_list(found[f]) != _as_list(want[f])
              and not (f == "in_channels" and found[f] == 1)]  # one channel is inflated to several
    if differ:
        have = ", ".join(f"{f}={_as_list(found[f])}" for f in differ)
        need = ", ".join(f"{f}={_as_list(want[f])}" for f in differ)
        raise ValueError(f"encoder sizes in '{path}' ({have}) differ from the model's ({need}); "
                         "set the model sizes to the checkpoint's")


def _tensors(weights, where: str) -> dict:
    """``weights`` if it is a mapping of parameter names to tensors; ValueError naming ``where`` otherwise."""
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in weights.items()):
        raise ValueError(f"{where} is not a mapping of parameter names to tensors (got {type(weights).__name__}); "
                         "expected encoder weights, as `s2dc export-encoder` writes them")
    return weights


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def load_encoder_weights(model: SwinUNETR, path: str | Path, which: str | None = "teacher",
                         expected: EncoderConfig | None = None, whole_runs_only: bool = False) -> str:
    """Load the encoder of ``path`` into ``model.swinViT`` strictly; returns a one-line report.

    ``path`` is either an ``s2dc pretrain`` checkpoint (the ``which`` = ``"teacher"`` or ``"student"``
    encoder is taken) or an ``s2dc export-encoder`` file (which must hold the ``which`` encoder, when it says);
    which one is detected from its contents. ``which`` None: the encoder an export holds, a checkpoint's teacher.
    With ``expected``, the encoder sizes recorded in the file must equal it (``ValueError`` naming both);
    any missing, unexpected or differently shaped key is an error too (never a silent partial load).
    ``whole_runs_only``: a pretraining checkpoint short of its run's ``optim.steps`` is refused (as
    :func:`export_encoder` refuses it), naming the export with ``--partial`` that takes it anyway; the report names
    an export so made as partial.
    """
    if which not in ("teacher", "student", None):
        raise ValueError(f"which must be 'teacher' or 'student', got {which!r}")
    blob = load_checkpoint(Path(path))
    if not isinstance(blob, dict):
        raise ValueError(f"'{path}' is neither an s2dc pretraining checkpoint nor an exported encoder")
    if which is None:
        which = blob.get("which", "teacher") if "state_dict" in blob else "teacher"
    if "state_dict" in blob:
        _check_sizes(blob.get("encoder"), expected, path)
        if blob.get("which", which) != which:
            raise ValueError(f"model.init_which '{which}', but '{path}' holds the {blob['which']} encoder (exported "
                             f"so); give --model.init_which {blob['which']}, or export the {which}")
        report = load_pretrained_encoder(model, path)
        short = blob.get("partial")
        partial = f", partial: step {short.get('step')} of {short.get('steps')}" if isinstance(short, dict) else ""
        return (f"exported encoder '{path}' ({blob.get('which', '?')}, step {blob.get('step', '?')}{partial}): "
                f"strict load, {report}")
    if isinstance(blob.get("config"), dict) and ("teacher" in blob or "student" in blob):
        if which not in blob:
            raise ValueError(f"pretraining checkpoint '{path}' has no '{which}' weights")
        _tensors(blob[which], f"entry '{which}' of pretraining checkpoint '{path}'")
        _check_sizes(blob["config"].get("encoder"), expected, path)
        if whole_runs_only:
            refuse_an_unfinished_run(path, blob)
        encoder = {k[len("encoder."):]: v for k, v in blob[which].items() if k.startswith("encoder.")}
        if not encoder:
            raise ValueError(f"pretraining checkpoint '{path}' has no 'encoder.*' weights under '{which}'")
        report = _load_swinvit_strictly(model, encoder, path)
        return f"pretraining checkpoint '{path}' ({which}, step {blob.get('step', '?')}): strict load, {report}"
    raise ValueError(
        f"'{path}' is neither an s2dc pretraining checkpoint (no 'config' and 'teacher'/'student') "
        "nor an exported encoder (no 'state_dict')"
    )


def refuse_an_unfinished_run(path: str | Path, blob: dict) -> None:
    """ValueError when ``blob``, the pretraining checkpoint ``path`` holds, is short of its run's ``optim.steps`` (a
    run that diverged, was stopped or still runs, or an earlier checkpoint of it), naming the export with
    ``--partial`` that takes it anyway; an export's file passes."""
    if "state_dict" in blob or not isinstance(blob.get("config"), dict):
        return
    step, steps = blob.get("step"), (blob["config"].get("optim") or {}).get("steps")
    if isinstance(step, int) and isinstance(steps, int) and step < steps:
        raise ValueError(f"pretraining checkpoint '{path}': its run stopped at step {step} of its {steps} (it "
                         "diverged, was stopped or still runs, or this is an earlier checkpoint of it); to start "
                         f"from it anyway, export it with `s2dc export-encoder {path} <encoder.pt> --partial` "
                         "and give that file")


def trained_modality(config: dict) -> str | None:
    """The modality of the registry dataset (a pretraining pool) that a pretraining's ``data.source`` names, or None
    where it names none (a folder of volumes, a json of one's own) or can no longer be read."""
    source = (config.get("data") or {}).get("source") if isinstance(config, dict) else None
    try:
        spec = registry_spec(read_datalist(source)) if source and Path(source).is_file() else None
    except DataError:
        return None
    return spec.modality if spec is not None else None


def refuse_another_modality(path: str | Path, modality: str | None, spec, escape: str) -> None:
    """Raise ValueError, naming both, when the encoder file ``path`` was pretrained on a pool of ``modality`` and the
    registry dataset ``spec`` is of another (a PET encoder on an MRI dataset: both z-score their volumes, so the
    normalisation does not tell them apart); ``escape`` says how to use it anyway."""
    if modality is None or spec is None or modality == spec.modality:
        return
    raise ValueError(f"'{path}' was pretrained on a {modality} pool, but '{spec.name}' is {spec.modality}: an encoder "
                     f"of another modality; give the {spec.modality} encoder, or {escape}")


def encoder_plan(path: str | Path, whole_runs_only: bool = False) -> dict:
    """What an encoder file says about the network that reads it: ``{"encoder": sizes (EncoderConfig fields,
    token_stage included), "preprocess": the pretraining's preprocess options or None, "modality": that of the pool it
    was pretrained on, or None}``, from an exported encoder or a pretraining checkpoint; ``ValueError`` naming the file
    when it records no sizes (or, ``whole_runs_only``, when it is an unfinished run's checkpoint:
    :func:`refuse_an_unfinished_run`)."""
    blob = load_checkpoint(Path(path))
    if whole_runs_only and isinstance(blob, dict):
        refuse_an_unfinished_run(path, blob)
    if isinstance(blob, dict) and "state_dict" in blob and "encoder" in blob:
        section, record, modality = "", blob, blob.get("modality")
    elif isinstance(blob, dict) and isinstance(blob.get("config"), dict) and "encoder" in blob["config"]:
        section, record, modality = "'config' -> ", blob["config"], trained_modality(blob["config"])
    else:
        raise ValueError(f"'{path}' records no encoder sizes (expected `s2dc export-encoder` output or a "
                         "pretraining checkpoint)")
    sizes, preprocess = record["encoder"], record.get("preprocess")
    EncoderConfig.recorded(sizes, f"entry {section}'encoder' of '{path}'")  # sizes of the right kinds
    where = f"entry {section}'preprocess' of '{path}'"
    if preprocess is not None and not isinstance(preprocess, dict):
        raise ValueError(f"{where} is {type(preprocess).__name__}; expected the pretraining's preprocess options as "
                         "a mapping")
    if preprocess is not None and preprocess.get("intensity", "ct") != "ct":  # a window an older s2dc took beside a
        preprocess = {k: v for k, v in preprocess.items() if k not in ("a_min", "a_max")}  # z-score, which ignored it
    try:
        PreprocessConfig(**(preprocess or {}))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} is no set of preprocess options: {exc}") from None
    if modality is not None and not isinstance(modality, str):
        raise ValueError(f"entry 'modality' of '{path}' is {modality!r}; expected a modality's name (e.g. 'CT')")
    return {"encoder": dict(sizes), "preprocess": preprocess, "modality": modality}


def export_encoder(checkpoint: str | Path, output: str | Path, which: str = "teacher", partial: bool = False) -> str:
    """Write the ``which`` encoder of a pretraining checkpoint (or of a run folder's newest) as
    ``{"state_dict": {swinViT.*}, "encoder": cfg, ...}``, then verify it loads strictly into a fresh
    ``SwinUNETR(use_v2=True)``; returns the report. A checkpoint short of its run's ``optim.steps`` (a run that
    diverged, was stopped or still runs) is refused unless ``partial`` (the file then records ``partial``); the run
    folder's lock is held while it is read, so a running run's folder is refused."""
    if which not in ("teacher", "student"):
        raise ValueError(f"which must be 'teacher' or 'student', got {which!r}")
    checkpoint, output = Path(checkpoint), Path(output)
    if checkpoint.is_file() and output.exists() and output.resolve() == checkpoint.resolve():
        raise ValueError(f"the output '{output}' is the checkpoint itself; write the encoder to another file")
    run_dir = checkpoint if checkpoint.is_dir() else checkpoint.parent.parent
    in_run = checkpoint.is_dir() or checkpoint.parent.name == "checkpoints"  # a run's folder, or one of its checkpoints
    check_encoder_output(output, run_dir if in_run else None)
    remove_abandoned(output.parent)  # what an export killed midway left beside its output
    lock = lock_folder(run_dir) if (run_dir / "run.json").is_file() else None  # a pretraining run's folder
    tmp = work_sibling(output, "tmp")
    try:
        if checkpoint.is_dir():
            found = list_checkpoints(checkpoint / "checkpoints")
            if not found:
                raise FileNotFoundError(f"no checkpoint in '{checkpoint / 'checkpoints'}'")
            checkpoint = found[-1]
        state = load_checkpoint(Path(checkpoint))
        if not isinstance(state, dict) or which not in state or "config" not in state:
            raise ValueError(f"'{checkpoint}' is not an s2dc pretraining checkpoint (no '{which}' or 'config')")
        if "step" not in state:
            raise ValueError(f"'{checkpoint}' is not an s2dc pretraining checkpoint (no step)")
        try:
            steps = int(state["config"]["optim"]["steps"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"'{checkpoint}' is not an s2dc pretraining checkpoint (no config.optim.steps)") from None
        step = int(state["step"])
        if step < steps and not partial:
            raise ValueError(f"'{checkpoint}': the run stopped at step {step} of its {steps} (it diverged, was "
                             "stopped, or still runs); export it anyway with --partial")
        cfg = EncoderConfig.recorded(state["config"].get("encoder"), f"config.encoder of '{checkpoint}'")
        weights = {PREFIX + k[len("encoder."):]: v for k, v in state[which].items() if k.startswith("encoder.")}
        require_finite(weights, f"the {which} encoder weights of '{checkpoint}'")
        short = {"partial": {"step": step, "steps": steps}} if step < steps else {}
        atomic_save({"state_dict": weights, "encoder": cfg.to_dict(), "preprocess": state["config"].get("preprocess"),
                     "modality": trained_modality(state["config"]), "source": str(checkpoint), "step": step,
                     "which": which, **short}, tmp)
    finally:
        if lock is not None:
            lock.close()
    try:  # verified beside the output, which (an earlier export) is replaced only by an encoder that loads
        report = load_pretrained_encoder(swinunetr_for(cfg), tmp)
        rename_durably(tmp, output)
    except ValueError as e:
        raise ValueError(str(e).replace(str(tmp), str(output))) from None
    finally:
        tmp.unlink(missing_ok=True)
    return f"{output}: {which} encoder at step {step}{' of ' + str(steps) if short else ''}; {report}"


def check_encoder_output(output: Path, run_dir: Path | None) -> None:
    """Refuse a path for the encoder exported from the run of ``run_dir`` (None: a checkpoint in no run's folder) in or
    above that folder (:func:`s2dc.train.publish.check_copy_location`), a folder, or an existing file unless it is an
    earlier export (never a checkpoint or a user's file): the check of `s2dc export-encoder` and of
    `s2dc pretrain --export-encoder`, which makes it before training."""
    output = Path(output)
    if run_dir is not None:
        check_copy_location(output, Path(run_dir), "encoder")
    if output.is_dir():
        raise ValueError(f"'{output}' is a folder; give the .pt file the encoder is written to")
    if not output.exists():
        check_folder_path(output.parent, f"the folder of '{output}'")
        return
    try:
        blob = load_checkpoint(output)
    except ValueError:
        blob = None
    if not (isinstance(blob, dict) and "state_dict" in blob and "encoder" in blob and "config" not in blob):
        raise ValueError(f"'{output}' exists and is not an exported encoder; refusing to overwrite it "
                         "(remove it or write the encoder elsewhere)")
