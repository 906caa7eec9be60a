"""Losses L_p2p, L_p2s, L_g and the per-slice matching scope, checked against hand-written references.

Every reference below is computed straight from the equations (poster Eqs. 2–6, method.md §4 and the
module docstrings) with plain Python loops over samples / pairs, in float64, without any helper of
the package: the package is only the side under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from s2dc.losses.global_contrast import global_infonce, split_chosen_crop
from s2dc.losses.matching import per_slice
from s2dc.losses.p2p import p2p_loss, sinkhorn_log
from s2dc.losses.p2s import p2s_loss

DT = torch.float64
CLAMP = 1e-6  # the release clamp, restated here from method.md §4 (not imported)


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------


def make_inputs(b: int, n: int, m: int, d: int, seed: int, empty_sample: int | None = None, dtype=DT):
    """Random L2-normalised q (B, N, D), k (B, M, D) and a bool gt (B, N, M) with >= 1 positive per sample."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, n, d, generator=g, dtype=DT)
    k = torch.randn(b, m, d, generator=g, dtype=DT)
    q = q / q.norm(dim=-1, keepdim=True)
    k = k / k.norm(dim=-1, keepdim=True)
    gt = torch.rand(b, n, m, generator=g) < 0.2
    for s in range(b):
        gt[s, int(torch.randint(n, (1,), generator=g)), int(torch.randint(m, (1,), generator=g))] = True
    if empty_sample is not None:
        gt[empty_sample] = False
    return q.to(dtype), k.to(dtype), gt


# --------------------------------------------------------------------------------------------------
# references (loops; only elementwise torch / math / numpy)
# --------------------------------------------------------------------------------------------------


def ref_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot product of two 1-D vectors by a loop."""
    total = a[0] * b[0]
    for t in range(1, a.shape[0]):
        total = total + a[t] * b[t]
    return total


def ref_similarity(q: torch.Tensor, k: torch.Tensor) -> list[list[list[torch.Tensor]]]:
    """cos[b][i][j] = q_bi · k_bj by loops."""
    return [[[ref_dot(q[s, i], k[s, j]) for j in range(k.shape[1])] for i in range(q.shape[1])] for s in range(q.shape[0])]


def ref_dual_softmax(scores: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
    """Eq. 2 for one sample: M̂(i, j) = softmax(M_t(i, :))_j · softmax(M_t(:, j))_i."""
    n, m = len(scores), len(scores[0])
    e = [[torch.exp(scores[i][j]) for j in range(m)] for i in range(n)]
    row_sum = [sum(e[i][j] for j in range(m)) for i in range(n)]
    col_sum = [sum(e[i][j] for i in range(n)) for j in range(m)]
    return [[(e[i][j] / row_sum[i]) * (e[i][j] / col_sum[j]) for j in range(m)] for i in range(n)]


def ref_sinkhorn_np(scores: np.ndarray, alpha: float, iters: int) -> np.ndarray:
    """Plain (non-log) Sinkhorn in float64 with a dustbin row + column of score ``alpha``, returns the plan.

    Marginals: real rows mass 1, dustbin row mass M; real columns mass 1, dustbin column mass N.
    Same update order as the package (rows, then columns), starting from u = v = 1.
    """
    n, m = scores.shape
    c = np.full((n + 1, m + 1), alpha, dtype=np.float64)
    for i in range(n):
        for j in range(m):
            c[i, j] = scores[i, j]
    kern = np.exp(c)
    a = np.array([1.0] * n + [float(m)])
    b = np.array([1.0] * m + [float(n)])
    u, v = np.ones(n + 1), np.ones(m + 1)
    for _ in range(iters):
        for i in range(n + 1):
            u[i] = a[i] / sum(kern[i, j] * v[j] for j in range(m + 1))
        for j in range(m + 1):
            v[j] = b[j] / sum(kern[i, j] * u[i] for i in range(n + 1))
    plan = np.empty_like(kern)
    for i in range(n + 1):
        for j in range(m + 1):
            plan[i, j] = u[i] * kern[i, j] * v[j]
    return plan


def ref_assignment(q, k, assignment: str, temperature: float, alpha: float = 1.0, iters: int = 100):
    """M̂[b][i][j] (torch scalars for dual softmax, floats for Sinkhorn) from scores q·kᵀ/τ."""
    cos = ref_similarity(q, k)
    out = []
    for s in range(q.shape[0]):
        scores = [[c / temperature for c in row] for row in cos[s]]
        if assignment == "dual_softmax":
            out.append(ref_dual_softmax(scores))
        else:
            arr = np.array([[float(x) for x in row] for row in scores])
            plan = ref_sinkhorn_np(arr, alpha, iters)
            out.append([[torch.tensor(plan[i, j], dtype=DT) for j in range(arr.shape[1])] for i in range(arr.shape[0])])
    return out


def ref_pair_term(mhat: torch.Tensor, positive: bool, form: str) -> torch.Tensor:
    """ℓ(n, m): −log M̂ on positives; for the release form M̂ clamped, −log(1 − M̂) on non-positives, else 0."""
    if form == "positive":
        return -torch.log(mhat) if positive else torch.zeros((), dtype=DT)
    c = torch.clamp(mhat, CLAMP, 1 - CLAMP)
    return -torch.log(c) if positive else -torch.log(1 - c)


def ref_masked_average(per_sample_terms: list[list[torch.Tensor]]) -> torch.Tensor:
    """Mean over each sample's terms, averaged over the samples that have at least one term."""
    means = [sum(t) / len(t) for t in per_sample_terms if len(t) > 0]
    return sum(means) / len(means) if means else torch.zeros((), dtype=DT)


