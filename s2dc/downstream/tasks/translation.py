"""Translation: one MR sequence -> the others (BraTS 2023), SwinUNETR with one channel in, C-1 out (or C).

Every sequence is z-scored over the brain (non-zero voxels, per channel: the registry's MRI preset); the
input is the sequence named by ``data.input_channel`` (default: the first), the targets the others.
Training minimises the L1 error inside the brain on random ROI crops; validation predicts whole volumes
by sliding windows. Scores inside the brain mask (the input's non-zero voxels): PSNR, SSIM, MSE, on the volume's own
voxels (a volume smaller than the crop is zero-padded to it; the padding is not scored).

The ``translate`` options give the release's protocol instead (``inputs: cycle``, ``targets: all``, ``loss: mse``,
``loss_weight: 10``): each sequence of a crop in turn as input, a step each, all C predicted (``inputs: each`` draws
one input a crop instead); the scores stay those of the other sequences.
With ``preprocess.intensity zscore_volume`` (the release's z-score over the whole volume) the brain is
``translate.mask release``: each sequence's own voxels >= -0.35; ``translate.score release`` scores as the release's
``test.py`` (:meth:`Translation.release_scores`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.transforms import Compose, MapTransform, NormalizeIntensity, Randomizable

from ...data.errors import DataError
from ...data.preprocess import EXTENT, own_voxels
from ...data.volumes import plain
from ...export import swinunetr_for
from ...messages import listed
from ...models.encoder import EncoderConfig
from ...train.finetune_config import RELEASE_BRAIN_FLOOR, TranslateConfig
from ..metrics import RELEASE_SSIM_WINDOW, SSIM_SMALLEST_WINDOW, mse, psnr, release_volume_scores, ssim
from .common import Setting, Task, cached_pair, infer, random_crops, refuse_thin_validation


class RandInputSequenced(Randomizable, MapTransform):
    """Add ``source``: the index of the channel (sequence) of ``key`` ``(C, X, Y, Z)`` that a crop gives as input,
    drawn uniformly from ``0 .. C - 1``."""

    def __init__(self, key: str) -> None:
        MapTransform.__init__(self, [key])
        self._source = 0

    def randomize(self, channels: int) -> None:
        self._source = int(self.R.randint(channels))

    def __call__(self, data: dict) -> dict:
        self.randomize(plain(data[self.keys[0]]).shape[0])
        return {**data, "source": torch.tensor(self._source)}


class RandInputOrderd(Randomizable, MapTransform):
    """Add ``order``: a random permutation ``(C,)`` of the channels (sequences) of ``key`` ``(C, X, Y, Z)``, the order in
    which a crop's sequences serve as input, a step each (the release's shuffled loop over a crop's sequences)."""

    def __init__(self, key: str) -> None:
        MapTransform.__init__(self, [key])
        self._order = None

    def randomize(self, channels: int) -> None:
        self._order = self.R.permutation(channels)

    def __call__(self, data: dict) -> dict:
        self.randomize(plain(data[self.keys[0]]).shape[0])
        return {**data, "order": torch.as_tensor(self._order).long()}


