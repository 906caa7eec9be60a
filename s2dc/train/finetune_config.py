"""Fine-tuning configuration (any downstream task; MONAI SwinUNETR(use_v2=True) or its encoder): typed sections
and one help text per option, built with the same machinery as the pretraining options (see :mod:`s2dc.config`)."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field, replace

from .. import config as cfgtools
from ..data.preprocess_config import PreprocessConfig
from ..models.encoder_config import EncoderConfig
from . import identity
from .schedule import SCHEDULES


@dataclass(frozen=True)
class FinetuneDataConfig:
    source: str = ""
    train_key: str = "training"
    val_key: str = "validation"
    label_ratio: float = 1.0
    split_seed: int | None = None
    cache_dir: str | None = None
    workers: int = 2
    input_channel: str = ""

    def __post_init__(self) -> None:
        if not 0.0 < self.label_ratio <= 1.0:
            raise ValueError(f"data.label_ratio must be in (0, 1], got {self.label_ratio}")
        cfgtools.check(self.split_seed is None or self.split_seed >= 0, "data.split_seed",
                       "a seed >= 0, or none (the run's seed)", self.split_seed)
        cfgtools.check(0 <= self.workers <= cfgtools.WORKERS_MAX, "data.workers", f"in 0..{cfgtools.WORKERS_MAX}",
                       self.workers)


@dataclass(frozen=True)
class FinetunePreprocessConfig(PreprocessConfig):
    """:class:`PreprocessConfig` with the release's BTCV fine-tuning window (HU [-175, 250] -> [0, 1]).

    The release also resamples to 1.5 mm (``spacing: [1.5, 1.5, 1.5]``); the default here keeps the
    native spacing. Labels follow the image through orientation, spacing (nearest), foreground crop
    and padding.
    """

    intensity: str = "ct"
    a_min: float = -175.0
    a_max: float = 250.0
    spacing: tuple[float, float, float] | None = None


#: ``model.*`` options that fix the encoder's weight shapes: they must equal a pretrained encoder's.
ARCHITECTURE = ("feature_size", "depths", "num_heads", "window_size", "patch_size")


@dataclass(frozen=True)
class ModelConfig:
    feature_size: int = 48
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    patch_size: int = 2
    drop_path_rate: float = 0.0
    use_checkpoint: bool = False
    init: str = "scratch"
    init_which: str = "teacher"

    def __post_init__(self) -> None:
        try:
            self.encoder_config()
        except ValueError as err:  # EncoderConfig names its options encoder.*; here they are model.*
            raise ValueError(str(err).replace("encoder.", "model.")) from None
        if self.init_which not in ("teacher", "student"):
            raise ValueError(f"model.init_which must be 'teacher' or 'student', got {self.init_which!r}")
        if not self.init:
            raise ValueError("model.init must be 'scratch' or a checkpoint path, got ''")
        if self.init == "scratch" and self.init_which != "teacher":
            raise ValueError(f"model.init_which '{self.init_which}' picks the encoder of a pretraining checkpoint, but "
                             "model.init is 'scratch' (random weights, no file): leave model.init_which unset, or give "
                             "model.init a checkpoint")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"model.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")

    def encoder_config(self, in_channels: int = 1) -> EncoderConfig:
        """The encoder sizes as an :class:`EncoderConfig` with ``in_channels`` input channels."""
        return EncoderConfig(
            in_channels=in_channels, feature_size=self.feature_size, depths=self.depths, num_heads=self.num_heads,
            window_size=self.window_size, patch_size=self.patch_size, drop_path_rate=self.drop_path_rate,
            use_checkpoint=self.use_checkpoint,
        )


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 30_000
    batch_size: int = 1
    roi_size: tuple[int, int, int] = (96, 96, 96)
    samples_per_volume: int = 4
    flip_prob: float = 0.1
    flip_axes: tuple[int, ...] = (0, 1, 2)
    rot90_prob: float = 0.0
    lr: float = 1e-4
    encoder_lr_scale: float = 1.0
    frozen_encoder_steps: int = 0
    weight_decay: float = 1e-5
    amsgrad: bool = False
    warmup_steps: int = 500
    epochs: int = 0
    warmup_epochs: int = 0
    schedule: str = "cosine"
    amp: str = "auto"
    grad_clip: float = 0.0
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.samples_per_volume < 1:
            raise ValueError(
                "train.steps, train.batch_size and train.samples_per_volume must be >= 1, got "
                f"{self.steps}, {self.batch_size}, {self.samples_per_volume}"
            )
        if self.warmup_steps < 0 or self.log_every < 1:
            raise ValueError(f"train.warmup_steps must be >= 0 and train.log_every >= 1, got {self.warmup_steps}, {self.log_every}")
        if not self.epochs:  # with epochs, the steps are derived (FinetuneConfig.in_steps) and checked there
            cfgtools.check_warmup("train", self.warmup_steps, self.steps)
            self.check_frozen_encoder_steps()
        cfgtools.check(self.epochs >= 0, "train.epochs", "an integer >= 0 (0: train.steps)", self.epochs)
        cfgtools.check(self.warmup_epochs >= 0, "train.warmup_epochs", "an integer >= 0", self.warmup_epochs)
        if self.warmup_epochs and not self.epochs:
            raise ValueError(f"train.warmup_epochs ({self.warmup_epochs}) needs train.epochs > 0; without it the run "
                             "counts steps: set train.warmup_steps instead")
        if self.epochs and self.warmup_epochs >= self.epochs:
            raise ValueError(f"train.warmup_epochs ({self.warmup_epochs}) must be less than train.epochs "
                             f"({self.epochs}): a warm-up as long as the run never reaches the peak learning rate")
        if any(s < 1 for s in self.roi_size):
            raise ValueError(f"train.roi_size must be 3 positive integers, got {list(self.roi_size)}")
        cfgtools.check(max(self.roi_size) <= cfgtools.MAX_AXIS, "train.roi_size",
                       f"at most {cfgtools.MAX_AXIS} voxels along each axis", list(self.roi_size))
        crops = self.batch_size * self.samples_per_volume
        if crops > cfgtools.MAX_CROPS:
            raise ValueError(f"train.batch_size x train.samples_per_volume ({self.batch_size} x "
                             f"{self.samples_per_volume} = {crops} crops a step) must be at most {cfgtools.MAX_CROPS}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"train.flip_prob must be in [0, 1], got {self.flip_prob}")
        cfgtools.check(0.0 <= self.rot90_prob <= 1.0, "train.rot90_prob", "in [0, 1]", self.rot90_prob)
        if self.rot90_prob and self.roi_size[0] != self.roi_size[1]:
            raise ValueError(f"train.rot90_prob ({self.rot90_prob:g}) turns crops in the X-Y plane, which needs "
                             f"train.roi_size X = Y (got {list(self.roi_size)}): a turned crop would change shape")
        axes = self.flip_axes
        cfgtools.check(len(set(axes)) == len(axes) and set(axes) <= {0, 1, 2}, "train.flip_axes",
                       "distinct axes among 0 1 2 (none: no flips)", list(axes))
        object.__setattr__(self, "flip_axes", tuple(sorted(axes)))  # 2 0 and 0 2 flip alike
        cfgtools.check(isinstance(self.amsgrad, bool), "train.amsgrad", "true or false", self.amsgrad)
        cfgtools.check(self.schedule in SCHEDULES, "train.schedule", " or ".join(map(repr, SCHEDULES)), self.schedule)
        if self.amp not in ("auto", "bf16", "off"):
            raise ValueError(f"train.amp must be 'auto', 'bf16' or 'off', got {self.amp!r}")
        cfgtools.check(0 < self.lr < math.inf, "train.lr", "a finite number > 0", self.lr)
        for name in ("weight_decay", "grad_clip", "encoder_lr_scale"):
            value = getattr(self, name)
            cfgtools.check(0 <= value < math.inf, f"train.{name}", "a finite number >= 0", value)
        if self.frozen_encoder_steps and not self.encoder_lr_scale:
            raise ValueError(f"train.frozen_encoder_steps ({self.frozen_encoder_steps}) with train.encoder_lr_scale 0: "
                             "the encoder is frozen throughout already; set one of them")

    def check_frozen_encoder_steps(self) -> None:
        """Refuse a frozen phase that is negative or covers the whole run (that is train.encoder_lr_scale 0)."""
        frozen = self.frozen_encoder_steps
        cfgtools.check(isinstance(frozen, int) and 0 <= frozen < self.steps, "train.frozen_encoder_steps",
                       f"an integer in 0..{self.steps - 1} (fewer than the run's {self.steps} steps; a frozen encoder "
                       "throughout is train.encoder_lr_scale 0)", frozen)


#: ``classify.view``: random ``train.roi_size`` crops (validation: every ROI window, logits averaged), or the whole
#: volume resized to it.
VIEWS = ("crops", "whole")


@dataclass(frozen=True)
class ClassifyConfig:
    """What a classification network sees and its head; other tasks refuse these options set.

    ``view: whole`` is the release's CC-CCII input (``Downstream/CC-CCII/utils/data_utils.py``): each volume
    centre-cropped in plane (X, Y) to ``in_plane`` of its size, the box moved by up to ``shift`` of that size in
    training, then resized to ``train.roi_size`` by nearest neighbour; ``brightness``/``contrast``: in training, a
    uniform offset in [-b, b] and factor in [1 - c, 1 + c] on the intensities, clipped to [0, 1] after a CT window;
    ``head_hidden`` > 0: the release's two linear layers (pooled features -> ``head_hidden`` -> classes, no
    non-linearity between), 0: one. The release's values: ``whole``, 0.75, 0.035 (18 of 512 pixels), 1024, 0.07,
    0.05."""

    view: str = "crops"
    in_plane: float = 1.0
    shift: float = 0.0
    head_hidden: int = 0
    brightness: float = 0.0
    contrast: float = 0.0

    def __post_init__(self) -> None:
        cfgtools.check(self.view in VIEWS, "classify.view", " or ".join(map(repr, VIEWS)), self.view)
        cfgtools.check(0.0 < self.in_plane <= 1.0, "classify.in_plane", "a fraction in (0, 1]", self.in_plane)
        room = (1.0 - self.in_plane) / 2
        cfgtools.check(0.0 <= self.shift <= room + 1e-9, "classify.shift",  # (1 - 0.8) / 2 is 0.0999...: 0.1 passes
                       f"in [0, (1 - classify.in_plane) / 2 = {room:g}] (the moved box stays inside the volume)",
                       self.shift)
        if self.view == "crops" and (self.in_plane, self.shift) != (1.0, 0.0):
            raise ValueError(f"classify.in_plane ({self.in_plane:g}) and classify.shift ({self.shift:g}) shape the "
                             "whole-volume view: set classify.view whole, or leave them at 1 and 0")
        cfgtools.check(0 <= self.head_hidden <= 1 << 16, "classify.head_hidden",
                       "an integer in 0..65536 (0: one linear layer)", self.head_hidden)
        for name in ("brightness", "contrast"):
            value = getattr(self, name)
            cfgtools.check(0.0 <= value < 1.0, f"classify.{name}", "in [0, 1)", value)


@dataclass(frozen=True)
class SegmentConfig:
    """Where segmentation crops are centred and how their intensities are jittered; other tasks refuse these set.

    ``pos``/``neg``: the odds of a training crop centred on a labelled voxel against one centred on a background
    voxel inside the body (MONAI ``RandCropByPosNegLabeld``); ``intensity_scale``/``intensity_shift``: with
    probability ``*_prob`` a crop's intensities times a factor in [1 - s, 1 + s] / plus an offset in [-s, s] (MONAI
    ``RandScaleIntensityd``, ``RandShiftIntensityd``), after the flips and turns; 0 leaves them out. The release's
    BTCV values (``Downstream/BTCV/utils/data_utils.py``, ``main.py``): 3, 1, 0.1 at 0.1, 0.1 at 0.5."""

    pos: float = 1.0
    neg: float = 1.0
    intensity_scale: float = 0.0
    intensity_scale_prob: float = 1.0
    intensity_shift: float = 0.0
    intensity_shift_prob: float = 1.0

    def __post_init__(self) -> None:
        for name in ("pos", "neg"):
            value = getattr(self, name)
            cfgtools.check(0 <= value < math.inf, f"segment.{name}", "a finite number >= 0", value)
        if not self.pos + self.neg > 0:
            raise ValueError("segment.pos and segment.neg are both 0: no crop could be drawn; give one of them > 0")
        for kind in ("scale", "shift"):
            amount, prob = getattr(self, f"intensity_{kind}"), getattr(self, f"intensity_{kind}_prob")
            cfgtools.check(0 <= amount < 1, f"segment.intensity_{kind}", "in [0, 1) (0: none)", amount)
            cfgtools.check(0 <= prob <= 1, f"segment.intensity_{kind}_prob", "in [0, 1]", prob)
            if prob != 1.0 and not amount:
                raise ValueError(f"segment.intensity_{kind}_prob ({prob:g}) without segment.intensity_{kind}: set "
                                 f"the {kind} too, or leave its probability at 1")


#: ``translate.inputs``: the one sequence data.input_channel names, or each sequence in turn (a crop's input drawn at
#: random, or every sequence of a crop as input, a step each: ``cycle``).
TRANSLATE_INPUTS = ("one", "each", "cycle")
#: ``translate.targets``: the sequences other than the input, or all of them (the input's own too).
TRANSLATE_TARGETS = ("others", "all")
#: ``translate.loss``: mean absolute or mean squared error inside the brain.
TRANSLATE_LOSSES = ("l1", "mse")
#: ``translate.mask``: the brain the loss and the scores read: the input's non-zero voxels (after ``zscore``), or
#: each sequence's own voxels >= -0.35 (after ``zscore_volume``; the release's ``data.ge(-0.35)``).
TRANSLATE_MASKS = ("nonzero", "release")
#: The release's brain threshold on sequences z-scored over the whole volume (``Downstream/RECON/trainer.py``).
RELEASE_BRAIN_FLOOR = -0.35
#: ``translate.score``: ours (the other sequences, in the brain) or the release's (``Downstream/RECON/test.py``).
TRANSLATE_SCORES = ("brain", "release")


@dataclass(frozen=True)
class TranslateConfig:
    """What a translation network is given and trained to predict; other tasks refuse these options set.

    ``inputs: each`` with ``targets: all`` is the release's BraTS 2023 protocol (``Downstream/RECON/trainer.py``):
    every sequence serves as input and the network predicts all of them, its input's too (``--out_channels 4``), so
    that an output channel is one sequence whatever the input. In training each crop's input is drawn uniformly;
    ``inputs: cycle`` gives each crop's C sequences in turn instead, in a random order, an optimiser step each (the
    release's loop over a crop's four sequences: C steps a crop, so an epoch is C steps per batch); validation
    scores each sequence as input in turn and averages. ``loss``: L1 or MSE inside the brain, times ``loss_weight`` (release: MSE, 10).
    ``mask``: the brain, where the loss and the scores are taken: ``nonzero``, the input's non-zero voxels (the
    background of sequences z-scored over the brain, ``preprocess.intensity zscore``), or ``release``, each
    sequence's own voxels >= -0.35 (``data.ge(-0.35)``, for sequences z-scored over the whole volume,
    ``zscore_volume``, whose background is no longer 0). ``score``: ``brain`` scores the sequences other than the
    input only (copying the input is no translation), inside the brain; ``release`` as the release's ``test.py``:
    every output z-scored again over the whole volume, outside the mask replaced by the target, then scikit-image's
    PSNR, SSIM and MSE over the whole volume for every input -> output pair, the input's own among them (needs
    ``targets: all`` and ``mask: release``)."""

    inputs: str = "one"
    targets: str = "others"
    loss: str = "l1"
    loss_weight: float = 1.0
    mask: str = "nonzero"
    score: str = "brain"

    def __post_init__(self) -> None:
        cfgtools.check(self.inputs in TRANSLATE_INPUTS, "translate.inputs", " or ".join(map(repr, TRANSLATE_INPUTS)),
                       self.inputs)
        cfgtools.check(self.targets in TRANSLATE_TARGETS, "translate.targets",
                       " or ".join(map(repr, TRANSLATE_TARGETS)), self.targets)
        cfgtools.check(self.loss in TRANSLATE_LOSSES, "translate.loss", " or ".join(map(repr, TRANSLATE_LOSSES)),
                       self.loss)
        cfgtools.check(0 < self.loss_weight < math.inf, "translate.loss_weight", "a finite number > 0",
                       self.loss_weight)
        cfgtools.check(self.mask in TRANSLATE_MASKS, "translate.mask", " or ".join(map(repr, TRANSLATE_MASKS)),
                       self.mask)
        cfgtools.check(self.score in TRANSLATE_SCORES, "translate.score", " or ".join(map(repr, TRANSLATE_SCORES)),
                       self.score)
        if self.score == "release" and (self.targets, self.mask) != ("all", "release"):
            raise ValueError("translate.score release scores every input -> output pair in the release's brain: it "
                             f"needs translate.targets all (got {self.targets}) and translate.mask release (got "
                             f"{self.mask})")
        if self.inputs != "one" and self.targets != "all":
            raise ValueError(f"translate.inputs {self.inputs} needs translate.targets all: with each sequence as "
                             "input, 'the others' would be other sequences for each input, and an output channel no "
                             "one sequence")


@dataclass(frozen=True)
class EvalConfig:
    every: int = 500
    overlap: float = 0.5
    sw_batch_size: int = 4

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ValueError(f"eval.every must be >= 0 (0: only at the end), got {self.every}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"eval.overlap must be in [0, 1), got {self.overlap}")
        if self.sw_batch_size < 1:
            raise ValueError(f"eval.sw_batch_size must be >= 1, got {self.sw_batch_size}")


@dataclass(frozen=True)
class FinetuneRunConfig:
    out_dir: str = "runs/finetune"
    seed: int = 0
    device: str = "auto"
    method: str = ""
    progress: bool = True
    checkpoint_every: int = 1000
    resume: str = "auto"

    def __post_init__(self) -> None:
        cfgtools.check(bool(self.out_dir.strip()), "run.out_dir", "a folder path", self.out_dir)
        cfgtools.check(0 <= self.seed <= cfgtools.SEED_MAX, "run.seed", f"in 0..{cfgtools.SEED_MAX} (NumPy's seeds)", self.seed)
        cfgtools.check(self.device in ("auto", "cpu", "cuda"), "run.device", "'auto', 'cpu' or 'cuda'", self.device)
        cfgtools.check(self.checkpoint_every >= 0, "run.checkpoint_every", "an integer >= 0 (0: no checkpoints)",
                       self.checkpoint_every)
        cfgtools.check(self.resume in RESUME_CHOICES, "run.resume", " or ".join(map(repr, RESUME_CHOICES)), self.resume)


#: ``run.resume``: continue the newest checkpoint in run.out_dir if it is this run's, refusing one of another run
#: (``auto``) or starting afresh from it (``if_unchanged``, the pipeline's); or always start afresh (``never``).
RESUME_CHOICES = ("auto", "if_unchanged", "never")


@dataclass(frozen=True)
class FinetuneConfig:
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    preprocess: FinetunePreprocessConfig = field(default_factory=FinetunePreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    translate: TranslateConfig = field(default_factory=TranslateConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: FinetuneRunConfig = field(default_factory=FinetuneRunConfig)

    def __post_init__(self) -> None:
        # SwinUNETR refuses inputs not divisible by patch_size**5, and its bottleneck InstanceNorm needs
        # more than one voxel at the last stage (stride patch_size * 16) while training.
        multiple = self.model.patch_size**5
        if any(s % multiple for s in self.train.roi_size):
            raise ValueError(
                f"train.roi_size {list(self.train.roi_size)} must be a multiple of {multiple} "
                f"(model.patch_size**5, required by SwinUNETR) along every axis"
            )
        stride = self.model.patch_size * 16
        if all(s // stride <= 1 for s in self.train.roi_size):
            raise ValueError(
                f"train.roi_size {list(self.train.roi_size)} leaves a 1x1x1 bottleneck (stride {stride}); "
                f"SwinUNETR's InstanceNorm needs at least one axis >= {2 * stride}"
            )

    def in_steps(self, cases: int, steps_per_batch: int = 1) -> "FinetuneConfig":
        """This config for a run on ``cases`` training cases: with ``train.epochs`` > 0, ``train.steps`` and
        ``train.warmup_steps`` become ``epochs`` and ``warmup_epochs`` times ``ceil(cases / batch_size)`` steps (the
        release's epochs, whose last batch may be short; here every batch is full and wraps into the next epoch's
        order), times ``steps_per_batch`` where each batch serves that many steps (``translate.inputs cycle``); with
        0, itself."""
        t = self.train
        if not t.epochs:
            return self
        per_epoch = -(-cases // t.batch_size) * steps_per_batch
        train = replace(t, steps=t.epochs * per_epoch, warmup_steps=t.warmup_epochs * per_epoch)
        train.check_frozen_encoder_steps()
        return replace(self, train=train)

    @property
    def method(self) -> str:
        """Label of the initialisation recorded in metrics.json."""
        return self.run.method or ("scratch" if self.model.init == "scratch" else "pretrained")

    def to_dict(self) -> dict:
        return cfgtools.to_dict(self)

    def result_options(self, precision: str) -> dict[str, object]:
        """``{"section.field": value}`` of the options that change what the run computes (:data:`RUN_LOCAL` left
        out), with the ``precision`` its forward passes computed in; metrics.json records them, and the tables
        refuse to average seeds of one row that differ in them."""
        return {**identity.result_options(self.to_dict(), RUN_LOCAL), "precision": precision}


#: Options that do not change what a fine-tuning computes (where it reads, writes and caches, how it logs, the
#: device, loader processes, the sliding window's batch, activation checkpointing; ``train.amp`` gives way to the
#: precision it resolves to), and the row's own keys, which metrics.json records as such (seed, label ratio,
#: method, the starting encoder as ``init_from``).
RUN_LOCAL = {
    "data": {"source", "cache_dir", "workers", "label_ratio"},
    "model": {"use_checkpoint", "init"},
    "train": {"log_every", "amp"},
    "eval": {"sw_batch_size"},
    "run": {"out_dir", "seed", "device", "method", "progress", "checkpoint_every", "resume"},
}


HELP = {
    "data.source": "dataset.json in the common layout (required); its 'task' (or the registry dataset it names) "
                   "picks the task: segmentation (image/label, 'labels'), classification (image/class, 'classes'), "
                   "reconstruction (image/target) or translation (several image sequences)",
    "data.train_key": "section of dataset.json with the training cases",
    "data.val_key": "section of dataset.json with the validation cases",
    "data.label_ratio": "fraction in (0, 1] of the training cases used: ratio * n rounded half up (>= 1), drawn with "
                        "data.split_seed; a classification draws so within each class",
    "data.split_seed": "seed of the label-ratio subset: 'none' (default) draws it with run.seed, so each seed trains on "
                       "its own subset and the seeds' spread includes the subset's; a number fixes one subset for "
                       "every seed, which then varies the initialisation and the batches only (the release's CC-CCII: "
                       "sample(frac=ratio, random_state=1) for every run)",
    "data.cache_dir": "preprocessed image/label cache root (a subfolder per preprocessing options and code); default <run.out_dir>/cache",
    "data.workers": "DataLoader worker processes",
    "data.input_channel": "translation: the sequence given as input (a name of the json's 'modality'; default the "
                          "first), the others are predicted",
    "preprocess.intensity": "'ct': window [a_min, a_max] -> [0, 1]; 'zscore': z-score over nonzero voxels (MRI/PET); "
                            "'zscore_volume': over every voxel (release BraTS 2023; with translate.mask release). "
                            "If no intensity option is given: the registry preset of the dataset data.source names "
                            "(`s2dc datasets NAME`), else the pretraining's of the model.init file, else the values below",
    "preprocess.a_min": "CT window low (HU; release BTCV: -175)",
    "preprocess.a_max": "CT window high (HU; release BTCV: 250)",
    "preprocess.spacing": "resample to this voxel spacing in mm (three values; release BTCV: 1.5 1.5 1.5; labels nearest), or 'none' to keep",
    "preprocess.orientation": "axis codes to reorient image and label to",
    "preprocess.crop_foreground": "crop image and label to the bounding box of image voxels above the volume minimum",
    "model.feature_size": "SwinUNETR feature size (48 = SwinViT-B); multiple of 12; must match a pretrained encoder "
                          "(default with model.init a file: the file's, like the other sizes)",
    "model.depths": "blocks per Swin stage (4 values); must match a pretrained encoder",
    "model.num_heads": "attention heads per Swin stage (4 values); must match a pretrained encoder",
    "model.window_size": "attention window (voxels of tokens); must match a pretrained encoder",
    "model.patch_size": "patch-embedding stride; must match a pretrained encoder",
    "model.drop_path_rate": "stochastic depth rate of the Swin encoder",
    "model.use_checkpoint": "gradient checkpointing in SwinUNETR (saves memory)",
    "model.init": "'scratch', an `s2dc pretrain` checkpoint (run.out_dir/checkpoints/step_*.pt) or an "
                  "`s2dc export-encoder` file; the encoder is loaded strictly",
    "model.init_which": "encoder taken from a pretraining checkpoint: 'teacher' (EMA) or 'student'",
    "train.steps": "total optimisation steps",
    "train.batch_size": "volumes per step; each gives train.samples_per_volume crops (at most 1024 crops a step)",
    "train.roi_size": "training crop and sliding-window size (X Y Z), multiples of 32, at most 1024 each",
    "train.samples_per_volume": "random crops per loaded volume, centred on foreground or background with equal odds (pos=1, neg=1); "
                                 "train.batch_size x this is at most 1024",
    "train.flip_prob": "probability of a flip along each of train.flip_axes (release: 0.1)",
    "train.flip_axes": "the axes flipped at random (0 1 2 = X Y Z; release CC-CCII: 2, the slice axis, at 0.5)",
    "train.rot90_prob": "probability of a random quarter turn (1-3) of a training crop in the X-Y plane, after the flips "
                        "(needs train.roi_size X = Y; release BTCV and BraTS 2023: 0.2)",
    "train.lr": "AdamW peak learning rate",
    "train.encoder_lr_scale": "learning rate of the Swin encoder (swinViT) as a fraction of train.lr "
                              "(1: one rate for all; 0: frozen encoder)",
    "train.frozen_encoder_steps": "LP-FT (Kumar et al., ICLR 2022): the encoder's learning rate held at 0 for the first N "
                                  "steps, so the decoder is fitted on the frozen encoder first; then the encoder follows "
                                  "the schedule at train.encoder_lr_scale (0: no frozen phase)",
    "train.weight_decay": "AdamW weight decay",
    "train.amsgrad": "AdamW's AMSGrad variant (release CC-CCII: true)",
    "train.warmup_steps": "linear warm-up steps before the cosine decay (fewer than train.steps)",
    "train.epochs": "0: train.steps steps; N > 0: N epochs of the label-ratio subset, ceil(cases / train.batch_size) "
                    "steps each, replacing train.steps and train.warmup_steps (release CC-CCII: 100 epochs)",
    "train.warmup_epochs": "with train.epochs: the warm-up in epochs (release CC-CCII: 5)",
    "train.schedule": "after the warm-up: 'cosine' (decay to zero at train.steps) or 'constant' (the peak rate; "
                      "release BraTS 2023, which schedules nothing)",
    "train.amp": "'auto' (bf16 autocast on CUDA), 'bf16' or 'off'",
    "train.grad_clip": "clip the global gradient norm to this (0 disables)",
    "train.log_every": "log loss and learning rate every N steps",
    "classify.view": "classification input: 'crops' (train.samples_per_volume random train.roi_size crops a volume; "
                     "validation every ROI window, eval.overlap apart, logits averaged) or 'whole' (the whole volume, "
                     "cropped in plane, resized to train.roi_size: release CC-CCII; train.samples_per_volume draws a "
                     "volume)",
    "classify.in_plane": "view whole: the centred in-plane (X, Y) box, as a fraction of the volume's size "
                         "(release CC-CCII: 0.75, 384 of 512 pixels)",
    "classify.shift": "view whole, training: the box moved by up to this fraction of the in-plane size "
                      "(release CC-CCII: 0.035, 18 of 512 pixels)",
    "classify.head_hidden": "0: one linear layer on the pooled features; N: two, features -> N -> classes "
                            "(release CC-CCII: 1024)",
    "classify.brightness": "training: a uniform intensity offset in [-b, b] (release CC-CCII: 0.07), clipped to "
                           "[0, 1] after a CT window",
    "classify.contrast": "training: a uniform intensity factor in [1 - c, 1 + c] (release CC-CCII: 0.05)",
    "segment.pos": "segmentation: odds of a training crop centred on a labelled voxel (release BTCV: 3)",
    "segment.neg": "segmentation: odds of a training crop centred on a background voxel inside the body (release BTCV: 1)",
    "segment.intensity_scale": "segmentation training: intensities times a factor in [1 - s, 1 + s] (0: none; "
                               "release BTCV: 0.1)",
    "segment.intensity_scale_prob": "probability of that factor per crop (release BTCV: 0.1)",
    "segment.intensity_shift": "segmentation training: intensities plus an offset in [-s, s] (0: none; release BTCV: 0.1)",
    "segment.intensity_shift_prob": "probability of that offset per crop (release BTCV: 0.5)",
    "translate.inputs": "'one' (the sequence data.input_channel names), 'each' (every sequence in turn: drawn for "
                        "each training crop, all scored in validation; needs translate.targets all) or 'cycle' (as "
                        "'each', but every sequence of a crop as input in a random order, a step each: release BraTS "
                        "2023)",
    "translate.targets": "'others' (the sequences but the input) or 'all' (every sequence, the input's too: "
                         "release BraTS 2023); scores are of the others either way",
    "translate.loss": "'l1' or 'mse' (release BraTS 2023), inside the brain (translate.mask)",
    "translate.mask": "the brain the loss and scores read: 'nonzero' (the input's non-zero voxels; with "
                      "preprocess.intensity zscore) or 'release' (each sequence's voxels >= -0.35, release BraTS 2023; "
                      "with preprocess.intensity zscore_volume)",
    "translate.loss_weight": "factor on the loss (release BraTS 2023: 10)",
    "translate.score": "'brain' (the other sequences, inside translate.mask) or 'release' (release BraTS 2023 test.py: "
                       "outputs z-scored again, outside the mask the target's voxels, scikit-image's PSNR/SSIM/MSE over "
                       "the whole volume, every input -> output pair; needs translate.targets all, translate.mask release)",
    "eval.every": "validate every N steps (0: only at the end; always at the end)",
    "eval.overlap": "sliding-window overlap (release: 0.75; 0.5 here for speed)",
    "eval.sw_batch_size": "windows per forward pass in sliding-window inference",
    "run.out_dir": "output folder: metrics.json, model.pt, split.json, dvclive/, checkpoints/ (while the run lasts)",
    "run.seed": "random seed (label-ratio subset, model init, data order, crops, flips)",
    "run.device": "'auto' (CUDA if available, else CPU), 'cpu' or 'cuda'",
    "run.method": "label of the method recorded in metrics.json as 'method' (e.g. s2dc); "
                  "default 'scratch' if model.init is scratch, else 'pretrained'",
    "run.progress": "show a progress bar",
    "run.checkpoint_every": "write run.out_dir/checkpoints/step_XXXXXXXX.pt every N steps (the newest kept; deleted when "
                            "the run ends; 0: none); a run started again continues from it (run.resume)",
    "run.resume": "'auto': continue the newest checkpoint in run.out_dir if it is this run's (same options, data, "
                  "encoder file and code), refuse one of another run listing the differences; 'if_unchanged': start "
                  "afresh instead of refusing (the pipeline's); 'never': always start afresh",
}


def build_config(values: dict) -> FinetuneConfig:
    """Nested ``{section: {field: value}}`` -> validated :class:`FinetuneConfig`; unknown keys are errors."""
    return cfgtools.build_config(FinetuneConfig, values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` and one ``--section.field`` option per fine-tuning option."""
    defaults = FinetuneConfig().to_dict()
    defaults["run"]["method"] = "'scratch' or 'pretrained' from model.init"
    cfgtools.add_arguments(parser, FinetuneConfig, HELP, defaults)
