"""The metrics of the four downstream tasks, on tensors of one case or one validation set.

Segmentation: Dice per class or region, as MONAI's ``DiceMetric`` with ``ignore_empty`` (in double precision).
Classification: accuracy and macro one-vs-rest ROC AUC (MONAI ``compute_roc_auc``). Reconstruction and translation:
PSNR (data range = the target's range), SSIM (MONAI ``SSIMMetric``), NRMSE (RMSE / RMS of the target) and MSE, each
optionally inside a mask (translation: the brain); and the release's BraTS 2023 scores of a whole volume
(:func:`release_volume_scores`, scikit-image's definitions)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics import SSIMMetric, compute_roc_auc
from monai.networks.utils import one_hot

from ..train.finite import NonFiniteError


def _dice(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Dice ``2 |P ∩ G| / (|P| + |G|)`` of each channel of boolean maps ``(R, ...)``, from the voxel counts in double
    precision; ``NaN`` where ``G`` is empty (MONAI ``DiceMetric``'s ``ignore_empty``: whatever is predicted there)."""
    p, g = pred.reshape(len(pred), -1).bool(), target.reshape(len(target), -1).bool()
    shared = (p & g).sum(1).double()
    size_p, size_g = p.sum(1).double(), g.sum(1).double()
    return torch.where(size_g > 0, 2 * shared / (size_p + size_g).clamp_min(1), torch.nan).numpy()


