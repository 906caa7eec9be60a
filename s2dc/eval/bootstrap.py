"""Case-level bootstrap of the frozen-encoder protocol's scores: how much a score (and the difference between two
encoders' scores, paired on the same cases) moves when the validation cases are resampled.

Tokens of one volume are not independent draws, so the resampling unit is the validation case. Each score is a
function of per-case sufficient statistics (a confusion matrix for balanced accuracy, sums for R²), so a resample
is a weighted sum of the cases' statistics: ``weights (B, cases) @ stats (cases, F)``, all resamples at once.
"""

from __future__ import annotations

import itertools

import torch

RESAMPLES = 1000


def case_index(lengths: list[int]) -> torch.Tensor:
    """The case of every row of a concatenation of cases with ``lengths`` rows each: (sum(lengths),) long."""
    return torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths, dtype=torch.long))


def confusion_by_case(pred: torch.Tensor, y: torch.Tensor, case: torch.Tensor, cases: int,
                      num_classes: int) -> torch.Tensor:
    """Per-case confusion counts, flattened: pred, y, case (N,) -> (cases, K · K), entry [c, t · K + p] = number of
    rows of case c with true class t predicted p."""
    k = num_classes
    flat = case * k * k + y * k + pred
    return torch.bincount(flat, minlength=cases * k * k).double().reshape(cases, k * k)


def balanced_accuracy(confusion: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean recall over the classes present: confusion (..., K · K) summed over cases -> (...,)."""
    m = confusion.reshape(*confusion.shape[:-1], num_classes, num_classes)
    total = m.sum(-1)  # (..., K) rows: true class
    recall = m.diagonal(dim1=-2, dim2=-1) / total.clamp_min(1)
    present = total > 0
    return (recall * present).sum(-1) / present.sum(-1)


def regression_sums(pred: torch.Tensor, y: torch.Tensor, case: torch.Tensor, cases: int) -> torch.Tensor:
    """Per-case sums for R²: pred, y (N, C), case (N,) -> (cases, 2 + 2C): rows, sum of squared residuals over the
    channels, then per channel the sum of y and of y²."""
    y, pred = y.double(), pred.double()
    rows = torch.ones(len(y), 1, dtype=torch.float64)
    per_row = torch.cat([rows, ((pred - y) ** 2).sum(1, keepdim=True), y, y ** 2], dim=1)
    return torch.zeros(cases, per_row.shape[1], dtype=torch.float64).index_add_(0, case, per_row)


def r_squared_from_sums(sums: torch.Tensor) -> torch.Tensor:
    """1 - SS_res / SS_tot with per-channel means, from :func:`regression_sums` summed over cases: (..., 2 + 2C) ->
    (...,)."""
    n, residual = sums[..., 0], sums[..., 1]
    channels = (sums.shape[-1] - 2) // 2
    total, squares = sums[..., 2:2 + channels], sums[..., 2 + channels:]
    ss_tot = (squares - total ** 2 / n[..., None]).sum(-1)
    return 1 - residual / ss_tot


def resample_weights(cases: int, resamples: int = RESAMPLES, seed: int = 0) -> torch.Tensor:
    """How often each case is drawn in each of ``resamples`` bootstrap samples of ``cases`` cases: (B, cases)."""
    generator = torch.Generator().manual_seed(seed)
    drawn = torch.randint(cases, (resamples, cases), generator=generator)
    return torch.zeros(resamples, cases, dtype=torch.float64).scatter_add_(1, drawn, torch.ones_like(drawn, dtype=torch.float64))


def bootstrap(stats: dict[str, torch.Tensor], metric, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Standard errors of each encoder's score and of every paired difference, over the same resamples of the
    cases: ``stats`` {encoder: (cases, F), or (K, cases, F) for a baseline drawn K times, scored by the mean of the K
    scores}, ``metric`` (..., F) -> (...,) -> {encoder: {"se", "versus": {other: {"difference", "se"}}}}
    (``difference``: this encoder's score minus the other's, on all cases). With one case every resample is that
    case: no spread can be estimated, ``se`` is None."""
    cases = next(iter(stats.values())).shape[-2]
    weights = resample_weights(cases, resamples, seed)
    full = {name: float(metric(s.sum(-2)).mean()) for name, s in stats.items()}
    draws = {name: metric(weights @ s).reshape(-1, len(weights)).mean(0) for name, s in stats.items()}  # (B,)
    for name, draw in draws.items():
        if not torch.isfinite(draw).all():  # e.g. R² of a resample whose tokens hold one value (one token a case)
            raise ValueError(f"the score of {name} is undefined on {int((~torch.isfinite(draw)).sum())} of "
                             f"{len(draw)} resamples of the {cases} validation cases (their tokens hold too few "
                             "distinct values): probe an earlier --stage (more tokens a case) or more validation cases")
    se = (lambda d: float(d.std())) if cases > 1 else (lambda d: None)
    out = {name: {"se": se(draws[name]), "versus": {}} for name in stats}
    for a, b in itertools.permutations(stats, 2):
        out[a]["versus"][b] = {"difference": full[a] - full[b], "se": se(draws[a] - draws[b])}
    return out
