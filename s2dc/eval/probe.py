"""Structure probe: how well an encoder's token features tell the labelled structures apart.

A frozen encoder (``SwinUNETR.swinViT``) embeds every whole volume of a labelled dataset; each token
of one Swin stage gets the majority label of the voxel block it covers; a linear classifier
(class-balanced softmax regression) is fitted on the ``training`` cases' tokens and scored on the
``validation`` cases' by per-class recall. Comparing a pretrained encoder with a randomly initialised
one of the same sizes tells whether pretraining put structure into the features, apart from any
fine-tuning schedule.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..export import load_encoder_weights, swinunetr_for
from ..models.encoder import EncoderConfig
from ..files import atomic_write_text
from ..train.checkpoint import load_checkpoint
from ..train.device import pick_device
from ..data.datalist import class_names, list_cases, read_datalist, registry_spec
from ..data.preprocess import PreprocessConfig
from ..data.volumes import LabelledCases, plain

RANDOM = "random"
VOXELS = "voxels"


def token_targets(label: torch.Tensor, stride: int, num_classes: int) -> torch.Tensor:
    """Majority label of each ``stride³`` block: label (X, Y, Z) int -> (X/s · Y/s · Z/s,) long,
    in the C order of the blocks (ties go to the lower class)."""
    onehot = F.one_hot(label.long(), num_classes).permute(3, 0, 1, 2).float()[None]
    return F.avg_pool3d(onehot, stride)[0].argmax(0).flatten()


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the last three axes of ``x`` at their far ends up to multiples of ``multiple``."""
    pad = []
    for size in reversed(x.shape[-3:]):
        pad += [0, -size % multiple]
    return F.pad(x, pad)


def voxel_blocks(image: torch.Tensor, stride: int) -> torch.Tensor:
    """The raw voxels of each ``stride³`` block as features: image (1, X, Y, Z) -> (X/s · Y/s · Z/s, s³),
    blocks in the C order of :func:`token_targets`."""
    _, x, y, z = image.shape
    s = stride
    blocks = image.reshape(x // s, s, y // s, s, z // s, s).permute(0, 2, 4, 1, 3, 5)
    return blocks.reshape(-1, s**3)


@torch.no_grad()
def stage_tokens(swin: torch.nn.Module, image: torch.Tensor, stage: int) -> torch.Tensor:
    """Layer-normalised features of one Swin stage: image (1, 1, X, Y, Z) -> (X/s · Y/s · Z/s, C_stage)."""
    hidden = swin(image, True)[stage]
    return hidden[0].flatten(1).T


def fit_linear_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float = 1e-3,
                     iterations: int = 200) -> torch.nn.Linear:
    """Class-balanced softmax regression on standardised features; x (N, D), y (N,) -> fitted layer
    (standardisation folded into its weights). Full-batch L-BFGS: deterministic for given inputs."""
    x = x.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    counts = torch.bincount(y, minlength=num_classes).double()
    weights = torch.where(counts > 0, counts.sum() / (counts.clamp_min(1) * (counts > 0).sum()), 0.0)
    layer = torch.nn.Linear(x.shape[1], num_classes, dtype=torch.float64)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    optimiser = torch.optim.LBFGS(layer.parameters(), max_iter=iterations, line_search_fn="strong_wolfe")

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