def ref_p2p(q, k, gt, assignment: str, form: str, temperature: float) -> torch.Tensor:
    """L_p2p by loops: per-sample means over positives (and non-positives), averaged over samples having any."""
    mhat = ref_assignment(q, k, assignment, temperature)
    pos_terms, neg_terms = [], []
    for s in range(q.shape[0]):
        pos, neg = [], []
        for i in range(q.shape[1]):
            for j in range(k.shape[1]):
                if gt[s, i, j]:
                    pos.append(ref_pair_term(mhat[s][i][j], True, form))
                else:
                    neg.append(ref_pair_term(mhat[s][i][j], False, form))
        pos_terms.append(pos)
        neg_terms.append(neg)
    loss = ref_masked_average(pos_terms)
    if form == "positive_negative":
        loss = loss + ref_masked_average(neg_terms)
    return loss


def ref_sharpness(values: list[torch.Tensor], spread: str) -> torch.Tensor:
    """Eq. 4 on one similarity row: (max − mean) / spread, spread = unbiased std or unbiased variance."""
    n = len(values)
    mean = sum(values) / n
    biggest = values[0]
    for v in values[1:]:
        biggest = torch.maximum(biggest, v)
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return (biggest - mean) / (torch.sqrt(var) if spread == "std" else var)


def ref_softmax(values: list[torch.Tensor]) -> list[torch.Tensor]:
    e = [torch.exp(v) for v in values]
    total = sum(e)
    return [x / total for x in e]


def ref_p2s_release(q, k, gt, spread: str, weights_from=None) -> torch.Tensor:
    """Release L_p2s by loops; ``weights_from`` = (q', k') to compute the sharpness weights from other (detached) tensors."""
    cos = ref_similarity(q, k)
    wcos = cos if weights_from is None else ref_similarity(*weights_from)
    b, n, m = gt.shape
    pos_per_sample, neg_terms = [], []
    for s in range(b):
        sw = [[(1 + wcos[s][i][j]) / 2 for j in range(m)] for i in range(n)]
        w_row = ref_softmax([ref_sharpness([sw[i][j] for j in range(m)], spread) for i in range(n)])
        w_col = ref_softmax([ref_sharpness([sw[i][j] for i in range(n)], spread) for j in range(m)])
        pos_row, pos_col, neg = torch.zeros((), dtype=DT), torch.zeros((), dtype=DT), []
        for i in range(n):
            for j in range(m):
                sij = torch.clamp((1 + cos[s][i][j]) / 2, CLAMP, 1 - CLAMP)
                if gt[s, i, j]:
                    pos_col = pos_col - torch.log(sij) * w_col[j]
                    pos_row = pos_row - torch.log(sij) * w_row[i]
                else:
                    neg.append(-torch.log(1 - sij))
        pos_per_sample.append(0.5 * (pos_col + pos_row))
        neg_terms.append(neg)
    return sum(pos_per_sample) / b + ref_masked_average(neg_terms)


def ref_p2s_poster(q, k, gt, spread: str, assignment: str, p2p_form: str, temperature: float, weights_from=None):
    """Poster L_p2s by loops: Σ_nm (w_n + w_m)/2 · ℓ(n, m) / N², w = softmax of row sharpness of cos; mean over samples."""
    cos = ref_similarity(q, k)
    wcos = cos if weights_from is None else ref_similarity(*weights_from)
    mhat = ref_assignment(q, k, assignment, temperature)
    b, n, _ = gt.shape
    total = torch.zeros((), dtype=DT)
    for s in range(b):
        w = ref_softmax([ref_sharpness(wcos[s][i], spread) for i in range(n)])
        acc = torch.zeros((), dtype=DT)
        for i in range(n):
            for j in range(n):
                acc = acc + (w[i] + w[j]) / 2 * ref_pair_term(mhat[s][i][j], bool(gt[s, i, j]), p2p_form)
        total = total + acc / (n * n)
    return total / b