def dice_per_class(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> np.ndarray:
    """Dice of classes 1..C-1 for one case from integer maps ``pred`` and ``label`` (same shape, e.g.
    ``(1, X, Y, Z)``); ``NaN`` where the class is absent from the ground truth (MONAI ``ignore_empty``:
    such a class is left out of the averages instead of counting as 0 or 1)."""
    classes = torch.arange(1, num_classes).reshape(-1, 1, 1, 1)
    p, g = pred.reshape(1, *pred.shape[-3:]).long(), label.reshape(1, *label.shape[-3:]).long()
    return _dice(p == classes, g == classes)


def dice_per_region(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Dice of each region channel for one case from boolean/0-1 maps ``pred`` and ``target`` ``(1, R, ...)``;
    ``NaN`` where the region is absent from the ground truth (``ignore_empty``)."""
    return _dice(pred[0], target[0])


def summarize_dice(per_case: list[np.ndarray], names: list[str]) -> tuple[dict[str, float], float]:
    """Per-class Dice (``nanmean`` over cases) keyed by class name (background excluded) and their
    ``nanmean``; classes absent from every case are ``NaN`` and left out of the mean."""
    table = np.stack(per_case).astype(np.float64)  # (cases, C-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns -> NaN
        per_class = np.nanmean(table, axis=0)
        mean = float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")
    return {name: float(v) for name, v in zip(names[1:], per_class)}, mean


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of cases whose arg-max class equals ``target``; ``logits`` (N, K), ``target`` (N,)."""
    return int((logits.argmax(dim=1) == target).sum()) / len(target)  # exact: a float32 mean wrote 0.49000000953674316


def roc_auc(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Macro one-vs-rest ROC AUC, in double precision, each class's cases ranked by its margin ``z_k - logsumexp_{j != k}
    z_j``: the order of its softmax score, which rounds to exactly 1.0 beyond a margin of ~37 even in double precision
    (confident cases tied); ``NaN`` when a class is absent from ``target`` (its AUC is undefined). ``logits`` (N, K)."""
    k = logits.shape[1]
    if len(torch.unique(target)) < k:
        return float("nan")
    z = logits.double()
    own = torch.eye(k, dtype=torch.bool)
    margins = z - torch.logsumexp(z[:, None, :].masked_fill(own, -torch.inf), dim=2)  # (N, K)
    truth = one_hot(target.reshape(-1, 1).long(), k, dim=1, dtype=torch.float64)
    return float(compute_roc_auc(margins, truth, average="macro"))


def _mask(target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mask`` broadcast to ``target``'s shape; ValueError if it holds no voxel (no score is defined there)."""
    m = mask.expand_as(target).bool()
    if not m.any():
        raise ValueError("the mask holds no voxel: there is nothing to score inside it")
    return m


def _masked(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The voxels of ``pred`` and ``target`` (inside ``mask``), flat, in double precision (a diverged model's
    predictions of ~1e20 overflowed float32 sums: PSNR -inf)."""
    pred, target = pred.double(), target.double()
    if mask is None:
        return pred.reshape(-1), target.reshape(-1)
    m = _mask(target, mask)
    return pred[m], target[m]


def mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean squared error over all voxels, or over those where ``mask`` is true (broadcast over channels)."""
    p, t = _masked(pred, target, mask)
    return float(((p - t) ** 2).mean())


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """``10 log10(R^2 / MSE)`` in dB with ``R`` = max - min of the target (inside ``mask``)."""
    p, t = _masked(pred, target, mask)
    err = float(((p - t) ** 2).mean())
    data_range = float(t.max() - t.min())
    return float("inf") if err == 0 else 10.0 * float(np.log10(data_range**2 / err))


def nrmse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """RMSE divided by the root mean square of the target (inside ``mask``)."""
    p, t = _masked(pred, target, mask)
    return float(torch.sqrt(((p - t) ** 2).mean()) / torch.sqrt((t**2).mean()))


#: The side of the smallest window :func:`ssim` takes (on a volume thinner than 7 voxels): a volume it scores holds at
#: least that many voxels along every axis.
SSIM_SMALLEST_WINDOW = 3


def ssim(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """3-D SSIM (MONAI, Gaussian 7-voxel window, sd 1.5; on a smaller volume the largest odd window it holds) of
    ``(C, X, Y, Z)`` volumes with data range = the target's (MONAI computes in float32: predictions beyond ~1e19
    overflow it, a NonFiniteError); with ``mask`` both are set to the target's minimum outside it first. Mean over
    channels."""
    pred, target = pred.float(), target.float()
    if mask is not None:
        m = _mask(target, mask)
        low = target[m].min()
        pred, target = torch.where(m, pred, low), torch.where(m, target, low)
    data_range = float(target.max() - target.min()) or 1.0
    win = max(SSIM_SMALLEST_WINDOW, (min(7, *target.shape[-3:]) - 1) // 2 * 2 + 1)  # 7, or the largest odd it holds
    metric = SSIMMetric(spatial_dims=3, data_range=data_range, win_size=win)
    value = float(metric(pred.reshape(-1, 1, *pred.shape[-3:]), target.reshape(-1, 1, *target.shape[-3:])).mean())
    if not math.isfinite(value):  # its constants keep every window finite: only a float32 overflow makes NaN
        raise NonFiniteError(f"SSIM is not finite: predictions up to {float(pred.abs().max()):.3g} overflow its float32 "
                             "sums (a diverged model); no score is recorded")
    return value


#: The side of the release's (scikit-image's) uniform SSIM window: a volume it scores holds at least that many voxels
#: along every axis.
RELEASE_SSIM_WINDOW = 7


def release_volume_scores(pred: torch.Tensor, target: torch.Tensor,
                          win: int = RELEASE_SSIM_WINDOW) -> tuple[float, float, float]:
    """PSNR dB, SSIM and MSE of one whole volume ``(X, Y, Z)`` as the release's BraTS 2023 ``test.py`` scores it with
    scikit-image (``peak_signal_noise_ratio``, ``structural_similarity`` at its defaults), in double precision:
    ``data_range`` R the larger of the two volumes' ranges; PSNR ``10 log10(R^2 / MSE)``; SSIM with a uniform
    ``win``-voxel window, sample (co)variances (times N / (N - 1), N = win^3), C1 = (0.01 R)^2, C2 = (0.03 R)^2,
    averaged over the voxels at least ``(win - 1) / 2`` from every border (the windows inside the volume)."""
    x, y = pred.double().reshape(1, 1, *pred.shape[-3:]), target.double().reshape(1, 1, *target.shape[-3:])
    if min(x.shape[-3:]) < win:
        raise ValueError(f"the release's SSIM needs a volume of at least {win} voxels along every axis, got "
                         f"{tuple(x.shape[-3:])}")
    err = float(((x - y) ** 2).mean())
    data_range = max(float(x.max() - x.min()), float(y.max() - y.min()))
    psnr_ = float("inf") if err == 0 else 10.0 * float(np.log10(data_range**2 / err))
    mean = lambda v: F.avg_pool3d(v, win, stride=1)  # noqa: E731  (the valid windows only)
    ux, uy = mean(x), mean(y)
    norm = win**3 / (win**3 - 1)
    vx, vy, vxy = norm * (mean(x * x) - ux**2), norm * (mean(y * y) - uy**2), norm * (mean(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return psnr_, float(s.mean()), err
