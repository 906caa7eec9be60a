"""Pretraining configuration: typed sections and one help text per option (see :mod:`s2dc.config`)."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path

from .. import config as cfgtools
from ..data.preprocess_config import PreprocessConfig
from ..losses.options import LossConfig
from ..models.encoder_config import EncoderConfig
from ..view_config import ViewConfig


DEVICES = ("auto", "cpu", "cuda")
RESUME_MODES = ("auto", "if_unchanged", "never")


@dataclass(frozen=True)
class DataConfig:
    source: str = ""
    key: str = "training"
    cache_dir: str | None = None
    workers: int = 2

    def __post_init__(self) -> None:
        cfgtools.check(0 <= self.workers <= cfgtools.WORKERS_MAX, "data.workers", f"in 0..{cfgtools.WORKERS_MAX}",
                       self.workers)
        cfgtools.check(bool(self.key), "data.key", "a section name of dataset.json", self.key)


@dataclass(frozen=True)
class HeadConfig:
    hidden_dim: int = 2048
    embed_dim: int = 512

    def __post_init__(self) -> None:
        for name in ("hidden_dim", "embed_dim"):
            cfgtools.check(getattr(self, name) >= 1, f"head.{name}", ">= 1", getattr(self, name))


@dataclass(frozen=True)
class OptimConfig:
    steps: int = 100_000
    batch_size: int = 1
    lr: float = 3e-4
    weight_decay: float = 0.1
    warmup_steps: int = 500
    grad_clip: float = 3.0

    def __post_init__(self) -> None:
        cfgtools.check(self.steps >= 1, "optim.steps", ">= 1", self.steps)
        cfgtools.check(self.batch_size >= 1, "optim.batch_size", ">= 1", self.batch_size)
        cfgtools.check(self.warmup_steps >= 0, "optim.warmup_steps", ">= 0", self.warmup_steps)
        cfgtools.check_warmup("optim", self.warmup_steps, self.steps)
        cfgtools.check(0 < self.lr < math.inf, "optim.lr", "a finite number > 0", self.lr)
        cfgtools.check(0 <= self.weight_decay < math.inf, "optim.weight_decay", "a finite number >= 0", self.weight_decay)
        cfgtools.check(0 <= self.grad_clip < math.inf, "optim.grad_clip", "a finite number >= 0 (0 disables)", self.grad_clip)


@dataclass(frozen=True)
class EMAConfig:
    momentum: float = 0.999
    schedule: str = "constant"

    def __post_init__(self) -> None:
        # 1 keeps the teacher at its random initialisation (the cosine schedule, too, runs from it to 1)
        cfgtools.check(0 <= self.momentum < 1, "ema.momentum", ">= 0 and < 1 (1 never moves the teacher)", self.momentum)
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"ema.schedule must be 'constant' or 'cosine', got {self.schedule!r}")


@dataclass(frozen=True)
class RunConfig:
    out_dir: str = "runs/pretrain"
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    checkpoint_every: int = 1000
    keep_last: int = 3
    log_every: int = 10
    resume: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        cfgtools.check(bool(self.out_dir.strip()), "run.out_dir", "a folder path", self.out_dir)
        cfgtools.check(0 <= self.seed <= cfgtools.SEED_MAX, "run.seed", f"in 0..{cfgtools.SEED_MAX} (NumPy's seeds)", self.seed)
        cfgtools.check(self.device in DEVICES, "run.device", f"one of {list(DEVICES)}", self.device)
        cfgtools.check(self.amp in ("auto", "bf16", "off"), "run.amp", "'auto', 'bf16' or 'off'", self.amp)
        for name in ("checkpoint_every", "keep_last", "log_every"):
            cfgtools.check(getattr(self, name) >= 1, f"run.{name}", ">= 1", getattr(self, name))
        cfgtools.check(self.resume in RESUME_MODES or Path(self.resume).exists(), "run.resume",
                       f"one of {list(RESUME_MODES)} or the path of an existing checkpoint", self.resume)


@dataclass(frozen=True)
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    views: ViewConfig = field(default_factory=ViewConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if self.views.token_stride != self.encoder.token_stride:
            raise ValueError(
                f"views.token_stride ({self.views.token_stride}) must equal the encoder's stride at "
                f"encoder.token_stage={self.encoder.token_stage} ({self.encoder.token_stride}); it is set automatically"
            )
        for size in self.views.crop_size:
            if size % self.encoder.min_input_multiple:
                raise ValueError(
                    f"crop size {self.views.crop_size} (views.roi_size / views.grid) must be a multiple of "
                    f"{self.encoder.min_input_multiple} (encoder.patch_size * 16)"
                )
        if self.encoder.in_channels != 1:
            raise ValueError(f"encoder.in_channels must be 1 for pretraining (each pool volume is one channel), got "
                             f"{self.encoder.in_channels}; a multi-channel dataset reads it downstream")
        loss, views = self.loss, self.views
        crops = self.optim.batch_size * views.grid**2
        if crops > cfgtools.MAX_CROPS:
            raise ValueError(f"optim.batch_size x views.grid**2 ({self.optim.batch_size} x {views.grid}**2 = {crops} "
                             f"crops a step) must be at most {cfgtools.MAX_CROPS}")
        if loss.weight_global and views.grid == 1 and self.optim.batch_size == 1:
            raise ValueError("loss.weight_global > 0 with views.grid 1 and optim.batch_size 1: one crop a step, and "
                             "the global head's batch normalisation needs two; raise views.grid or optim.batch_size")
        if loss.weight_global and views.grid == 1 and loss.queue_size == 0:
            raise ValueError("loss.weight_global > 0 with views.grid 1 and loss.queue_size 0: a crop has no negative "
                             "(no other crop of its volume, no queue), so L_g is 0 at every step; raise views.grid or "
                             "loss.queue_size, or set loss.weight_global 0")
        tx, ty, tz = views.token_grid
        per_set = tx * ty * tz if loss.matching == "volume" else tx * ty
        if (loss.weight_p2p or loss.weight_p2s) and per_set < 2:
            raise ValueError(f"views.roi_size {views.roi_size} in tokens of {views.token_stride} voxels "
                             f"(encoder.token_stage {self.encoder.token_stage}) gives {per_set} token per matching set "
                             f"(loss.matching {loss.matching}); L_p2p and L_p2s need at least 2: a larger "
                             "views.roi_size or an earlier encoder.token_stage")

    def to_dict(self) -> dict:
        return cfgtools.to_dict(self)


HELP = {
    "data.source": "MSD-style dataset.json or a folder of NIfTI volumes (required)",
    "data.key": "section of dataset.json listing the volumes",
    "data.cache_dir": "preprocessed-volume cache root (a subfolder per preprocessing options and code); default <run.out_dir>/cache",
    "data.workers": "DataLoader worker processes",
    "preprocess.intensity": "'ct': window [a_min, a_max] -> [0, 1]; 'zscore': z-score over nonzero voxels (MRI/PET); "
                            "'zscore_volume': over every voxel",
    "preprocess.a_min": "CT window low (HU)",
    "preprocess.a_max": "CT window high (HU)",
    "preprocess.spacing": "resample to this voxel spacing in mm (three values), or 'none' to keep",
    "preprocess.orientation": "axis codes to reorient to",
    "preprocess.crop_foreground": "crop to the bounding box of voxels above the volume minimum",
    "encoder.in_channels": "input channels",
    "encoder.feature_size": "Swin embedding width (48 = SwinViT-B of SwinUNETR); multiple of 12",
    "encoder.depths": "blocks per Swin stage (4 values)",
    "encoder.num_heads": "attention heads per Swin stage (4 values)",
    "encoder.window_size": "attention window (voxels of tokens)",
    "encoder.patch_size": "patch-embedding stride",
    "encoder.token_stage": "hidden state used as matching tokens, 0 (patch embedding) .. 4 (last stage)",
    "encoder.drop_path_rate": "stochastic depth rate",
    "encoder.use_checkpoint": "gradient checkpointing in the encoder (saves memory)",
    "views.roi_size": "large ROI (X Y Z) cut from each volume, at most 1024 each",
    "views.grid": "P: the ROI is split into P x P in-plane sub-crops",
    "views.token_stride": "voxels per token (derived from the encoder; do not set)",
    "views.rotation_deg": "patch branch: max rotation about the depth axis (degrees)",
    "views.scale_range": "patch branch: isotropic scale range (low high)",
    "views.translation_frac": "patch branch: max in-plane shift, fraction of the crop size",
    "views.crop_rotation_deg": "global branch: max rotation about each axis per crop (degrees)",
    "views.crop_scale_jitter": "global branch: per-axis scale 1 +/- this",
    "views.crop_translation_frac": "global branch: max in-plane shift per crop, fraction of the crop size",
    "views.intensity_shift": "global branch: max additive intensity shift per crop",
    "head.hidden_dim": "projection-head hidden width",
    "head.embed_dim": "embedding width of token and global heads",
    "loss.weight_global": "weight of L_g (0 disables it)",
    "loss.weight_p2p": "weight of L_p2p (0 disables it)",
    "loss.weight_p2s": "weight of L_p2s (0 disables it)",
    "loss.matching": "'volume': match over the whole 3-D token set; 'slice': per depth slice (release)",
    "loss.assignment": "'dual_softmax' (Eq. 2) or 'sinkhorn' (optimal transport with dustbin)",
    "loss.p2p_form": "'positive' (poster Eq. 3) or 'positive_negative' (release: + -log(1-M) on negatives)",
    "loss.match_temperature": "tau in M_t = q k^T / tau (release: 1)",
    "loss.bin_score": "Sinkhorn dustbin score alpha",
    "loss.sinkhorn_iters": "Sinkhorn iterations",
    "loss.p2s_form": "'release' or 'poster' (Eqs. 4-6) form of L_p2s",
    "loss.p2s_spread": "sharpness spread: 'std' (release) or 'variance' (poster)",
    "loss.detach_weights": "detach the sharpness weights of L_p2s (the release does not)",
    "loss.global_temperature": "InfoNCE temperature of L_g",
    "loss.global_normalize": "L2-normalise global embeddings in L_g (the release does not)",
    "loss.queue_size": "FIFO queue of past keys for L_g (0 disables it)",
    "optim.steps": "total optimisation steps",
    "optim.batch_size": "ROIs per process and step (each gives views.grid**2 crops: at most 1024 crops a step)",
    "optim.lr": "AdamW peak learning rate",
    "optim.weight_decay": "AdamW weight decay",
    "optim.warmup_steps": "linear warm-up steps before the cosine decay (fewer than optim.steps)",
    "optim.grad_clip": "clip the global gradient norm to this (0 disables)",
    "ema.momentum": "teacher EMA momentum (start value for the cosine schedule)",
    "ema.schedule": "'constant' (release) or 'cosine' (momentum -> 1 at the end)",
    "run.out_dir": "output folder: run.json, checkpoints/, dvclive/, summary.json",
    "run.seed": "random seed (model init, ROI sampling, augmentations)",
    "run.device": "'auto' (CUDA if available, else CPU), 'cpu' or 'cuda' (the GPU of LOCAL_RANK under torchrun)",
    "run.amp": "'auto' (bf16 autocast on CUDA), 'bf16' or 'off'",
    "run.checkpoint_every": "write a checkpoint every N steps (and at the end)",
    "run.keep_last": "keep the newest K checkpoints",
    "run.log_every": "log losses and learning rate every N steps",
    "run.resume": "'auto': continue the newest checkpoint in run.out_dir if it is the same run (options, data and "
                  "code), refuse if not; 'if_unchanged': continue it if it is the same run, else move the old run to "
                  "run.out_dir/previous/ and start afresh; 'never': start afresh (an old run is moved to previous/); "
                  "or a checkpoint path (must be the same run)",
    "run.progress": "show a progress bar",
}


def _derived_views(built: dict) -> dict:
    return {"token_stride": built["encoder"].token_stride}


def build_config(values: dict) -> PretrainConfig:
    """Nested ``{section: {field: value}}`` -> validated :class:`PretrainConfig`; unknown keys are errors."""
    return cfgtools.build_config(PretrainConfig, values, derived={"views": _derived_views})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` and one ``--section.field`` option per pretraining option."""
    defaults = PretrainConfig(views=ViewConfig(token_stride=EncoderConfig().token_stride)).to_dict()
    cfgtools.add_arguments(parser, PretrainConfig, HELP, defaults)


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    """YAML file (if any) overlaid with the command-line options -> validated config."""
    return build_config(cfgtools.values_from_args(args))