def per_class_recall(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> np.ndarray:
    """Recall of each class (NaN for a class absent from ``y``)."""
    hits = torch.bincount(y[pred == y], minlength=num_classes).double()
    total = torch.bincount(y, minlength=num_classes).double()
    return torch.where(total > 0, hits / total.clamp_min(1), torch.nan).numpy()


def encoder_sizes(path: str | Path) -> EncoderConfig:
    """Encoder sizes recorded in an exported encoder or a pretraining checkpoint."""
    blob = load_checkpoint(Path(path))
    found = blob.get("encoder") if isinstance(blob, dict) else None
    if found is None and isinstance(blob, dict) and "config" in blob:
        found = blob["config"].get("encoder")
    if found is None:
        raise ValueError(f"'{path}' records no encoder sizes (expected `s2dc export-encoder` output or a "
                         "pretraining checkpoint)")
    return EncoderConfig(**found)


def probe(source: str | Path, encoders: list[str], stage: int = 2, seed: int = 0,
          cache_dir: str | Path | None = None, device: str = "auto", preset: str | None = None) -> dict:
    """Probe each of ``encoders`` (checkpoint paths, ``"random"``, or ``"voxels"``: the raw voxels of each
    token's block, a baseline with no encoder) on the labelled dataset ``source``. An entry
    ``NAME=WHAT`` names its row NAME (e.g. ``s2dc=runs/ct/encoder.pt``); otherwise the row is named WHAT.

    Returns ``{"stage", "stride", "classes", "train_tokens", "val_tokens", "encoders": {name: {
    "balanced_accuracy", "organ_recall", "recall": {class: value}}}}``; ``balanced_accuracy`` averages
    the recall over every class present in the validation tokens, ``organ_recall`` over the foreground
    ones. ``preset``: the intensity preset (``s2dc datasets``); None takes the registry preset of the
    dataset the json names.
    """
    labelled = dict(_label(e) for e in encoders)
    if len(labelled) != len(encoders):
        raise ValueError(f"encoder names must be distinct, got {encoders}")
    files = [e for e in labelled.values() if e not in (RANDOM, VOXELS)]
    if not files:
        raise ValueError("give at least one encoder file: the probe takes the encoder sizes from it")
    if not 0 <= stage <= 4:
        raise ValueError(f"--stage must be in 0..4 (0 = patch embedding, 4 = last Swin stage), got {stage}")
    sizes = encoder_sizes(files[0])
    device = pick_device(device, key="--device")
    stride = sizes.patch_size * 2**stage
    spec = read_datalist(source)
    names = class_names(spec, source)
    if preset is None:
        known = registry_spec(spec)
        if known is None:
            raise ValueError(f"'{source}' names dataset {spec.get('name')!r}, which the registry does not know; "
                             "give the intensity preset (--preset, `s2dc datasets` lists them)")
        preset = known.preset
    cfg = PreprocessConfig.from_preset(preset)
    cases = {role: sorted(list_cases(source, role, ("image", "label"), spec), key=lambda c: str(c["image"]))
             for role in ("training", "validation")}
    for role, found in cases.items():
        if not found:
            raise ValueError(f"'{source}' lists no '{role}' cases; the probe fits on training and scores on validation")
    multiple = sizes.patch_size * 16  # total downsampling of the Swin encoder
    data = {role: LabelledCases(c, cfg, (multiple,) * 3, len(names), cache_dir)
            for role, c in cases.items()}
    targets = {role: [] for role in data}
    volumes = {role: [] for role in data}
    for role, ds in data.items():
        for i in range(len(ds)):
            item = ds[i]
            image = pad_to_multiple(plain(item["image"]).float(), multiple)
            label = pad_to_multiple(plain(item["label"]).long(), multiple)[0]
            volumes[role].append(image[None])
            targets[role].append(token_targets(label, stride, len(names)))
    y = {role: torch.cat(t) for role, t in targets.items()}

    results = {}
    for name, what in labelled.items():
        if what == VOXELS:
            x = {role: torch.cat([voxel_blocks(v[0], stride) for v in vols]) for role, vols in volumes.items()}
            results[name] = _score(x, y, names)
            continue
        torch.manual_seed(seed)
        model = swinunetr_for(sizes)
        if what != RANDOM:
            load_encoder_weights(model, what, expected=sizes)
        swin = model.swinViT.to(device).eval()
        x = {role: torch.cat([stage_tokens(swin, v.to(device), stage).cpu() for v in vols])
             for role, vols in volumes.items()}
        results[name] = _score(x, y, names)
    return {"source": str(source), "dataset": str(spec.get("name") or Path(source).parent.name), "stage": stage, "stride": stride, "classes": names,
            "train_tokens": int(y["training"].numel()), "val_tokens": int(y["validation"].numel()),
            "encoders": results}


def _score(x: dict, y: dict, names: list[str]) -> dict:
    """Fit on ``x["training"]``, score on ``x["validation"]``: balanced accuracy, organ recall, recall per class."""
    layer = fit_linear_probe(x["training"], y["training"], len(names))
    with torch.no_grad():
        pred = layer(x["validation"].double()).argmax(1)
    recall = per_class_recall(pred, y["validation"], len(names))
    return {
        "balanced_accuracy": float(np.nanmean(recall)),
        "organ_recall": float(np.nanmean(recall[1:])) if np.isfinite(recall[1:]).any() else None,
        "recall": {names[c]: (None if np.isnan(r) else float(r)) for c, r in enumerate(recall)},
    }


def _label(entry: str) -> tuple[str, str]:
    name, sep, what = entry.partition("=")
    return (name, what) if sep and name and what else (entry, entry)


def markdown(result: dict) -> str:
    """A table: one row per encoder, balanced accuracy, organ recall and each class's recall (%)."""
    classes = result["classes"]
    head = "| encoder | balanced accuracy | organ recall | " + " | ".join(classes) + " |"
    rows = [head, "|" + "---|" * (len(classes) + 3)]
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
    for name, r in result["encoders"].items():
        rows.append(f"| {name} | {pct(r['balanced_accuracy'])} | {pct(r['organ_recall'])} | "
                    + " | ".join(pct(r["recall"][c]) for c in classes) + " |")
    return "\n".join(rows)


def write_probe(result: dict, out: str | Path) -> None:
    """``out`` (.json) gets the result; the same name with .md gets :func:`markdown`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2))
    atomic_write_text(out.with_suffix(".md"), markdown(result) + "\n")
