"""Patch-to-patch loss L_p2p (poster Eqs. 2–3): token assignment vs. exact correspondences.

Shapes: q (B, N, D) and k (B, M, D) are L2-normalised token embeddings of the source and the
augmented view, gt (B, N, M) bool is M_gt. B may be samples (whole-3-D matching) or
samples × depth slices (per-slice matching, see :mod:`s2dc.losses.matching`).

Where the poster and the release differ (both are available):
* form ``"positive"`` (poster Eq. 3): mean of −log M̂ over positive pairs, computed in log space;
* form ``"positive_negative"`` (release): M̂ clamped to [1e-6, 1 − 1e-6], mean of −log M̂ over
  positives plus mean of −log(1 − M̂) over non-positives.
Means are taken per sample and averaged over the samples that have at least one such pair.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .fp32 import in_fp32
from .options import ASSIGNMENTS, P2P_FORMS

CLAMP = 1e-6


def dual_softmax_log(scores: torch.Tensor) -> torch.Tensor:
    """log M̂ for Eq. 2: log softmax over rows + log softmax over columns. (B, N, M) -> (B, N, M)."""
    return F.log_softmax(scores, dim=2) + F.log_softmax(scores, dim=1)


def sinkhorn_log(scores: torch.Tensor, bin_score: float, iters: int) -> torch.Tensor:
    """Sinkhorn with a dustbin row and column of score ``bin_score``, returned in log space.

    Returns the log transport plan (B, N + 1, M + 1) whose real rows and real columns each carry
    mass 1, the dustbin row mass M and the dustbin column mass N (the release's log-domain
    iteration, u then v, multiplied back by N + M). Always computed in fp32.

    The iterations run on the scaling vectors with ``K = exp(Z − rowmax Z)`` — two batched
    mat-vecs per iteration instead of two full log-sum-exps — which gives the same plan (row
    rescaling of K is absorbed by u). When the score range is too wide for ``exp`` in fp32
    (> ``_EXP_RANGE``), the log-domain iteration is used instead.
    """
    with torch.autocast(device_type=scores.device.type, enabled=False):
        scores = scores.float()
        b, n, m = scores.shape
        alpha = scores.new_full((), bin_score)
        z = torch.cat(
            [torch.cat([scores, alpha.expand(b, n, 1)], 2), torch.cat([alpha.expand(b, 1, m), alpha.expand(b, 1, 1)], 2)], 1
        )
        mu = torch.cat([scores.new_ones(n), scores.new_full((1,), float(m))]).expand(b, -1)
        nu = torch.cat([scores.new_ones(m), scores.new_full((1,), float(n))]).expand(b, -1)
        if float(z.detach().amax() - z.detach().amin()) > _EXP_RANGE:
            return _sinkhorn_log_domain(z, mu.log(), nu.log(), iters)
        z = z - z.detach().amax(dim=2, keepdim=True)
        kernel = z.exp()
        v = torch.ones_like(nu)
        for _ in range(iters):
            u = mu / torch.bmm(kernel, v.unsqueeze(2)).squeeze(2)
            v = nu / torch.bmm(u.unsqueeze(1), kernel).squeeze(1)
        return z + u.log().unsqueeze(2) + v.log().unsqueeze(1)


_EXP_RANGE = 50.0


def _sinkhorn_log_domain(z: torch.Tensor, log_mu: torch.Tensor, log_nu: torch.Tensor, iters: int) -> torch.Tensor:
    """The same iteration in log space, for score ranges beyond fp32 ``exp``."""
    u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(z + v.unsqueeze(1), dim=2)
        v = log_nu - torch.logsumexp(z + u.unsqueeze(2), dim=1)
    return z + u.unsqueeze(2) + v.unsqueeze(1)


def assignment_log(scores: torch.Tensor, assignment: str, bin_score: float = 1.0, iters: int = 100) -> torch.Tensor:
    """log M̂ (B, N, M) from matching scores M_t (B, N, M)."""
    if assignment == "dual_softmax":
        return dual_softmax_log(scores)
    if assignment == "sinkhorn":
        return sinkhorn_log(scores, bin_score, iters)[:, :-1, :-1]
    raise ValueError(f"loss.assignment must be one of {ASSIGNMENTS}, got {assignment!r}")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of ``values`` over ``mask`` (B, ...), averaged over samples with a non-empty mask."""
    mask = mask.flatten(1).to(values.dtype)
    count = mask.sum(1)
    per_sample = (values.flatten(1) * mask).sum(1) / count.clamp_min(1)
    has = count > 0
    return (per_sample * has).sum() / has.sum().clamp_min(1)


def pair_losses(log_assign: torch.Tensor, gt: torch.Tensor, form: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-pair terms: −log M̂ (B, N, M) and, for the release form, −log(1 − M̂) (else None)."""
    if form == "positive":
        return -log_assign, None
    if form == "positive_negative":
        assign = log_assign.exp().clamp(CLAMP, 1 - CLAMP)
        return -torch.log(assign), -torch.log1p(-assign)
    raise ValueError(f"loss.p2p_form must be one of {P2P_FORMS}, got {form!r}")


@in_fp32
def p2p_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    gt: torch.Tensor,
    assignment: str = "dual_softmax",
    form: str = "positive_negative",
    temperature: float = 1.0,
    bin_score: float = 1.0,
    iters: int = 100,
) -> torch.Tensor:
    """L_p2p: scalar. ``temperature`` τ scales M_t = q·kᵀ / τ (the release uses τ = 1)."""
    scores = torch.einsum("bnd,bmd->bnm", q, k) / temperature
    return p2p_from_assignment(assignment_log(scores, assignment, bin_score, iters), gt, form)


@in_fp32
def p2p_from_assignment(log_assign: torch.Tensor, gt: torch.Tensor, form: str) -> torch.Tensor:
    """L_p2p from a precomputed log M̂ (B, N, M) (so that L_p2s can reuse the same assignment)."""
    positive, negative = pair_losses(log_assign, gt, form)
    loss = masked_mean(positive, gt)
    if negative is not None:
        loss = loss + masked_mean(negative, ~gt)
    return loss
