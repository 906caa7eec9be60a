"""Translation: one MR sequence -> the others (BraTS 2023), SwinUNETR with one channel in, C-1 out.

Every sequence is z-scored over the brain (non-zero voxels, per channel: the registry's MRI preset); the
input is the sequence named by ``data.input_channel`` (default: the first), the targets the others.
Training minimises the L1 error inside the brain on random ROI crops; validation predicts whole volumes
by sliding windows. Scores inside the brain mask (the input's non-zero voxels): PSNR, SSIM, MSE.
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.transforms import Compose

from ...data.errors import DataError
from ...data.volumes import plain
from ...export import swinunetr_for
from ...models.encoder import EncoderConfig
from ..metrics import mse, psnr, ssim
from .common import Setting, Task, cached_pair, infer, random_crops


class Translation(Task):
    name = "translation"
    roles = ("image",)
    score_key, score_name, percent = "psnr", "PSNR dB", False
    readout, picks_input_channel = "values", True
    why_not_finite = ("PSNR is infinite where a target sequence is constant inside the brain mask, or a prediction "
                      "exact")

    def __init__(self, doc: dict, source: Path, data) -> None:
        modality = doc.get("modality")
        try:
            channels = [modality[k] for k in sorted(modality, key=int)] if isinstance(modality, dict) else []
        except ValueError:
            raise DataError(f"'modality' of dataset json '{source}' must have integer keys (\"0\", \"1\", ...), got "
                            f"{sorted(modality)}") from None
        if len(channels) < 2:
            raise DataError(f"dataset json '{source}' must name at least two sequences in 'modality' for translation, "
                            f"got {modality!r}")
        wanted = data.input_channel or channels[0]
        if wanted not in channels:
            raise ValueError(f"data.input_channel must be one of the dataset's sequences {channels}, got {wanted!r}")
        self.channels, self.source = channels, channels.index(wanted)
        self.targets = [c for c in range(len(channels)) if c != self.source]

    def datasets(self, train: list[dict], val: list[dict], s: Setting, cache_root: Path):
        for case in (*train, *val):
            if not isinstance(case["image"], list) or len(case["image"]) != len(self.channels):
                raise DataError(f"case '{case['id']}' must list {len(self.channels)} sequences {self.channels} as "
                                f"'image', got {case['image']!r}")
        return cached_pair(train, val, s, cache_root, "trans1")

    def augment(self, s: Setting) -> Compose:
        return random_crops(["image"], s)

    def build_model(self, encoder: EncoderConfig, **kwargs) -> torch.nn.Module:
        return swinunetr_for(encoder, out_channels=len(self.targets), **kwargs)

    def split(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(..., C, X, Y, Z)`` -> input ``(..., 1, ...)``, targets ``(..., C-1, ...)``, brain mask ``(..., 1, ...)``."""
        x = image[..., self.source : self.source + 1, :, :, :]
        return x, image[..., self.targets, :, :, :], x != 0

    def input_and_target(self, item: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """A preprocessed case -> the network's input ``(1, X, Y, Z)`` and its targets ``(C-1, X, Y, Z)``."""
        x, target, _ = self.split(plain(item["image"]).float())
        return x, target

    def loss(self, model: torch.nn.Module, batch: dict, s: Setting) -> torch.Tensor:
        x, target, mask = self.split(plain(batch["image"]).to(s.device, torch.float32, non_blocking=True))
        with s.autocast():
            pred = model(x)
        err = (pred.float() - target).abs() * mask
        return err.sum() / (mask.sum() * target.shape[1]).clamp_min(1)

    def evaluate(self, model: torch.nn.Module, val, s: Setting) -> dict:
        scores = []
        for i in range(len(val)):
            image = val[i]["image"]
            x, target, mask = self.split(plain(image).float())
            if not mask.any():
                name = getattr(image, "meta", {}).get("filename_or_obj", f"validation case {i + 1}")
                raise DataError(f"'{name}': the input sequence {self.channels[self.source]!r} is zero everywhere, so "
                                "there is no brain mask (its non-zero voxels) to score the translation in; check the "
                                "case or leave it out of the validation cases")
            pred = infer(model, x, s)[0].cpu()
            scores.append((psnr(pred, target, mask), ssim(pred, target, mask), mse(pred, target, mask)))
        psnr_, ssim_, mse_ = (sum(v) / len(v) for v in zip(*scores))
        return {"psnr": psnr_, "ssim": ssim_, "mse": mse_}
