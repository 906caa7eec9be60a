"""The frozen-encoder protocol: a linear model on an encoder's features, fitted on the training cases and
scored on the validation cases, with no decoder that could learn around the encoder.

A frozen encoder (``SwinUNETR.swinViT``) embeds every whole volume; the linear model depends on the task:

* segmentation: each token of one Swin stage gets the structure in the voxel block it covers (its most
  frequent foreground class when foreground fills an eighth of the block's voxels of the image, its zero padding
  left out, else background); a class-balanced softmax regression on the tokens, scored by balanced accuracy
  (mean per-class recall);
* classification: the stage map averaged on a 2³ grid of the tokens that hold the case's voxels (not the zero
  padding's alone) gives one feature vector per case; a class-balanced
  softmax regression on the cases (the release evaluates CC-CCII with a linear/SVM head on pooled
  features), scored by balanced accuracy. Tens of training volumes against hundreds of features: a fixed
  weight decay would let the fit memorise the volumes, so each encoder's weight decay is chosen by 5-fold
  stratified cross-validation on the training volumes (:func:`cross_validated_weight_decay`; the validation
  volumes are not seen). Segmentation fits tens of thousands of tokens, where the decay hardly matters: fixed;
* reconstruction and translation: each token predicts the mean of the target (full-dose PET, the other
  MR sequences) over its voxel block's voxels of the image, its zero padding left out; ridge regression on the
  tokens, scored by R² on the validation tokens. A per-block linear read-out is what a decoder's last layer would
  need: it shows whether the tokens hold the target's local content, which a full fine-tuned decoder could
  otherwise supply itself.

A one-channel encoder (a pool's: pretrained on one sequence or modality at a time) reads each channel of a
multi-channel volume (BraTS's four sequences) on its own, as it was pretrained, and its tokens of the channels are
concatenated: inflating its patch embedding to the channels (what fine-tuning starts from) would feed a frozen
encoder the mean of the sequences, which erases the contrast between them that tells the tumour regions apart.

Baselines: ``random`` (untrained encoders of the same sizes, read the same way: :data:`RANDOM_DRAWS` of them, drawn
with seeds ``seed``, ``seed + 1``, ..., scored by the mean of their scores, as one draw may read a dataset several
points better than another) and ``voxels`` (the raw voxels
of each token's block, every channel; for classification the unpadded volume averaged on a 4³ grid).
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from ..config import SEED_MAX, check
from ..data.datalist import list_cases, read_datalist, registry_spec
from ..data.errors import DataError
from ..data.preprocess import EXTENT, PreprocessConfig, own_voxels
from ..data.splits import refuse_training_cases_in_validation
from ..data.volumes import LabelledCases, plain
from ..downstream.tasks import TASKS, task_of
from ..downstream.tasks.common import Setting
from ..export import encoder_plan, load_encoder_weights, refuse_another_modality, swinunetr_for
from ..files import atomic_write_text, file_sha256
from ..fingerprint import code_fingerprint
from ..models.encoder import EncoderConfig
from ..train.device import pick_device
from ..train.finite import NonFiniteError
from ..train.optim import EagerLBFGS
from ..train.outputs import result_sha256
from .bootstrap import RESAMPLES, balanced_accuracy, bootstrap, case_index, confusion_by_case, r_squared_from_sums, \
    regression_sums
from .outputs import check_probe_out, table_sha256
from .probe_table import FOLDS, differences_markdown, markdown  # noqa: F401  (the table, without torch)

RANDOM = "random"
VOXELS = "voxels"
#: The ``random`` baseline is the mean of this many random encoders (seeds ``seed``, ``seed + 1``, ...): one draw may
#: read a dataset a few points better or worse than another, as much as a pretrained encoder leads some by.
RANDOM_DRAWS = 3


#: A block is labelled with a structure when foreground fills at least this fraction of it (one octant).
MIN_FOREGROUND = 1 / 8


def token_targets(label: torch.Tensor, stride: int, num_classes: int, own: torch.Tensor | None = None) -> torch.Tensor:
    """The structure in each ``stride³`` block: label (X, Y, Z) int -> (X/s · Y/s · Z/s,) long, in the C order
    of the blocks. A block is its most frequent foreground class (ties to the lower) when foreground fills at
    least :data:`MIN_FOREGROUND` of it, else background (0): a majority rule would call every block of a
    lesion smaller than half a block background, and the probe would never see the lesion. Only the volume's own
    voxels ``own`` (X, Y, Z) bool (None: every voxel; :func:`own_grid`) count: a block straddling the edge of the
    padding is decided on its own voxels, a block of padding alone is background (left out: :func:`inside_tokens`)."""
    onehot = F.one_hot(label.long(), num_classes).permute(3, 0, 1, 2)  # (classes, X, Y, Z)
    fractions = block_means(onehot, stride, own).T  # (classes, blocks), of the own voxels; padding alone reads 0
    structure = fractions[1:].argmax(0) + 1
    return torch.where(fractions[1:].sum(0) >= MIN_FOREGROUND - 1e-6, structure, torch.zeros_like(structure))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the last three axes of ``x`` at their far ends up to multiples of ``multiple``."""
    pad = []
    for size in reversed(x.shape[-3:]):
        pad += [0, -size % multiple]
    return F.pad(x, pad)


