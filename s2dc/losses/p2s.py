"""Patch-to-structure loss L_p2s (poster Eqs. 4–6): matching re-weighted by similarity sharpness.

The sharpness of an anchor token is ``sr = (max D − mean D) / spread(D)`` over its similarity row D
to all tokens of the other view (Eq. 4); anchors of small distinct structures have one sharp
peak (high sr), anchors of large homogeneous structures a flat row (low sr). ``softmax(sr)``
over anchors gives the weights. D is the cosine similarity (no matching temperature). The spread
is ``"std"`` (release) or ``"variance"`` (poster), both unbiased; it is clamped away from zero so
that a collapsed row gives weight, loss and gradient that are finite.

Forms:
* ``"poster"``: l_nm = (w_n + w_m)/2 · ℓ(n, m), L = Σ l_nm / N², with ℓ(n, m) the per-pair term of
  L_p2p (−log M̂ on positives, plus −log(1 − M̂) on non-positives for the release p2p form) and
  w the softmax of the row (source-anchor) sharpness, indexed at n and at m as in Eq. 5 (N = M).
* ``"release"``: s = (1 + cos)/2; row weights w_r (anchor = source token) and column weights w_c
  (anchor = augmented token); per sample ½(Σ_pos −log s_ij·w_c[j] + Σ_pos −log s_ij·w_r[i]) plus
  the mean of −log(1 − s_ij) over non-positives, s clamped to [1e-6, 1 − 1e-6] for the logs only.
  The weighted positive sums are averaged over all samples (a sample without positives adds 0, as in
  the release); the negative mean over the samples that have negatives.
"""

from __future__ import annotations

import torch

from .fp32 import in_fp32
from .options import P2S_FORMS, SPREADS
from .p2p import CLAMP, assignment_log, masked_mean, pair_losses

EPS = 1e-6


def sharpness(sim: torch.Tensor, dim: int, spread: str = "std") -> torch.Tensor:
    """Eq. 4 along ``dim`` of ``sim`` (B, N, M): (max − mean) / spread, zero-spread guarded."""
    if spread not in SPREADS:
        raise ValueError(f"loss.p2s_spread must be one of {SPREADS}, got {spread!r}")
    var = sim.var(dim=dim, unbiased=True)
    denom = var.clamp_min(EPS**2).sqrt() if spread == "std" else var.clamp_min(EPS)
    return (sim.amax(dim=dim) - sim.mean(dim=dim)) / denom


@in_fp32
def p2s_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    gt: torch.Tensor,
    form: str = "release",
    spread: str = "std",
    detach_weights: bool = False,
    assignment: str = "dual_softmax",
    p2p_form: str = "positive_negative",
    temperature: float = 1.0,
    bin_score: float = 1.0,
    iters: int = 100,
    log_assign: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_p2s: scalar. q (B, N, D), k (B, M, D) L2-normalised; gt (B, N, M) bool.

    The assignment arguments are used by the poster form only (its ℓ(n, m) is the L_p2p pair term);
    pass ``log_assign`` (B, N, M) to reuse the assignment already computed for L_p2p.
    """
    cos = torch.einsum("bnd,bmd->bnm", q, k)
    if form == "release":
        s = (1 + cos) / 2
        w_row = torch.softmax(sharpness(s, dim=2, spread=spread), dim=1)  # (B, N) anchors = source tokens
        w_col = torch.softmax(sharpness(s, dim=1, spread=spread), dim=1)  # (B, M) anchors = augmented tokens
        if detach_weights:
            w_row, w_col = w_row.detach(), w_col.detach()
        s = s.clamp(CLAMP, 1 - CLAMP)
        pos = -torch.log(s) * gt
        positive = 0.5 * ((pos * w_col.unsqueeze(1)).sum((1, 2)) + (pos * w_row.unsqueeze(2)).sum((1, 2)))
        return positive.mean() + masked_mean(-torch.log1p(-s), ~gt)
    if form == "poster":
        n, m = gt.shape[1:]
        if n != m:
            raise ValueError(f"the poster form of L_p2s needs as many source as augmented tokens, got {n} and {m}")
        w = torch.softmax(sharpness(cos, dim=2, spread=spread), dim=1)  # (B, N)
        if detach_weights:
            w = w.detach()
        if log_assign is None:
            log_assign = assignment_log(cos / temperature, assignment, bin_score, iters)
        positive, negative = pair_losses(log_assign, gt, p2p_form)
        per_pair = positive * gt if negative is None else torch.where(gt, positive, negative)
        weights = (w.unsqueeze(2) + w.unsqueeze(1)) / 2
        return ((weights * per_pair).sum((1, 2)) / (n * n)).mean()
    raise ValueError(f"loss.p2s_form must be one of {P2S_FORMS}, got {form!r}")