class Translation(Task):
    name = "translation"
    roles = ("image",)
    score_key, score_name, percent = "psnr", "PSNR dB", False
    readout, picks_input_channel = "values", True
    why_not_finite = ("PSNR is infinite where a prediction is exact, or with translate.score release where a sequence "
                      "and its prediction are both constant (a target sequence constant inside the brain mask is "
                      "refused before training)")
    options_section = "translate"

    def __init__(self, doc: dict, dataset_json: Path, data, options: TranslateConfig | None = None) -> None:
        self.options = o = options or TranslateConfig()
        self.dataset_json = dataset_json
        modality = doc.get("modality")
        try:
            channels = [modality[k] for k in sorted(modality, key=int)] if isinstance(modality, dict) else []
        except ValueError:
            raise DataError(f"'modality' of dataset json '{dataset_json}' must have integer keys (\"0\", \"1\", "
                            f"...), got {sorted(modality)}") from None
        if len(channels) < 2:
            raise DataError(f"dataset json '{dataset_json}' must name at least two sequences in 'modality' for "
                            f"translation, got {modality!r}")
        if o.inputs != "one" and data.input_channel:
            raise ValueError(f"data.input_channel ({data.input_channel!r}) picks one input sequence, but "
                             f"translate.inputs {o.inputs} gives every sequence in turn: leave one of them unset")
        wanted = data.input_channel or channels[0]
        if wanted not in channels:
            raise ValueError(f"data.input_channel must be one of the dataset's sequences {channels}, got {wanted!r}")
        #: ``source``: the channel of the input sequence (``data.input_channel``), as in the loops over ``inputs``.
        self.channels, self.source = channels, channels.index(wanted)
        self.targets = [c for c in range(len(channels)) if c != self.source]
        #: The sequences given as input in validation, and the channels the network predicts.
        self.inputs = list(range(len(channels))) if o.inputs != "one" else [self.source]
        self.outputs = list(range(len(channels))) if o.targets == "all" else self.targets
        #: ``cycle``: each training batch serves one step per sequence (its ``"turn"`` picks the input).
        self.steps_per_batch = len(channels) if o.inputs == "cycle" else 1

    def check(self, s: Setting) -> None:
        """Refuse a brain mask that does not fit the normalisation: the non-zero voxels are the brain only where the
        background stays 0 (``zscore``), the release's >= -0.35 only where it is z-scored too (``zscore_volume``)."""
        volume, mask = s.preprocess.intensity == "zscore_volume", self.options.mask
        if volume and mask == "nonzero":
            raise ValueError("preprocess.intensity zscore_volume leaves no zero background, so translate.mask nonzero "
                             "(the input's non-zero voxels) would be every voxel: use translate.mask release (each "
                             "sequence's voxels >= -0.35), or preprocess.intensity zscore")
        if not volume and mask == "release":
            raise ValueError(f"translate.mask release (each sequence's voxels >= {RELEASE_BRAIN_FLOOR:g}) reads "
                             "sequences z-scored over the whole volume, but preprocess.intensity is "
                             f"{s.preprocess.intensity}: use preprocess.intensity zscore_volume, or translate.mask "
                             "nonzero")

    def check_validation(self, val, cases: list[dict]) -> None:
        """Refuse validation cases that :meth:`evaluate` cannot score (every case is read): a volume whose own voxels
        (``extent``) are fewer than SSIM's window along an axis (:meth:`_check_size`); then, naming each sequence, an
        input with no brain mask, or a target sequence of one value on every voxel of its mask (its range, PSNR's
        peak, 0), both on the volume's own voxels. ``score: release`` takes the larger of the prediction's and the
        target's ranges, which a constant target leaves defined: only the size is checked."""
        self._check_size(val, cases)
        if self.options.score == "release":
            return
        nonzero, found = self.options.mask == "nonzero", []
        for i, case in enumerate(cases):
            image, files = own_voxels(plain(val[i]["image"]).float(), val[i][EXTENT]), case["image"]
            for source in self.inputs:
                x, others = image[source : source + 1], [c for c in range(len(self.channels)) if c != source]
                if nonzero and not x.any():  # the one mask, the input's, is empty: no sequence can be scored
                    found.append(f"'{files[source]}', the input sequence {self.channels[source]!r} of case "
                                 f"'{case['id']}', is zero everywhere: no brain mask (its non-zero voxels)")
                    continue
                where = (f"the non-zero voxels of the input {self.channels[source]!r}" if nonzero else
                         f"its voxels >= {RELEASE_BRAIN_FLOOR:g}")
                targets = image[others]  # (C-1, X, Y, Z)
                for c, target, mask in zip(others, targets, self.brain(x, targets).expand_as(targets)):
                    inside = target[mask]
                    named = f"'{files[c]}', the sequence {self.channels[c]!r} of case '{case['id']}',"
                    if not len(inside):
                        found.append(f"{named} has no voxel >= {RELEASE_BRAIN_FLOOR:g}: no brain mask")
                    elif not inside.max() > inside.min():
                        found.append(f"{named} is constant ({float(inside[0]):g} once preprocessed) on its brain mask "
                                     f"({where})")
        found = list(dict.fromkeys(found))  # the release's mask is a sequence's own: the same whatever the input
        if found:
            raise DataError(f"{len(found)} sequence(s) of the {len(cases)} validation case(s) of '{self.dataset_json}' "
                            f"cannot be scored: {listed(found)}; translation is scored inside the brain mask "
                            f"(translate.mask {self.options.mask}) against each target sequence's range there; "
                            "expected validation cases whose target sequences each vary inside a brain mask: check "
                            "these cases or leave them out of the validation cases")

    def _check_size(self, val, cases: list[dict]) -> None:
        """Refuse validation volumes whose own voxels (``extent``) are fewer than the SSIM window along an axis
        (:meth:`evaluate` and :meth:`release_scores` score them, not their padding): the release's 7 voxels with
        ``score: release``, else the smallest window of :func:`~s2dc.downstream.metrics.ssim`, 3
        (:func:`~.common.refuse_thin_validation`)."""
        if self.options.score == "release":
            refuse_thin_validation(val, cases, self.dataset_json, RELEASE_SSIM_WINDOW,
                                   "as the release scores them (translate.score release)", "its SSIM window is",
                                   ", or use translate.score brain")
        else:
            refuse_thin_validation(val, cases, self.dataset_json, SSIM_SMALLEST_WINDOW, "(translate.score brain)",
                                   "SSIM's smallest window is")

    def brain(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The mask the loss and the scores read (``translate.mask``), from the input ``(..., 1, X, Y, Z)`` and the
        targets ``(..., K, X, Y, Z)``: the input's non-zero voxels ``(..., 1, ...)``, or each target's own voxels
        >= -0.35 ``(..., K, ...)`` (the release's ``data.ge(-0.35)``)."""
        return x != 0 if self.options.mask == "nonzero" else target >= RELEASE_BRAIN_FLOOR

    def datasets(self, train: list[dict], val: list[dict], s: Setting, cache_root: Path):
        for case in (*train, *val):
            if not isinstance(case["image"], list) or len(case["image"]) != len(self.channels):
                raise DataError(f"case '{case['id']}' must list {len(self.channels)} sequences {self.channels} as "
                                f"'image', got {case['image']!r}")
        return cached_pair(train, val, s, cache_root, "trans1")

    def augment(self, s: Setting) -> Compose:
        crops = random_crops(["image"], s)
        if self.options.inputs == "one":
            return crops
        pick = RandInputOrderd("image") if self.options.inputs == "cycle" else RandInputSequenced("image")
        return Compose([*crops.transforms, pick])

    def build_model(self, encoder: EncoderConfig, **kwargs) -> torch.nn.Module:
        return swinunetr_for(encoder, out_channels=len(self.outputs), **kwargs)

    def split(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(..., C, X, Y, Z)`` -> input ``(..., 1, ...)``, targets ``(..., C-1, ...)``, brain mask (:meth:`brain`)."""
        x = image[..., self.source : self.source + 1, :, :, :]
        target = image[..., self.targets, :, :, :]
        return x, target, self.brain(x, target)

    def input_and_target(self, item: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """A preprocessed case -> the network's input ``(1, X, Y, Z)`` and its targets ``(C-1, X, Y, Z)``."""
        x, target, _ = self.split(plain(item["image"]).float())
        return x, target

    def training_split(self, image: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Crops ``(B, C, X, Y, Z)`` -> input ``(B, 1, ...)``, targets ``(B, K, ...)`` (K: the predicted channels),
        brain mask (:meth:`brain`); with ``inputs: each`` crop ``b``'s input is its channel ``batch["source"][b]``, with
        ``cycle`` its channel ``batch["order"][b, batch["turn"]]``."""
        if self.options.inputs == "one":
            x = image[:, self.source : self.source + 1]
            target = image if self.options.targets == "all" else image[:, self.targets]
            return x, target, self.brain(x, target)
        if self.options.inputs == "cycle":
            source = torch.as_tensor(batch["order"])[:, int(batch["turn"])].to(image.device).long()
        else:
            source = torch.as_tensor(batch["source"]).to(image.device).long().reshape(-1)
        x = image[torch.arange(image.shape[0], device=image.device), source][:, None]
        return x, image, self.brain(x, image)

    def loss(self, model: torch.nn.Module, batch: dict, s: Setting) -> torch.Tensor:
        image = plain(batch["image"]).to(s.device, torch.float32, non_blocking=True)
        x, target, mask = self.training_split(image, batch)
        with s.autocast():
            pred = model(x)
        diff = pred.float() - target
        err = (diff.abs() if self.options.loss == "l1" else diff.square()) * mask
        return err.sum() / mask.expand_as(target).sum().clamp_min(1) * self.options.loss_weight

    def evaluate(self, model: torch.nn.Module, val, s: Setting) -> dict:
        """PSNR, SSIM and MSE of each sequence other than the input, in the brain (each on its own range); their mean
        over those sequences, then over the validation cases (and over each sequence as input, with ``inputs: each``).
        Prediction, targets and mask are the volume's own voxels (``extent``): the padding that brings a volume smaller
        than the crop up to it is scored by none of the three (SSIM's windows there scored 1). With ``score:
        release``: :meth:`release_scores`."""
        if self.options.score == "release":
            return self.release_scores(model, val, s)
        scores = []
        for i in range(len(val)):
            item = val[i]
            image = plain(item["image"]).float()
            own = own_voxels(image, item[EXTENT])  # (C, X', Y', Z'): the padding is no part of the volume
            for source in self.inputs:
                x = own[source : source + 1]
                others = [c for c in range(len(self.channels)) if c != source]
                target = own[others]
                mask = self.brain(x, target)  # not empty: check_validation
                pred = own_voxels(infer(model, image[source : source + 1], s)[0].cpu(), item[EXTENT])
                pred = pred[[self.outputs.index(c) for c in others]]
                each = [(psnr(p, t, m), ssim(p, t, m), mse(p, t, m))
                        for p, t, m in zip(pred.split(1), target.split(1), mask.expand_as(target).split(1))]
                scores.append([sum(v) / len(v) for v in zip(*each)])  # each sequence on its own range, as the release
        psnr_, ssim_, mse_ = (sum(v) / len(v) for v in zip(*scores))
        return {"psnr": psnr_, "ssim": ssim_, "mse": mse_}

    def release_scores(self, model: torch.nn.Module, val, s: Setting) -> dict:
        """The release's ``test.py``: for each case and input sequence i, the prediction of all C sequences (windows
        blended by a Gaussian), each channel z-scored again over the whole volume (MONAI ``NormalizeIntensity``),
        outside the mask (each sequence's voxels >= -0.35) replaced by the target's voxels; then PSNR, SSIM and MSE of
        each output j against sequence j over the whole volume (:func:`~s2dc.downstream.metrics.release_volume_scores`),
        the input's own (j = i) among them. The volume is its own voxels (``extent``): the padding that brings a volume
        smaller than the crop up to it is neither renormalised nor scored. Returns the means over the cases of each
        pair under ``pairs_psnr`` / ``pairs_ssim`` / ``pairs_mse`` (keys ``"t1n_2_t1c"``, the release's), and
        ``psnr``, ``ssim``, ``mse`` their means over the pairs."""
        renormalise = NormalizeIntensity(channel_wise=True)
        pairs: dict[str, list[tuple[float, float, float]]] = {}
        for i in range(len(val)):
            item = val[i]
            image = plain(item["image"]).float()
            own = own_voxels(image, item[EXTENT])  # (C, X', Y', Z'): the padding is no part of the volume
            mask = own >= RELEASE_BRAIN_FLOOR
            for source in self.inputs:
                pred = own_voxels(infer(model, image[source : source + 1], s, mode="gaussian")[0].cpu(), item[EXTENT])
                pred = torch.where(mask, torch.as_tensor(renormalise(pred)), own)
                for c, name in enumerate(self.channels):
                    pairs.setdefault(f"{self.channels[source]}_2_{name}", []).append(
                        release_volume_scores(pred[c], own[c]))
        means = {pair: [sum(v) / len(v) for v in zip(*values)] for pair, values in pairs.items()}
        result = {key: sum(m[k] for m in means.values()) / len(means) for k, key in enumerate(("psnr", "ssim", "mse"))}
        for k, key in enumerate(("psnr", "ssim", "mse")):
            result[f"pairs_{key}"] = {pair: m[k] for pair, m in means.items()}
        return result