def own_grid(item: dict, multiple: int) -> torch.Tensor:
    """Where a preprocessed case's own voxels lie (its ``extent``, :class:`~s2dc.data.preprocess.PadRecordingExtentd`)
    in its image zero-padded by :func:`pad_to_multiple`: (X', Y', Z') bool."""
    own = torch.zeros(plain(item["image"]).shape[-3:], dtype=torch.bool)
    own_voxels(own, item[EXTENT]).fill_(True)
    return pad_to_multiple(own, multiple)


def own_share(own: torch.Tensor, stride: int) -> torch.Tensor:
    """The share of each ``stride³`` block that is the volume's own voxels: own (X, Y, Z) bool -> (X/s · Y/s · Z/s,)
    float in the C order of :func:`token_targets`."""
    return F.avg_pool3d(own[None, None].float(), stride).flatten()


def inside_tokens(own: torch.Tensor, stride: int) -> torch.Tensor:
    """Which ``stride³`` blocks hold a voxel of the volume's own: own (X, Y, Z) bool (:func:`own_grid`) ->
    ``(X/s · Y/s · Z/s,)`` bool in the C order of :func:`token_targets`. The others are padding, neither fitted nor
    scored."""
    return own_share(own, stride) > 0


def voxel_blocks(image: torch.Tensor, stride: int) -> torch.Tensor:
    """The raw voxels of each ``stride³`` block as features: image (C, X, Y, Z) -> (X/s · Y/s · Z/s, C s³),
    blocks in the C order of :func:`token_targets`."""
    c, x, y, z = image.shape
    s = stride
    blocks = image.reshape(c, x // s, s, y // s, s, z // s, s).permute(1, 3, 5, 0, 2, 4, 6)
    return blocks.reshape(-1, c * s**3)


def block_means(target: torch.Tensor, stride: int, own: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of each channel over each ``stride³`` block: (T, X, Y, Z) -> (X/s · Y/s · Z/s, T), token order. Only the
    volume's own voxels ``own`` (X, Y, Z) bool (None: every voxel; :func:`own_grid`) count: a block straddling the edge
    of the padding is the mean of its own voxels, not of its own voxels and the padding's zeros; a block of padding
    alone reads 0 (left out: :func:`inside_tokens`)."""
    own = torch.ones(target.shape[-3:], dtype=torch.bool) if own is None else own
    sums = F.avg_pool3d(target[None].float() * own, stride)[0].flatten(1)  # (T, blocks), over s³ voxels
    return (sums / own_share(own, stride).clamp_min(stride**-3)).T


def fit_ridge(x: torch.Tensor, y: torch.Tensor, alpha: float = 1.0):
    """Ridge regression on standardised features, closed form: x (N, D), y (N, T) -> predict(x') (N', T). Solves the
    smaller of the primal (D, D) and the identical dual (N, N) system: raw-voxel features reach D = C s^3 >> N."""
    x, y = x.double(), y.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    y_mean = y.mean(0)
    n, d = z.shape
    if n < d:  # w = z.T (z z.T + alpha I_N)^-1 (y - y_mean)
        w = z.T @ torch.linalg.solve(z @ z.T + alpha * torch.eye(n, dtype=torch.float64), y - y_mean)
    else:
        w = torch.linalg.solve(z.T @ z + alpha * torch.eye(d, dtype=torch.float64), z.T @ (y - y_mean))
    return lambda xv: ((xv.double() - mean) / std) @ w + y_mean


def r_squared(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Coefficient of determination over all tokens and channels: 1 - SS_res / SS_tot (per channel means)."""
    y = y.double()
    return float(1 - ((pred - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())


def class_weights(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights (num_classes,) float64 of the labels y (N,): every present class weighs the same in
    total (mean weight per sample 1); an absent class 0."""
    counts = torch.bincount(y, minlength=num_classes).double()
    return torch.where(counts > 0, counts.sum() / (counts.clamp_min(1) * (counts > 0).sum()), 0.0)


#: The probe's weight decay where it is not cross-validated (segmentation: tens of thousands of tokens).
WEIGHT_DECAY = 1e-3


def fit_linear_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float = WEIGHT_DECAY,
                     iterations: int = 200) -> torch.nn.Linear:
    """Class-balanced softmax regression on standardised features; x (N, D), y (N,) -> fitted layer
    (standardisation folded into its weights). Full-batch L-BFGS: deterministic for given inputs."""
    x = x.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    weights = class_weights(y, num_classes)
    layer = torch.nn.Linear(x.shape[1], num_classes, dtype=torch.float64)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    optimiser = EagerLBFGS(layer.parameters(), max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = F.cross_entropy(layer(z), y, weight=weights) + weight_decay * layer.weight.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        layer.weight /= std
        layer.bias -= layer.weight @ mean
    return layer


#: The regulariser grid of the pooled (classification) probe (its number of cross-validation folds: FOLDS).
WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def stratified_folds(y: torch.Tensor, folds: int) -> torch.Tensor:
    """The fold (N,) of each sample of y (N,): each class's samples, in order, dealt to folds 0, 1, ... in turn."""
    fold = torch.empty_like(y)
    for c in y.unique():
        members = (y == c).nonzero().flatten()
        fold[members] = torch.arange(len(members)) % folds
    return fold


def cross_validated_weight_decay(x: torch.Tensor, y: torch.Tensor, num_classes: int,
                                 grid: tuple[float, ...] = WEIGHT_DECAYS, folds: int = FOLDS) -> float:
    """The weight decay of :func:`fit_linear_probe` that predicts held-out samples best: x (N, D), y (N,). For each
    value of ``grid``, a probe per stratified fold is fitted on the other folds; the score is the class-weighted
    cross-entropy of all held-out predictions (weights of the whole y); a tie goes to the stronger decay. With
    fewer samples than ``folds`` in some class, as many folds as its samples; under 2: :data:`WEIGHT_DECAY`."""
    counts = torch.bincount(y)
    k = min(folds, int(counts[counts > 0].min()))
    if k < 2:
        return WEIGHT_DECAY
    fold, weights = stratified_folds(y, k), class_weights(y, num_classes)
    losses = []
    for decay in grid:
        held_out = torch.empty(len(y), num_classes, dtype=torch.float64)
        for f in range(k):
            rows = fold == f
            with torch.no_grad():
                held_out[rows] = fit_linear_probe(x[~rows], y[~rows], num_classes, decay)(x[rows].double())
        losses.append(float(F.cross_entropy(held_out, y, weight=weights)))
    return grid[min(range(len(grid)), key=lambda i: (losses[i], -grid[i]))]


def per_class_recall(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> np.ndarray:
    """Recall of each class (NaN for a class absent from ``y``)."""
    hits = torch.bincount(y[pred == y], minlength=num_classes).double()
    total = torch.bincount(y, minlength=num_classes).double()
    return torch.where(total > 0, hits / total.clamp_min(1), torch.nan).numpy()


def encoder_sizes(path: str | Path) -> EncoderConfig:
    """Encoder sizes recorded in an exported encoder or a pretraining checkpoint."""
    return EncoderConfig.recorded(encoder_plan(path)["encoder"], f"the encoder sizes of '{path}'")


def probe(source: str | Path, encoders: list[str], stage: int = 2, seed: int = 0,
          cache_dir: str | Path | None = None, device: str = "auto", preset: str | None = None) -> dict:
    """Probe each of ``encoders`` (checkpoint paths, ``"random"``: :data:`RANDOM_DRAWS` random encoders scored by the
    mean of their scores (:func:`mean_of_draws`), or ``"voxels"``: the raw voxels of each
    token's block, a baseline with no encoder) on the labelled dataset ``source``. An entry
    ``NAME=WHAT`` names its row NAME (e.g. ``s2dc=runs/ct/encoder.pt``); otherwise the row is named WHAT.

    Returns ``{"stage", "stride", "classes", "train_tokens", "val_tokens", "encoders": {name: {
    "balanced_accuracy", "organ_recall", "recall": {class: value}, "se", "versus": {other: {"difference",
    "se"}}, "draws" (the random baseline: each draw's score)}}}``; ``balanced_accuracy`` averages the recall over every class present in the validation tokens,
    ``organ_recall`` over the foreground ones; ``se`` is the score's bootstrap standard error over the validation
    cases and ``versus`` this encoder's score minus each other's with the standard error of that paired difference
    (:mod:`s2dc.eval.bootstrap`). ``preset``: the intensity preset (``s2dc datasets``); None takes the registry
    preset of the dataset the json names.
    """
    check_seed(seed)
    labelled = named_encoders(encoders)
    data = load_labelled(source, labelled, stage, cache_dir, device, preset)
    task, names, stride = data.task, data.names, data.stride
    pooled = task.readout == "class"
    targets = data.targets if pooled else {role: [t[m] for t, m in zip(ts, data.inside[role])]
                                           for role, ts in data.targets.items()}  # no padding token
    y = {role: torch.tensor(t) if pooled else torch.cat(t) for role, t in targets.items()}
    for role, labels in y.items() if pooled else ():
        if len(labels.unique()) < 2:
            why = ("a linear model fitted on one class learns nothing" if role == "training" else
                   "balanced accuracy over one class is its recall, which a model always predicting it reads as 100 %")
            raise DataError(f"the {role} cases of '{source}' hold one class only ({names[int(labels[0])]!r}): {why}; "
                            f"list cases of at least two classes under '{role}'")
    if task.readout == "labels" and len(y["training"].unique()) < 2:
        raise DataError(f"the training tokens of '{source}' hold one class only ({names[int(y['training'][0])]!r}) at "
                        f"--stage {stage} ({stride}³-voxel blocks): a linear model fitted on one class learns nothing "
                        "and reads every validation token as it; list training cases whose labels hold structures "
                        "(or probe an earlier --stage: smaller blocks)")
    cases = len(targets["validation"])
    case = torch.arange(cases) if pooled else case_index([len(t) for t in targets["validation"]])
    results, stats = {}, {}
    for name, what in labelled.items():
        scored = []
        for draw in range(RANDOM_DRAWS if what == RANDOM else 1):
            encoder = None if what == VOXELS else frozen_encoder(what, data, seed + draw)
            x = {role: torch.cat([features(data, encoder, v, stage, pooled, what)[slice(None) if pooled else m]
                                  for v, m in zip(vols, data.inside[role])]) for role, vols in data.volumes.items()}
            scored.append(_score(task, names, x, y, case, cases))
        results[name], stats[name] = scored[0] if len(scored) == 1 else mean_of_draws(scored)
    regression = task.readout == "values"
    metric_of = r_squared_from_sums if regression else (lambda c: balanced_accuracy(c, len(names)))
    for name, spread in bootstrap(stats, metric_of, seed=seed).items():
        results[name].update(spread)
    metric = "R²" if regression else "balanced accuracy"
    unit = "volumes" if pooled else "tokens"
    return {"source": str(source), "dataset": data.dataset, "task": task.name,
            "metric": metric, "stage": stage, "stride": stride, "classes": [n for n in names if n],
            f"train_{unit}": int(len(y["training"])), f"val_{unit}": int(len(y["validation"])), "val_cases": cases,
            "resamples": RESAMPLES, "encoders": results,
            # which file each row read: the tables set it beside the runs fine-tuned from that very file
            "encoder_sha256": {name: file_sha256(what) for name, what in labelled.items() if what not in (RANDOM, VOXELS)}}


def mean_of_draws(scored: list[tuple[dict, torch.Tensor]]) -> tuple[dict, torch.Tensor]:
    """The row of a baseline drawn several times, from each draw's (:func:`_score`) result and case statistics:
    every score the mean of the draws' (None where a draw has none), ``draws`` each draw's score, ``weight_decay``
    each draw's; the statistics stacked (K, cases, F), which :func:`s2dc.eval.bootstrap.bootstrap` scores by the mean
    of the K scores."""
    def mean(values):
        if isinstance(values[0], dict):
            return {key: mean([v[key] for v in values]) for key in values[0]}
        return None if any(v is None for v in values) else float(np.mean(values))

    results = [result for result, _ in scored]
    row = {key: ([r[key] for r in results] if key == "weight_decay" else mean([r[key] for r in results]))
           for key in results[0]}
    row["draws"] = [r["score"] for r in results]
    return row, torch.stack([case_stats for _, case_stats in scored])


def check_seed(seed: int) -> None:
    """Refuse a ``--seed`` the random encoder, the bootstrap or the t-SNE cannot take (NumPy's and scikit-learn's
    seeds are 0..2**32 - 1; torch's, which the random baseline's draws ``seed + k`` take, go to 2**64 - 1), before
    any volume is read and before any figure is drawn."""
    check(0 <= seed <= SEED_MAX, "--seed", f"an integer in 0..{SEED_MAX}", seed)


def named_encoders(encoders: list[str]) -> dict[str, str]:
    """``["voxels", "s2dc=enc.pt"]`` -> ``{"voxels": "voxels", "s2dc": "enc.pt"}``; at least one file, names distinct."""
    labelled = dict(_label(e) for e in encoders)
    if len(labelled) != len(encoders):
        raise ValueError(f"encoder names must be distinct, got {encoders}")
    if not [e for e in labelled.values() if e not in (RANDOM, VOXELS)]:
        raise ValueError("give at least one encoder file: the probe takes the encoder sizes from it")
    return labelled


@dataclass
class Labelled:
    """A dataset ready for frozen encoders: ``volumes[role]`` images (1, C, X, Y, Z) padded to the encoder's
    multiple (classification: unpadded, :func:`features` pads them) and ``targets[role]`` what the linear model
    predicts (token classes, a class, block means) per volume, for role ``training`` / ``validation``; ``names`` the
    class names by value; the encoders' sizes."""

    task: object
    dataset: str
    names: list[str]
    sizes: EncoderConfig
    stride: int
    device: torch.device
    volumes: dict[str, list[torch.Tensor]]
    targets: dict[str, list]
    inside: dict[str, list]  # per volume, its tokens that hold image voxels (:func:`inside_tokens`; None: pooled)
    first: str = ""  # the encoder file the sizes (token grid, a random encoder's architecture) come from


def load_labelled(source: str | Path, labelled: dict[str, str], stage: int, cache_dir: str | Path | None,
                  device: str, preset: str | None, roles: tuple[str, ...] = ("training", "validation"),
                  labels: str = "label") -> Labelled:
    """Read and preprocess every case of ``roles`` of ``source`` once, for the encoders ``labelled`` (sizes from
    the first file) at Swin ``stage``; ``preset`` None takes the registry preset of the dataset the json names.
    ``labels``: the per-voxel map the token classes come from: the dataset's ``label``, or another path role of a
    segmentation dataset's cases with its names under ``"<role>_labels"`` in the json (a twin's ``anatomy``)."""
    if not 0 <= stage <= 4:
        raise ValueError(f"--stage must be in 0..4 (0 = patch embedding, 4 = last Swin stage), got {stage}")
    # an unfinished pretraining's checkpoint is refused, as the fine-tuning and the export refuse it (before any read)
    plans = {what: encoder_plan(what, whole_runs_only=True)
             for what in labelled.values() if what not in (RANDOM, VOXELS)}
    first = next(iter(plans))
    sizes = EncoderConfig.recorded(plans[first]["encoder"], f"the encoder sizes of '{first}'")
    device = pick_device(device, key="--device")
    stride = sizes.patch_size * 2**stage
    doc = read_datalist(source)
    if preset is None:
        known = registry_spec(doc)
        if known is None:
            raise ValueError(f"'{source}' names dataset {doc.get('name')!r}, which the registry does not know; "
                             "give the intensity preset (--preset, `s2dc datasets` lists them)")
        preset = known.preset
        for what, plan in plans.items():
            refuse_another_modality(what, plan["modality"], known,
                                    "give the intensity preset (--preset) to probe this one anyway")
    multiple = sizes.patch_size * 16  # total downsampling of the Swin encoder
    task = TASKS[task_of(doc, source)](doc, source, SimpleNamespace(input_channel=""))
    # Crop size 1: the preprocessing pads nothing, so every voxel it returns is the image's, and the only padding
    # is the probe's own at the far ends (pad_to_multiple): a block of it alone is left out (inside_tokens), a block
    # straddling the image's edge is labelled (token_targets) or averaged (block_means) on the image's voxels.
    setting = Setting(PreprocessConfig.from_preset(preset), (1, 1, 1), 1, 0.0, 1, 0.0, device, nullcontext)
    names = label_names(task, doc) if labels == "label" else map_names(doc, labels, source, task)
    keys = task.roles if labels == "label" else ("image", labels)
    cases = {role: sorted(list_cases(source, role, keys, doc), key=lambda c: str(c["image"]))
             for role in ("training", "validation")}
    refuse_training_cases_in_validation(cases["training"], cases["validation"], source, "training", "validation")
    if labels == "label":
        data = {role: ds for role, ds in zip(cases, task.datasets(cases["training"], cases["validation"], setting,
                                                                  cache_dir)) if role in roles}
    else:  # another map of the cases as their labels, through the segmentation task's own preprocessing
        named = sorted({0} | {value for value, name in enumerate(names) if name})  # a value without a name: refused
        values = named if len(named) < len(names) else None
        data = {role: LabelledCases([{"image": c["image"], "label": c[labels]} for c in cases[role]],
                                    setting.preprocess, setting.roi_size, len(names), cache_dir, values)
                for role in roles}
    volumes, targets, inside = ({role: [] for role in data} for _ in range(3))
    for role, ds in data.items():
        for i in range(len(ds)):
            item = ds[i]
            own = own_grid(item, multiple) if task.readout != "class" else None
            image, target = _image_and_target(task, item, stride, multiple, len(names), own)
            volumes[role].append(image[None])
            targets[role].append(target)
            inside[role].append(None if own is None else inside_tokens(own, stride))
    return Labelled(task, str(doc.get("name") or Path(source).parent.name), names, sizes, stride, device,
                    volumes, targets, inside, str(first))


def frozen_encoder(what: str, data: Labelled, seed: int) -> torch.nn.Module:
    """The frozen ``SwinUNETR.swinViT`` of an encoder file, or (``"random"``) a random one drawn with ``seed``, on
    ``data``'s device: with the file's input channels when it has one (it reads ``data``'s channels one by one,
    see :func:`_token_features`), else with ``data``'s; ``"random"`` takes the input channels of the first file."""
    torch.manual_seed(seed)
    channels = next(iter(data.volumes.values()))[0].shape[1]
    own = data.sizes if what == RANDOM else encoder_sizes(what)  # a file keeps its own sizes and input channels
    if own.patch_size != data.sizes.patch_size:
        raise ValueError(f"'{what}' has patch size {own.patch_size}, the first encoder ('{data.first}') "
                         f"{data.sizes.patch_size}: the probe reads every encoder's tokens on one grid; probe them apart")
    if own.in_channels not in (1, channels):
        raise ValueError(f"'{what}' reads {own.in_channels} input channels, the cases of '{data.dataset}' have "
                         f"{channels}: the probe reads an encoder of one channel (inflated to the cases') or of theirs")
    sizes = model_sizes(own, 1 if own.in_channels == 1 else channels)
    model = swinunetr_for(sizes)
    if what != RANDOM:
        load_encoder_weights(model, what, which=None, expected=sizes)  # an export: the encoder it holds
    return model.swinViT.to(data.device).eval()


def features(data: Labelled, encoder: torch.nn.Module | None, volume: torch.Tensor, stage: int,
             pooled: bool, what: str) -> torch.Tensor:
    """One volume's features for the linear model: the encoder's tokens (``None``: the raw voxel blocks)
    ``(tokens, D)``, or pooled on a grid ``(1, D')`` for classification. Raises NonFiniteError naming the encoder
    ``what`` when they are not finite (finite weights can still give NaN features: a diverged model's; a linear
    model fitted on them would score argmax(NaN) = class 0)."""
    if encoder is None:
        return _voxel_features(volume[0], data.stride, pooled)
    multiple = data.sizes.patch_size * 16  # a classification case is kept unpadded: padded here, for the encoder
    x = _token_features(encoder, pad_to_multiple(volume, multiple).to(data.device), stage, pooled,
                        volume.shape[-3:]).cpu()
    if not torch.isfinite(x).all():
        raise NonFiniteError(f"the stage {stage} features of encoder '{what}' on a volume of {data.dataset} are not "
                             "finite (NaN or infinite, from finite weights: a diverged model); nothing is scored or "
                             "drawn from them: give an encoder of a run that did not diverge")
    return x


def model_sizes(sizes: EncoderConfig, in_channels: int) -> EncoderConfig:
    """The encoder's sizes for an input of ``in_channels`` (a one-channel encoder is inflated on loading)."""
    return EncoderConfig(**{**sizes.to_dict(), "in_channels": in_channels})


def map_names(doc: dict, role: str, source: str | Path, task) -> list[str]:
    """The class names by value (``""`` for an unnamed value) of the per-voxel map ``role`` of a dataset of a task
    read by its per-voxel labels (segmentation), from the json's ``"<role>_labels"`` ({value: name});
    :class:`DataError` if the json has none."""
    table = doc.get(f"{role}_labels")
    labelled = task.readout == "labels"
    if not labelled or not isinstance(table, dict) or not table:
        have = ["label", *sorted(k.removesuffix("_labels") for k in doc if k.endswith("_labels"))]
        raise DataError(f"'{source}' ({task.name}) has no per-voxel map {role!r} named in '{role}_labels'; "
                        f"the per-voxel maps it has: {have if labelled else []}")
    return names_by_value(table)


def names_by_value(table: dict) -> list[str]:
    """A json ``{value: name}`` table as names indexed by value, ``""`` for a value without a name."""
    named = {int(k): str(v) for k, v in table.items()}
    return [named.get(value, "") for value in range(max(named) + 1)]


def label_names(task, doc: dict) -> list[str]:
    """The probe's class names by label value (``""`` for a value no class has): the task's classes, or for a
    dataset segmented into overlapping regions (BraTS) the json's per-voxel labels (e.g. necrosis, edema,
    enhancing tumour at values 1, 2, 4), since a token takes one class."""
    if not getattr(task, "regions", None):
        return list(getattr(task, "names", []))
    return names_by_value(doc["labels"])


def _image_and_target(task, item: dict, stride: int, multiple: int, num_classes: int,
                      own: torch.Tensor | None) -> tuple[torch.Tensor, object]:
    """The encoder's input ``(C, X, Y, Z)`` (padded to the encoder's multiple; a class's unpadded) and what the linear
    model predicts; ``own`` (X, Y, Z) bool: the case's own voxels in the padded grid (:func:`own_grid`; None:
    pooled)."""
    if task.readout == "values":
        image, target = task.input_and_target(item)
        return pad_to_multiple(image, multiple), block_means(pad_to_multiple(target, multiple), stride, own)
    image = plain(item["image"]).float()
    if task.readout == "labels":
        label = pad_to_multiple(plain(item["label"]).long(), multiple)[0]
        return pad_to_multiple(image, multiple), token_targets(label, stride, num_classes, own)
    return image, int(item["class"])  # unpadded: its grids are drawn on its own voxels (features pads it)


#: Classification reads features pooled on a grid, so that a class told by a regional pattern is not averaged
#: away: the raw voxels on a 4³ grid (64 values per channel), an encoder's stage map on a 2³ grid (8 per channel).
VOXEL_GRID, TOKEN_GRID = 4, 2


def pooled_features(fmap: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, C, X, Y, Z) -> (1, C · grid³): each channel averaged over each cell of a grid³ partition."""
    return F.adaptive_avg_pool3d(fmap, grid).flatten()[None]


def _voxel_features(image: torch.Tensor, stride: int, pooled: bool) -> torch.Tensor:
    """The no-encoder baseline: each block's voxels ``(blocks, stride³ C)``, or (pooled) the volume on a grid."""
    if pooled:
        return pooled_features(image[None], VOXEL_GRID)
    return voxel_blocks(image, stride)


@torch.no_grad()
def _token_features(swin: torch.nn.Module, image: torch.Tensor, stage: int, pooled: bool,
                    own: tuple[int, ...] | None = None) -> torch.Tensor:
    """An encoder's tokens ``(tokens, C)``, or (pooled) its stage map on a grid ``(1, C · TOKEN_GRID³)``. A
    one-channel encoder reads each of the K channels of ``image`` (1, K, X, Y, Z) alone (the channels folded into
    the batch) and the features of the channels are concatenated: ``(tokens, K C)`` or ``(1, K C · TOKEN_GRID³)``.
    ``own``: the case's size (X', Y', Z') at the start of the zero-padded ``image`` (None: all of it); the pooled
    grid covers the tokens whose blocks hold its voxels, not those of the padding alone."""
    if swin.patch_embed.proj.in_channels == 1 and image.shape[1] > 1:
        fmap = swin(image.transpose(0, 1), True)[stage]  # (K, C, x, y, z): each channel alone
        fmap = fmap.reshape(1, -1, *fmap.shape[2:])  # (1, K C, x, y, z): channel k's features at [k C, (k + 1) C)
    else:
        fmap = swin(image, True)[stage]
    if pooled:
        own = image.shape[-3:] if own is None else own
        blocks = [-(-n * t // p) for n, t, p in zip(own, fmap.shape[-3:], image.shape[-3:])]  # ceil(n / stride)
        return pooled_features(fmap[..., : blocks[0], : blocks[1], : blocks[2]], TOKEN_GRID)
    return fmap[0].flatten(1).T


def _score(task, names: list[str], x: dict, y: dict, case: torch.Tensor, cases: int) -> tuple[dict, torch.Tensor]:
    """Fit on ``x["training"]``, score on ``x["validation"]`` (rows of validation case ``case``, of ``cases``): R²
    for a regression; else balanced accuracy, organ recall (segmentation) and recall per class (``names`` by class
    index; ``""``: no such class). Also the validation cases' statistics the score is made of, (cases, F), for
    :func:`s2dc.eval.bootstrap.bootstrap`."""
    if task.readout == "values":
        pred = fit_ridge(x["training"], y["training"])(x["validation"])
        return ({"score": r_squared(pred, y["validation"])},
                regression_sums(pred, y["validation"], case, cases))
    # tens of volumes against hundreds of features: the regulariser decides
    classify = task.readout == "class"
    decay = cross_validated_weight_decay(x["training"], y["training"], len(names)) if classify else WEIGHT_DECAY
    layer = fit_linear_probe(x["training"], y["training"], len(names), decay)
    with torch.no_grad():
        pred = layer(x["validation"].double()).argmax(1)
    recall = per_class_recall(pred, y["validation"], len(names))
    if task.readout == "labels" and not np.isfinite(recall[1:]).any():
        raise DataError(f"no validation token carries a structure ({', '.join(n for n in names[1:] if n)}): every block is "
                        "background at this stage, and a score over background alone would read 100 %; probe an "
                        "earlier --stage (smaller blocks) or larger structures")
    result = {"score": float(np.nanmean(recall)), "balanced_accuracy": float(np.nanmean(recall)),
              "recall": {names[c]: (None if np.isnan(r) else float(r)) for c, r in enumerate(recall) if names[c]}}
    if classify:
        result["weight_decay"] = decay
    if task.readout == "labels":
        result["organ_recall"] = float(np.nanmean(recall[1:])) if np.isfinite(recall[1:]).any() else None
        result["structure"] = structure_scores(x["validation"], y["validation"])
    return result, confusion_by_case(pred, y["validation"], case, cases, len(names))


def structure_scores(features: torch.Tensor, labels: torch.Tensor) -> dict:
    """How the tokens group by structure: features (N, D), labels (N,) -> ``consistency`` (mean cosine of token
    pairs within one structure, averaged over the structures), ``inter`` (mean cosine of token pairs from two
    different structures, averaged over the pairs of structures), ``discrepancy`` = 1 - inter and ``ratio`` =
    discrepancy / (1 - consistency): the cosine distance between structures over that within (> 1: tokens of one
    structure are closer to each other than to other structures). Every labelled class counts as a structure
    (background too); a class with a single token has no pair and is left out of the consistency. A token whose
    features are all zero (the raw voxels of a block of air) has no direction: its cosine with any token is 0, as
    scikit-learn's ``cosine_similarity`` has it. Exact, from the per-class sums of the unit vectors (no N x N
    matrix)."""
    unit = F.normalize(features.double(), dim=1)
    classes, labels = torch.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"structure scores need tokens of two structures, got only class {classes.tolist()}")
    sums = torch.zeros(len(classes), unit.shape[1], dtype=torch.float64).index_add_(0, labels, unit)  # (K, D)
    counts = torch.bincount(labels, minlength=len(classes)).double()  # (K,)
    gram = sums @ sums.T  # (K, K): sum of cosines over all token pairs (i in class a, j in class b), i = j included
    # each token's cosine with itself, left out of the pairs within: 1, or 0 for a zero token (F.normalize keeps it 0)
    selves = torch.zeros(len(classes), dtype=torch.float64).index_add_(0, labels, unit.square().sum(1))
    paired = counts > 1
    within = (gram.diagonal()[paired] - selves[paired]) / (counts[paired] * (counts[paired] - 1))
    a, b = torch.triu_indices(len(classes), len(classes), offset=1)  # each pair of classes once
    between = gram[a, b] / (counts[a] * counts[b])
    inter = float(between.mean())
    if not paired.any():  # no structure with two tokens: nothing within to compare (None, not NaN)
        return {"consistency": None, "inter": inter, "discrepancy": 1.0 - inter, "ratio": None}
    consistency = float(within.mean())
    return {"consistency": consistency, "inter": inter, "discrepancy": 1.0 - inter,
            "ratio": (1.0 - inter) / max(1.0 - consistency, 1e-12)}


def _label(entry: str) -> tuple[str, str]:
    name, sep, what = entry.partition("=")
    return (name, what) if sep and name and what else (entry, entry)


def write_probe(result: dict, out: str | Path) -> None:
    """``out`` (.json) gets the result (and ``code``, the hash of the probe code that made it, and ``table_sha256``,
    the checksum of its table); the same name with .md gets :func:`markdown` (:func:`check_probe_out` first)."""
    check_probe_out(out, result["source"])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = markdown(result) + "\n"
    doc = {**result, "code": code_fingerprint(__name__), "table_sha256": table_sha256(table)}
    doc["result_sha256"] = result_sha256(doc)  # the report and the next run tell it from a result edited after
    text = json.dumps(doc, indent=2, allow_nan=False)  # a NaN is a bug
    # here, not a score: raised before the earlier table goes
    # the earlier table (checked to be the earlier result's) goes first: killed between the two writes, a run leaves
    # the new result alone, never beside a table whose checksum it does not record (refused as a user's next time)
    out.with_suffix(".md").unlink(missing_ok=True)
    # the table's checksum beside the result: a later run tells its own table from notes put in its place
    atomic_write_text(out, text)
    atomic_write_text(out.with_suffix(".md"), table)
