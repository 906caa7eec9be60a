"""Can the ADNI twin's class be read at all, and by what? A diagnostic of the frozen-encoder protocol's ADNI row.

Draws ``--train`` + ``--val`` brain FDG-PET twins (classes alternating, as the pipeline's `adni` twin) at
``--shape`` and scores, on the validation cases, features fitted on the training cases:

* region texture (an oracle: it knows where the AD pattern's temporo-parietal region lies in each brain, from the
  generator's pose): the 95th percentile of the region's uptake over that of a frontal-superior reference, and
  the region's coefficient of variation — a threshold on each, fitted on the training cases;
* what the probe's pooled linear read-out can see: the volume (z-scored) and its local standard deviation (3³
  window) averaged on a 4³ grid, in :func:`s2dc.eval.probe.fit_linear_probe` with the cross-validated weight decay.

Usage: ``python scripts/adni_readability.py [--train 60 --val 100 --shape 64 64 48 --seed 1000]``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from s2dc.data.synthetic.brain_pet import brain_pet
from s2dc.data.synthetic.geometry import grid
from s2dc.eval.probe import cross_validated_weight_decay, fit_linear_probe, per_class_recall


def case_features(seed: int, shape: tuple[int, int, int], ad: bool) -> tuple[np.ndarray, torch.Tensor]:
    """(oracle (2,): region p95 ratio and coefficient of variation; pooled (128,): mean and local std on a 4³ grid)."""
    b = brain_pet(seed, shape, ad=ad)
    xyz = np.stack(np.broadcast_arrays(*grid(shape)), -1) - b.centre
    u, v, w = np.moveaxis((xyz @ b.rot) / b.semi, -1, 0)  # the brain's own coordinates (brain_pet's docstring)
    tp = np.exp(-(((np.abs(u) - 0.85) / 0.35) ** 2 + ((v + 0.30) / 0.40) ** 2 + ((w - 0.05) / 0.45) ** 2))
    region, reference = (tp > 0.5) & (b.regions > 0), (np.abs(u) < 0.5) & (v > 0.2) & (w > 0.4) & (b.regions > 0)
    image = b.scan.image
    oracle = np.array([np.percentile(image[region], 95) / np.percentile(image[reference], 95),
                       image[region].std() / image[region].mean()])
    vol = torch.from_numpy(image)[None, None]
    vol = (vol - vol.mean()) / vol.std()
    mean = F.avg_pool3d(vol, 3, 1, 1)
    local_std = (F.avg_pool3d(vol * vol, 3, 1, 1) - mean ** 2).clamp_min(0).sqrt()
    pooled = torch.cat([F.adaptive_avg_pool3d(vol, 4).flatten(), F.adaptive_avg_pool3d(local_std, 4).flatten()])
    return oracle, pooled


def threshold_accuracy(train: np.ndarray, y_train: np.ndarray, val: np.ndarray, y_val: np.ndarray) -> float:
    """Balanced accuracy on ``val`` of the threshold (and direction) best on ``train``."""
    def balanced(pred, y):
        return np.mean([(pred[y == c] == c).mean() for c in (0, 1)])
    best = max(((t, s) for t in train for s in (1, -1)), key=lambda ts: balanced(ts[1] * (train - ts[0]) > 0, y_train))
    return float(balanced(best[1] * (val - best[0]) > 0, y_val))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=60)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 64, 48])
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()
    n = args.train + args.val
    y = np.arange(n) % 2
    rows = [case_features(args.seed + i, tuple(args.shape), bool(y[i])) for i in range(n)]
    oracle = np.stack([r[0] for r in rows])
    pooled = torch.stack([r[1] for r in rows])
    tr, va = slice(0, args.train), slice(args.train, n)
    print(f"{args.train} training and {args.val} validation twins at {args.shape}; balanced accuracy on validation (%):")
    for j, name in enumerate(["region p95 / reference p95 (oracle)", "region coefficient of variation (oracle)"]):
        print(f"  {name}: {100 * threshold_accuracy(oracle[tr, j], y[tr], oracle[va, j], y[va]):.1f}")
    yt = torch.from_numpy(y)
    for name, cols in [("mean on a 4³ grid", slice(0, 64)), ("local std on a 4³ grid", slice(64, 128)),
                       ("both", slice(0, 128))]:
        x = pooled[:, cols]
        decay = cross_validated_weight_decay(x[tr], yt[tr], 2)
        with torch.no_grad():
            pred = fit_linear_probe(x[tr], yt[tr], 2, decay)(x[va].double()).argmax(1)
        acc = float(np.nanmean(per_class_recall(pred, yt[va], 2)))
        print(f"  linear probe, {name} (weight decay {decay:g}): {100 * acc:.1f}")


if __name__ == "__main__":
    main()
