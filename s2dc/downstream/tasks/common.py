"""What the task modules share: the data they are handed, windowed inference and random crops."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from monai.inferers import sliding_window_inference
from monai.transforms import Compose, RandFlipd, RandSpatialCropSamplesd

from ...data.preprocess import preprocess_transforms
from ...data.volumes import TransformedCases, plain


@dataclass(frozen=True)
class Setting:
    """What a task needs from the run: preprocessing, crop size, inference options, device, precision."""

    preprocess: Any  # PreprocessConfig
    roi_size: tuple[int, int, int]
    samples_per_volume: int
    flip_prob: float
    sw_batch_size: int
    overlap: float
    device: torch.device
    autocast: Callable


def cached_pair(train: list[dict], val: list[dict], s: Setting, cache_root, tag: str, transform=None):
    """Training and validation cases through one preprocessing ``transform`` (default: the image chain of
    ``s.preprocess``, padded to the crop size), cached under ``cache_root`` in a folder named after ``tag``
    and the preprocessing; returns the two datasets."""
    transform = transform or preprocess_transforms(s.preprocess, s.roi_size)
    name, extra = f"{tag}-{s.preprocess.cache_key()}", {"min_size": list(s.roi_size)}
    return (TransformedCases(train, transform, cache_root, name, extra),
            TransformedCases(val, transform, cache_root, name, extra))


def random_crops(keys: list[str], s: Setting) -> Compose:
    """Random ``roi_size`` crops of every key at one place (``samples_per_volume`` per volume), then flips."""
    return Compose([
        RandSpatialCropSamplesd(keys, roi_size=s.roi_size, num_samples=s.samples_per_volume, random_size=False),
        *(RandFlipd(keys, prob=s.flip_prob, spatial_axis=axis) for axis in range(3)),
    ])


@torch.no_grad()
def infer(model: torch.nn.Module, image: torch.Tensor, s: Setting) -> torch.Tensor:
    """Sliding-window prediction ``(1, K, X, Y, Z)`` float32 of one ``(C, X, Y, Z)`` image."""
    x = plain(image)[None].to(s.device, torch.float32)
    with s.autocast():
        out = sliding_window_inference(x, s.roi_size, s.sw_batch_size, model, overlap=s.overlap)
    return plain(out).float()
