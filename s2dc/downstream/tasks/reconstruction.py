"""Reconstruction: low-dose PET -> full-dose PET with SwinUNETR (one channel in, one out).

Both volumes are divided by the mean of the low-dose image's non-zero voxels (the only scale known at
inference), so prediction and target share units; training minimises the L1 error on random ROI
crops, validation predicts whole volumes by sliding windows. Scores: PSNR, SSIM and NRMSE, on the volume's own
voxels (a volume smaller than the crop is zero-padded at its far ends; the padding is not scored; a validation volume
thinner than SSIM's smallest window is refused before training).
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.transforms import Compose, MapTransform, Orientationd, Spacingd

from ...data.errors import DataError
from ...data.preprocess import EXTENT, LoadOnImageGridd, LoadVolumed, PadRecordingExtentd, own_voxels
from ...data.volumes import plain
from ...export import swinunetr_for
from ...messages import listed
from ...models.encoder import EncoderConfig
from ..metrics import SSIM_SMALLEST_WINDOW, nrmse, psnr, ssim
from .common import Setting, Task, cached_pair, infer, random_crops, refuse_thin_validation

KEYS = ["image", "target"]


class ScaleByImaged(MapTransform):
    """Divide ``image`` and ``target`` by the mean of the image's non-zero voxels (shape unchanged)."""

    def __init__(self) -> None:
        super().__init__(KEYS)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        image = d["image"]
        if not (image != 0).any():  # no scale: the mean of no voxel is NaN, and every voxel would become NaN
            name = getattr(image, "meta", {}).get("filename_or_obj", "a low-dose image")
            raise DataError(f"'{name}' is zero everywhere: the mean of its non-zero voxels, which both volumes are "
                            "divided by, does not exist; check the case or leave it out")
        scale = image[image != 0].abs().mean().clamp_min(1e-6)
        d["image"], d["target"] = image / scale, d["target"] / scale
        return d


class Reconstruction(Task):
    name = "reconstruction"
    roles = ("image", "target")
    score_key, score_name, percent = "psnr", "PSNR dB", False
    readout = "values"
    why_not_finite = "PSNR is infinite where a prediction is exact (a constant target is refused before training)"

    def __init__(self, doc: dict, dataset_json: Path, data) -> None:
        self.dataset_json = dataset_json
        self.loss_fn = torch.nn.L1Loss()

    def check_validation(self, val, cases: list[dict]) -> None:
        """Refuse, each named (every case is read), validation volumes whose own voxels (``extent``) are fewer than
        SSIM's smallest window, 3, along an axis (:func:`~.common.refuse_thin_validation`; training volumes, never
        scored, may be thinner); then validation targets of one value on their own voxels: the range, PSNR's peak, is
        0 and no PSNR is defined. A target stored constant is refused on loading; one may become so on the grid of
        ``preprocess.spacing``."""
        refuse_thin_validation(val, cases, self.dataset_json, SSIM_SMALLEST_WINDOW, "by SSIM",
                               "SSIM's smallest window is")
        flat = []
        for i, case in enumerate(cases):
            target = own_voxels(plain(val[i]["target"]), val[i][EXTENT])
            if not target.max() > target.min():
                flat.append(f"'{case['id']}' ('{case['target']}')")
        if flat:
            raise DataError(f"the full-dose target of {len(flat)} of the {len(cases)} validation case(s) of "
                            f"'{self.dataset_json}' is constant (one value) on its voxels once preprocessed: "
                            f"{listed(flat)}; its range, PSNR's peak, is 0, so no PSNR can be scored; expected "
                            "validation targets whose voxels vary: check these cases (resampled by preprocess.spacing, "
                            "a target may lose what varied), or leave them out of the validation cases")

    def datasets(self, train: list[dict], val: list[dict], s: Setting, cache_root: Path):
        cfg = s.preprocess
        steps: list = [LoadVolumed("image"), LoadOnImageGridd("target", "target"),
                       Orientationd(KEYS, axcodes=cfg.orientation, labels=None)]
        if cfg.spacing is not None:
            steps.append(Spacingd(KEYS, pixdim=cfg.spacing, mode="bilinear"))
        steps += [PadRecordingExtentd(KEYS, s.roi_size, method="end"), ScaleByImaged()]
        return cached_pair(train, val, s, cache_root, "rec", Compose(steps), __name__)

    def augment(self, s: Setting) -> Compose:
        return random_crops(KEYS, s)

    def build_model(self, encoder: EncoderConfig, **kwargs) -> torch.nn.Module:
        return swinunetr_for(encoder, out_channels=1, **kwargs)

    def loss(self, model: torch.nn.Module, batch: dict, s: Setting) -> torch.Tensor:
        image = plain(batch["image"]).to(s.device, torch.float32, non_blocking=True)
        target = plain(batch["target"]).to(s.device, torch.float32, non_blocking=True)
        with s.autocast():
            pred = model(image)
        return self.loss_fn(pred.float(), target)

    def input_and_target(self, item: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """A preprocessed case -> the network's input ``(1, X, Y, Z)`` and its target ``(1, X, Y, Z)``."""
        return plain(item["image"]).float(), plain(item["target"]).float()

    def evaluate(self, model: torch.nn.Module, val, s: Setting) -> dict:
        scores = []
        for i in range(len(val)):
            item = val[i]
            pred = own_voxels(infer(model, item["image"], s)[0].cpu(), item[EXTENT])  # the padding is not the target's
            target = own_voxels(plain(item["target"]).float(), item[EXTENT])
            scores.append((psnr(pred, target), ssim(pred, target), nrmse(pred, target)))
        psnr_, ssim_, nrmse_ = (sum(v) / len(v) for v in zip(*scores))
        return {"psnr": psnr_, "ssim": ssim_, "nrmse": nrmse_}