def ref_infonce(query, positive, crop_negatives, queue, temperature: float, normalize: bool) -> torch.Tensor:
    """−log(exp(q·k+/T) / Σ exp(q·k/T)) over {positive, crop negatives, queue}, averaged over the batch."""

    def unit(v):
        return v / torch.sqrt(ref_dot(v, v)) if normalize else v

    losses = []
    for s in range(query.shape[0]):
        qv = unit(query[s])
        keys = [unit(positive[s])] + [unit(c) for c in crop_negatives[s]]
        if queue is not None:
            keys += [unit(c) for c in queue]
        logits = [ref_dot(qv, kv) / temperature for kv in keys]
        denom = sum(torch.exp(lg) for lg in logits)
        losses.append(-torch.log(torch.exp(logits[0]) / denom))
    return sum(losses) / len(losses)


def close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-7) -> None:
    torch.testing.assert_close(actual.to(DT), torch.as_tensor(expected, dtype=DT), rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------------------
# L_p2p
# --------------------------------------------------------------------------------------------------

ASSIGNMENT_TOL = {"dual_softmax": 1e-5, "sinkhorn": 2e-5}  # Sinkhorn always runs in fp32 (documented)


@pytest.mark.parametrize("assignment", ["dual_softmax", "sinkhorn"])
@pytest.mark.parametrize("form", ["positive", "positive_negative"])
@pytest.mark.parametrize("temperature", [1.0, 0.3])
@pytest.mark.parametrize("shape", [(2, 6, 6, 4), (3, 5, 8, 6)])
def test_p2p_matches_loop_reference(assignment, form, temperature, shape):
    """L_p2p equals the per-sample loop reference for each assignment, form, temperature and N = M / N ≠ M."""
    b, n, m, d = shape
    q, k, gt = make_inputs(b, n, m, d, seed=11 + n + m)
    got = p2p_loss(q, k, gt, assignment=assignment, form=form, temperature=temperature)
    close(got, ref_p2p(q, k, gt, assignment, form, temperature), rtol=ASSIGNMENT_TOL[assignment])


@pytest.mark.parametrize("assignment", ["dual_softmax", "sinkhorn"])
@pytest.mark.parametrize("form", ["positive", "positive_negative"])
def test_p2p_sample_without_positives_is_skipped(assignment, form):
    """A sample with no positive pair is left out of the positive mean (average over samples having positives)."""
    q, k, gt = make_inputs(3, 5, 7, 4, seed=3, empty_sample=1)
    got = p2p_loss(q, k, gt, assignment=assignment, form=form, temperature=0.5)
    close(got, ref_p2p(q, k, gt, assignment, form, 0.5), rtol=ASSIGNMENT_TOL[assignment])
    if form == "positive":  # the empty sample does not count as a 0 term: same value as without it
        keep = [0, 2]
        close(got, ref_p2p(q[keep], k[keep], gt[keep], assignment, form, 0.5), rtol=ASSIGNMENT_TOL[assignment])


def test_dual_softmax_positive_form_value_is_eq3():
    """Poster Eq. 3 with one sample: −(1/|M_gt|) Σ M_gt · log(softmax_row · softmax_col)."""
    q, k, gt = make_inputs(1, 4, 4, 3, seed=5)
    s = np.array([[float(ref_dot(q[0, i], k[0, j])) for j in range(4)] for i in range(4)])
    e = np.exp(s)
    mhat = (e / e.sum(1, keepdims=True)) * (e / e.sum(0, keepdims=True))
    g = gt[0].numpy()
    expected = -(g * np.log(mhat)).sum() / g.sum()
    close(p2p_loss(q, k, gt, assignment="dual_softmax", form="positive"), expected)


@pytest.mark.parametrize("shape", [(2, 5, 5), (2, 4, 9), (1, 10, 3)])
@pytest.mark.parametrize("alpha", [1.0, -0.5])
def test_sinkhorn_plan_matches_numpy_reference(shape, alpha):
    """sinkhorn_log (log plan, dustbins kept) equals the log of a plain numpy Sinkhorn after the same 100 iterations."""
    b, n, m = shape
    g = torch.Generator().manual_seed(n * m)
    scores = torch.randn(b, n, m, generator=g, dtype=DT) * 2
    got = sinkhorn_log(scores, alpha, 100)
    assert got.shape == (b, n + 1, m + 1)
    for s in range(b):
        plan = ref_sinkhorn_np(scores[s].numpy(), alpha, 100)
        np.testing.assert_allclose(got[s].double().numpy(), np.log(plan), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("shape", [(2, 6, 6), (2, 4, 11), (1, 12, 5)])
def test_sinkhorn_marginals(shape):
    """After 100 iterations real rows/cols carry mass 1, the dustbin row mass M and the dustbin column mass N."""
    b, n, m = shape
    g = torch.Generator().manual_seed(7 + n)
    scores = torch.randn(b, n, m, generator=g)
    plan = sinkhorn_log(scores, 1.0, 150).exp().double()
    rows, cols = plan.sum(2), plan.sum(1)
    ones = torch.ones((), dtype=DT)
    torch.testing.assert_close(rows[:, :n], ones.expand(b, n), rtol=0, atol=1e-4)
    torch.testing.assert_close(cols[:, :m], ones.expand(b, m), rtol=0, atol=1e-4)
    torch.testing.assert_close(rows[:, n], torch.full((b,), float(m), dtype=DT), rtol=0, atol=1e-4)
    torch.testing.assert_close(cols[:, m], torch.full((b,), float(n), dtype=DT), rtol=0, atol=1e-4)


def test_p2p_rejects_unknown_options():
    """Unknown assignment / form names raise ValueError."""
    q, k, gt = make_inputs(1, 3, 3, 2, seed=0)
    with pytest.raises(ValueError):
        p2p_loss(q, k, gt, assignment="hungarian")
    with pytest.raises(ValueError):
        p2p_loss(q, k, gt, form="both")


# --------------------------------------------------------------------------------------------------
# L_p2s
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spread", ["std", "variance"])
@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("shape", [(2, 6, 6, 4), (3, 5, 8, 5)])
def test_p2s_release_matches_loop_reference(spread, detach, shape):
    """Release L_p2s equals the loop reference (both sharpness directions, clamped s, negatives mean), detach or not."""
    b, n, m, d = shape
    q, k, gt = make_inputs(b, n, m, d, seed=21 + m)
    got = p2s_loss(q, k, gt, form="release", spread=spread, detach_weights=detach)
    close(got, ref_p2s_release(q, k, gt, spread))


@pytest.mark.parametrize("spread", ["std", "variance"])
def test_p2s_release_sample_without_positives(spread):
    """Release L_p2s with one positive-free sample: that sample adds 0 to the weighted positive sum (mean over B)."""
    q, k, gt = make_inputs(3, 6, 6, 4, seed=8, empty_sample=0)
    close(p2s_loss(q, k, gt, form="release", spread=spread), ref_p2s_release(q, k, gt, spread))


@pytest.mark.parametrize("spread", ["std", "variance"])
@pytest.mark.parametrize("assignment", ["dual_softmax", "sinkhorn"])
@pytest.mark.parametrize("p2p_form", ["positive", "positive_negative"])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_p2s_poster_matches_loop_reference(spread, assignment, p2p_form, temperature):
    """Poster L_p2s (Eqs. 4–6) equals the loop reference for each spread, assignment, p2p form and τ."""
    q, k, gt = make_inputs(2, 6, 6, 4, seed=31, empty_sample=1 if p2p_form == "positive" else None)
    got = p2s_loss(
        q, k, gt, form="poster", spread=spread, assignment=assignment, p2p_form=p2p_form, temperature=temperature
    )
    close(got, ref_p2s_poster(q, k, gt, spread, assignment, p2p_form, temperature), rtol=ASSIGNMENT_TOL[assignment])


def test_p2s_poster_reuses_given_assignment():
    """Poster L_p2s with ``log_assign`` uses that assignment instead of recomputing one."""
    q, k, gt = make_inputs(2, 5, 5, 4, seed=2)
    log_assign = torch.log(torch.rand(2, 5, 5, generator=torch.Generator().manual_seed(1), dtype=DT) * 0.9 + 0.05)
    got = p2s_loss(q, k, gt, form="poster", spread="std", log_assign=log_assign)
    b, n, _ = gt.shape
    cos = ref_similarity(q, k)
    total = 0.0
    for s in range(b):
        w = ref_softmax([ref_sharpness(cos[s][i], "std") for i in range(n)])
        acc = 0.0
        for i in range(n):
            for j in range(n):
                mh = torch.exp(log_assign[s, i, j])
                acc = acc + (w[i] + w[j]) / 2 * ref_pair_term(mh, bool(gt[s, i, j]), "positive_negative")
        total = total + acc / (n * n)
    close(got, total / b)


def test_p2s_poster_needs_square_gt_and_names_are_checked():
    """Poster form with N ≠ M, an unknown form or an unknown spread raise ValueError."""
    q, k, gt = make_inputs(1, 3, 4, 2, seed=0)
    with pytest.raises(ValueError):
        p2s_loss(q, k, gt, form="poster")
    with pytest.raises(ValueError):
        p2s_loss(q, k, gt, form="paper")
    with pytest.raises(ValueError):
        p2s_loss(q, k, gt, form="release", spread="mad")


@pytest.mark.parametrize("form", ["release", "poster"])
@pytest.mark.parametrize("spread", ["std", "variance"])
def test_p2s_detach_changes_only_the_gradient(form, spread):
    """detach_weights: same value, a different ∂L/∂q, equal to a reference whose weights come from detached q, k."""
    q, k, gt = make_inputs(2, 5, 5, 4, seed=41)
    grads, values = {}, {}
    for detach in (False, True):
        qq, kk = q.clone().requires_grad_(True), k.clone().requires_grad_(True)
        loss = p2s_loss(qq, kk, gt, form=form, spread=spread, detach_weights=detach)
        values[detach] = loss.detach()
        grads[detach] = torch.autograd.grad(loss, (qq, kk))
    close(values[True], values[False], rtol=1e-12, atol=0)
    assert not torch.allclose(grads[True][0], grads[False][0], rtol=1e-6, atol=1e-9)

    def reference(detach):
        qq, kk = q.clone().requires_grad_(True), k.clone().requires_grad_(True)
        wf = (qq.detach(), kk.detach()) if detach else None
        if form == "release":
            loss = ref_p2s_release(qq, kk, gt, spread, weights_from=wf)
        else:
            loss = ref_p2s_poster(qq, kk, gt, spread, "dual_softmax", "positive_negative", 1.0, weights_from=wf)
        return torch.autograd.grad(loss, (qq, kk))

    for detach in (False, True):
        ref = reference(detach)
        for got, exp in zip(grads[detach], ref):
            torch.testing.assert_close(got, exp, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("form", ["release", "poster"])
@pytest.mark.parametrize("spread", ["std", "variance"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_p2s_collapsed_input_is_finite(form, spread, dtype):
    """All q identical and all k identical (constant similarity rows): finite loss and finite gradients."""
    g = torch.Generator().manual_seed(0)
    qv, kv = torch.randn(4, generator=g, dtype=dtype), torch.randn(4, generator=g, dtype=dtype)
    q = (qv / qv.norm()).expand(2, 6, 4).clone().requires_grad_(True)
    k = (kv / kv.norm()).expand(2, 6, 4).clone().requires_grad_(True)
    _, _, gt = make_inputs(2, 6, 6, 4, seed=1)
    for detach in (False, True):
        loss = p2s_loss(q, k, gt, form=form, spread=spread, detach_weights=detach)
        gq, gk = torch.autograd.grad(loss, (q, k))
        assert torch.isfinite(loss), (form, spread, detach, loss)
        assert torch.isfinite(gq).all() and torch.isfinite(gk).all(), (form, spread, detach)


# --------------------------------------------------------------------------------------------------
# gradients of every loss
# --------------------------------------------------------------------------------------------------


def loss_cases():
    cases = []
    for assignment in ("dual_softmax", "sinkhorn"):
        for form in ("positive", "positive_negative"):
            cases.append((f"p2p-{assignment}-{form}", dict(kind="p2p", assignment=assignment, form=form)))
    for form in ("release", "poster"):
        for spread in ("std", "variance"):
            for detach in (False, True):
                cases.append(
                    (f"p2s-{form}-{spread}-{'detach' if detach else 'grad'}", dict(kind="p2s", form=form, spread=spread, detach_weights=detach))
                )
    return cases


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,case", loss_cases(), ids=[c[0] for c in loss_cases()])
def test_token_loss_gradients_finite(name, case, dtype):
    """Every form of L_p2p / L_p2s gives a finite loss and finite, non-zero gradients on random inputs."""
    case = dict(case)
    kind = case.pop("kind")
    q, k, gt = make_inputs(3, 8, 8, 6, seed=51, empty_sample=2, dtype=dtype)
    q.requires_grad_(True)
    k.requires_grad_(True)
    fn = p2p_loss if kind == "p2p" else p2s_loss
    loss = fn(q, k, gt, temperature=0.2, **case)
    gq, gk = torch.autograd.grad(loss, (q, k))
    assert torch.isfinite(loss)
    assert torch.isfinite(gq).all() and torch.isfinite(gk).all()
    assert gq.abs().sum() > 0 and gk.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("normalize", [True, False])
def test_global_infonce_gradients_finite(dtype, normalize):
    """L_g gives finite gradients for query, positive, crop negatives and queue."""
    g = torch.Generator().manual_seed(3)
    tensors = [torch.randn(*s, generator=g, dtype=dtype).requires_grad_(True) for s in ((3, 8), (3, 8), (3, 7, 8), (5, 8))]
    loss = global_infonce(*tensors, temperature=0.9, normalize=normalize)
    grads = torch.autograd.grad(loss, tensors)
    assert torch.isfinite(loss)
    assert all(torch.isfinite(gr).all() for gr in grads)


# --------------------------------------------------------------------------------------------------
# L_g
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("with_queue", ["none", "empty", "full"])
@pytest.mark.parametrize("temperature", [0.9, 0.2])
def test_global_infonce_matches_hand_written(normalize, with_queue, temperature):
    """global_infonce equals −log(exp(q·k+/T) / Σ exp) over positive, crop negatives and queue (none / empty / full)."""
    g = torch.Generator().manual_seed(17)
    query, positive = torch.randn(3, 6, generator=g, dtype=DT), torch.randn(3, 6, generator=g, dtype=DT)
    crops = torch.randn(3, 3, 6, generator=g, dtype=DT) * 0.7
    queue = {"none": None, "empty": torch.zeros(0, 6, dtype=DT), "full": torch.randn(5, 6, generator=g, dtype=DT)}[with_queue]
    if not normalize:  # keep the un-normalised logits in a sane range
        query, positive, crops = query * 0.5, positive * 0.5, crops * 0.5
        queue = None if queue is None else queue * 0.5
    got = global_infonce(query, positive, crops, queue, temperature=temperature, normalize=normalize)
    ref_queue = queue if queue is not None and queue.shape[0] else None
    close(got, ref_infonce(query, positive, crops, ref_queue, temperature, normalize))


def test_split_chosen_crop_keeps_order():
    """split_chosen_crop returns the chosen crop per ROI and the others in their original order."""
    b, p2, d = 4, 8, 3
    crops = torch.arange(b * p2 * d, dtype=DT).view(b, p2, d)
    chosen = torch.tensor([0, 7, 3, 5])
    got_chosen, got_others = split_chosen_crop(crops, chosen)
    assert got_chosen.shape == (b, d) and got_others.shape == (b, p2 - 1, d)
    for s in range(b):
        assert torch.equal(got_chosen[s], crops[s, int(chosen[s])])
        others = [crops[s, c] for c in range(p2) if c != int(chosen[s])]
        for idx, row in enumerate(others):
            assert torch.equal(got_others[s, idx], row)


# --------------------------------------------------------------------------------------------------
# per-slice matching scope
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("zxy", [(2, 2, 3), (3, 2, 2), (4, 1, 3)])
def test_per_slice_keeps_exactly_same_slice_pairs(zxy):
    """Tokens in (z, x, y) order: per_slice keeps gt(i, j) iff i, j share a depth slice, at in-slice indices."""
    z_n, x_n, y_n = zxy
    b, per = 2, x_n * y_n
    n, d = z_n * per, 3
    g = torch.Generator().manual_seed(z_n * 10 + y_n)
    q = torch.randn(b, n, d, generator=g)
    k = torch.randn(b, n, d, generator=g)
    gt = torch.rand(b, n, n, generator=g) < 0.3

    def token(z, x, y):
        return z * x_n * y_n + x * y_n + y

    qs, ks, gts = per_slice(q, k, gt, z_n)
    assert qs.shape == (b * z_n, per, d) and ks.shape == (b * z_n, per, d) and gts.shape == (b * z_n, per, per)
    for s in range(b):
        for z in range(z_n):
            group = s * z_n + z
            local = [(x, y) for x in range(x_n) for y in range(y_n)]
            for a, (x1, y1) in enumerate(local):
                assert torch.equal(qs[group, a], q[s, token(z, x1, y1)])
                assert torch.equal(ks[group, a], k[s, token(z, x1, y1)])
                for c, (x2, y2) in enumerate(local):
                    assert bool(gts[group, a, c]) == bool(gt[s, token(z, x1, y1), token(z, x2, y2)])
    # total kept = exactly the same-slice entries of gt
    same_slice = sum(
        bool(gt[s, i, j]) for s in range(b) for i in range(n) for j in range(n) if i // per == j // per
    )
    assert int(gts.sum()) == same_slice


def test_per_slice_drops_cross_slice_pairs():
    """A gt with only cross-slice positives becomes empty after per-slice regrouping; a same-slice one survives."""
    z_n, x_n, y_n = 3, 2, 2
    per, n = x_n * y_n, z_n * x_n * y_n
    gt = torch.zeros(1, n, n, dtype=torch.bool)
    gt[0, 0 * per + 1, 1 * per + 1] = True  # slice 0 -> slice 1
    gt[0, 2 * per + 3, 0 * per + 0] = True  # slice 2 -> slice 0
    q = torch.zeros(1, n, 2)
    _, _, gts = per_slice(q, q, gt, z_n)
    assert not gts.any()
    gt[0, 2 * per + 3, 2 * per + 1] = True  # same slice 2: local (3, 1)
    _, _, gts = per_slice(q, q, gt, z_n)
    assert gts.sum() == 1 and bool(gts[2, 3, 1])


def test_sinkhorn_wide_score_range_uses_log_domain_and_keeps_marginals():
    """Scores too wide for fp32 exp (range > 50) take the log-domain path; marginals still hold."""
    from s2dc.losses import p2p

    gen = torch.Generator().manual_seed(7)
    scores = 20.0 * torch.randn(2, 6, 9, generator=gen)
    assert float(scores.max() - scores.min()) > p2p._EXP_RANGE
    plan = p2p.sinkhorn_log(scores, 1.0, 500).exp()
    assert torch.isfinite(plan).all()
    torch.testing.assert_close(plan[:, :, :-1].sum(1), torch.ones(2, 9), atol=1e-4, rtol=0)  # last update: columns
    torch.testing.assert_close(plan[:, :-1, :].sum(2), torch.ones(2, 6), atol=1e-2, rtol=0)


def test_sinkhorn_scaling_and_log_domain_iterations_agree():
    """The mat-vec (scaling) iteration equals the log-domain iteration on moderate scores."""
    from s2dc.losses import p2p

    gen = torch.Generator().manual_seed(8)
    scores = 4.0 * torch.randn(3, 7, 5, generator=gen)
    fast = p2p.sinkhorn_log(scores, 0.5, 100)
    z = torch.cat([torch.cat([scores, torch.full((3, 7, 1), 0.5)], 2), torch.full((3, 1, 6), 0.5)], 1)
    log_mu = torch.log(torch.tensor([1.0] * 7 + [5.0])).expand(3, -1)
    log_nu = torch.log(torch.tensor([1.0] * 5 + [7.0])).expand(3, -1)
    torch.testing.assert_close(fast, p2p._sinkhorn_log_domain(z, log_mu, log_nu, 100), atol=1e-4, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# the combined objective (S2DCLoss): weights checked, terms returned, an ablation = a weight of 0
# --------------------------------------------------------------------------------------------------


def combined_inputs(seed: int = 3, b: int = 2, n: int = 6, d: int = 5, p2: int = 4, queue: int = 3):
    q, k, gt = make_inputs(b, n, n, d, seed)
    g = torch.Generator().manual_seed(seed + 1)
    keys = torch.randn(b * p2, d, generator=g, dtype=DT)
    return {"student_tokens": q, "teacher_tokens": k, "correspondence": gt, "token_slices": 1,
            "query": torch.randn(b, d, generator=g, dtype=DT), "keys": keys,
            "chosen": torch.tensor([1, 3][:b]), "negatives": torch.randn(queue, d, generator=g, dtype=DT)}


def ref_terms(x: dict, temperature: float, global_temperature: float) -> dict:
    """The three terms from the loop references (release L_p2s, dual-softmax, positive+negative L_p2p)."""
    b = x["query"].shape[0]
    crops = x["keys"].view(b, -1, x["keys"].shape[-1])
    positive = torch.stack([crops[s, int(x["chosen"][s])] for s in range(b)])
    others = torch.stack([torch.stack([crops[s, c] for c in range(crops.shape[1]) if c != int(x["chosen"][s])])
                          for s in range(b)])
    q, k, gt = x["student_tokens"], x["teacher_tokens"], x["correspondence"]
    return {"loss_global": ref_infonce(x["query"], positive, others, x["negatives"], global_temperature, True),
            "loss_p2p": ref_p2p(q, k, gt, "dual_softmax", "positive_negative", temperature),
            "loss_p2s": ref_p2s_release(q, k, gt, "std")}


@pytest.mark.parametrize("weights", [(0.5, 0.5, 0.5), (1.0, 0.0, 0.0), (0.3, 0.7, 0.0), (0.2, 0.0, 1.5), (0.0, 1.0, 1.0)])
def test_s2dc_loss_is_the_weighted_sum_and_a_zero_weight_drops_its_term(weights):
    from s2dc.losses.s2dc_loss import S2DCLoss

    w_g, w_p2p, w_p2s = weights
    x = combined_inputs()
    loss = S2DCLoss(weight_global=w_g, weight_p2p=w_p2p, weight_p2s=w_p2s, match_temperature=0.5, global_temperature=0.9)
    terms = loss(**x)
    ref = ref_terms(x, 0.5, 0.9)
    for name, w in zip(("loss_global", "loss_p2p", "loss_p2s"), weights):
        assert terms[name].dtype == torch.float32
        close(terms[name].double(), ref[name] if w else torch.zeros((), dtype=DT), rtol=1e-5, atol=1e-6)
    expected = w_g * ref["loss_global"] + w_p2p * ref["loss_p2p"] + w_p2s * ref["loss_p2s"]
    close(terms["loss"].double(), expected, rtol=1e-5, atol=1e-6)
    assert loss.needs_global == bool(w_g) and loss.needs_tokens == bool(w_p2p or w_p2s)


def test_s2dc_loss_does_not_compute_a_term_of_weight_zero():
    """An ablated term's inputs are not read: NaN tokens under zero token weights leave a finite loss."""
    from s2dc.losses.s2dc_loss import S2DCLoss

    x = combined_inputs()
    x["student_tokens"] = torch.full_like(x["student_tokens"], float("nan"))
    terms = S2DCLoss(weight_global=1.0, weight_p2p=0.0, weight_p2s=0.0)(**x)
    assert torch.isfinite(terms["loss"]) and float(terms["loss_p2p"]) == 0.0 == float(terms["loss_p2s"])
    global_only = S2DCLoss(weight_global=1.0, weight_p2p=0.0, weight_p2s=0.0)(None, None, None, 1, x["query"], x["keys"],
                                                                               x["chosen"], x["negatives"])
    assert float(global_only["loss"]) == float(terms["loss"])


@pytest.mark.parametrize("field, value, message", [
    ("weight_p2p", -0.5, "loss.weight_p2p must be a finite number >= 0"),
    ("weight_global", float("nan"), "loss.weight_global must be a finite number >= 0"),
    ("weight_p2s", float("inf"), "loss.weight_p2s must be a finite number >= 0"),
    ("assignment", "hungarian", "loss.assignment must be one of"),
    ("weight_of_everything", 1.0, "loss.weight_of_everything: not a loss option"),
])
def test_s2dc_loss_checks_its_options(field, value, message):
    from s2dc.losses.s2dc_loss import S2DCLoss

    with pytest.raises(ValueError, match=message):
        S2DCLoss(**{field: value})


def test_s2dc_loss_refuses_all_weights_zero():
    from s2dc.losses.options import LossConfig
    from s2dc.losses.s2dc_loss import S2DCLoss

    with pytest.raises(ValueError, match="loss weights are all zero"):
        S2DCLoss(LossConfig(weight_global=0.0), weight_p2p=0.0, weight_p2s=0.0)


def test_p2s_release_clamps_s_as_a_hand_computation_gives():
    """Two tokens a view, by hand: q = e1, e2; k = e1, -e1, so s = (1 + cos)/2 = [[1, 0], [0.5, 0.5]] and the
    non-positive s = 1 and the positive s = 0 are clamped to 1 - 1e-6 and 1e-6 (unclamped: an infinite loss; random
    unit vectors never reach cos = ±1, so the reference tests cannot see the clamp). Sharpness (std, unbiased): rows
    0.5 / sqrt(0.5) and 0 (a flat row), columns 0.25 / sqrt(0.125) each, so w_row = softmax(1/sqrt(2), 0) and w_col =
    (0.5, 0.5); L = ½(Σ_pos −log s · w_col + Σ_pos −log s · w_row) + mean over the non-positives of −log(1 − s)."""
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    k = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])
    gt = torch.tensor([[[False, True], [True, False]]])
    big, half = -math.log(1e-6), math.log(2.0)  # -log(1e-6) and -log(0.5)
    w_row0 = math.exp(1 / math.sqrt(2)) / (math.exp(1 / math.sqrt(2)) + 1)
    positive = 0.5 * (0.5 * big + 0.5 * half + w_row0 * big + (1 - w_row0) * half)
    clamped = float(np.float32(1 - 1e-6))  # the clamp's upper bound as float32 holds it (the loss runs in fp32)
    expected = positive + (-math.log1p(-clamped) + half) / 2  # the non-positives: s = 1 (clamped) and s = 0.5
    got = p2s_loss(q, k, gt, form="release", spread="std")
    assert math.isfinite(float(got)) and float(got) == pytest.approx(expected, rel=1e-4), (float(got), expected)
