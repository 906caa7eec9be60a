"""Encoder export for downstream use: SwinUNETR ``swinViT.*`` weights with strict key checks."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.networks.nets import SwinUNETR

from .models.encoder import EncoderConfig
from .train.checkpoint import atomic_save, load_checkpoint

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
    weights = blob["state_dict"]
    foreign = [k for k in weights if not k.startswith(PREFIX)]
    if foreign:
        raise ValueError(f"'{path}' has keys outside '{PREFIX}*': {foreign[:5]}")
    target = model.swinViT.state_dict()
    encoder = {k[len(PREFIX):]: v for k, v in weights.items()}
    missing = sorted(set(target) - set(encoder))
    unexpected = sorted(set(encoder) - set(target))
    shape = sorted(k for k in set(target) & set(encoder) if target[k].shape != encoder[k].shape)
    if missing or unexpected or shape:
        raise ValueError(
            f"encoder weights in '{path}' do not match this SwinUNETR: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)}), shape mismatch {shape[:5]} ({len(shape)})"
        )
    model.swinViT.load_state_dict(encoder, strict=True)
    count = sum(v.numel() for v in encoder.values())
    return f"loaded {len(encoder)} tensors ({count:,} values) into SwinUNETR.swinViT; missing keys: none; unexpected keys: none"


def export_encoder(checkpoint: str | Path, output: str | Path, which: str = "teacher") -> str:
    """Write the ``which`` encoder of a pretraining checkpoint as ``{"state_dict": {swinViT.*}, "encoder": cfg}``,
    then verify it loads strictly into a fresh ``SwinUNETR(use_v2=True)``; returns the report."""
    if which not in ("teacher", "student"):
        raise ValueError(f"which must be 'teacher' or 'student', got {which!r}")
    state = load_checkpoint(Path(checkpoint))
    if which not in state or "config" not in state:
        raise ValueError(f"'{checkpoint}' is not an s2dc pretraining checkpoint (no '{which}' or 'config')")
    cfg = EncoderConfig(**state["config"]["encoder"])
    weights = {PREFIX + k[len("encoder."):]: v for k, v in state[which].items() if k.startswith("encoder.")}
    output = Path(output)
    atomic_save({"state_dict": weights, "encoder": cfg.to_dict(), "source": str(checkpoint),
                 "step": int(state["step"]), "which": which}, output)
    try:
        report = load_pretrained_encoder(swinunetr_for(cfg), output)
    except Exception:
        output.unlink(missing_ok=True)
        raise
    return f"{output}: {which} encoder at step {state['step']}; {report}"
