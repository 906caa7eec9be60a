"""KeyQueue (FIFO semantics, identical state under real gloo DDP) and the EMA teacher / momentum schedule."""

from __future__ import annotations

import math
import os
import random
from collections import deque
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from s2dc.models.queue import KeyQueue

# s2dc.models.s2dc_net (EMATeacher, momentum_at) pulls in MONAI; it is imported inside the EMA tests only.

DIM = 3


def rows(t: torch.Tensor) -> list[tuple[float, ...]]:
    """Rows of a (n, dim) tensor as tuples (for multiset / order comparisons)."""
    return [tuple(float(x) for x in r) for r in t]


def fifo_order(queue: KeyQueue) -> list[tuple[float, ...]]:
    """Valid keys oldest → newest: slots [0, count) before the queue is full, else starting at ptr."""
    count, ptr = int(queue.count), int(queue.ptr)
    if count < queue.size:
        return rows(queue.keys[:count])
    return [tuple(float(x) for x in queue.keys[(ptr + i) % queue.size]) for i in range(count)]


def make_keys(start: int, n: int) -> torch.Tensor:
    """n distinct keys: row r holds value start + r in column 0 and simple functions of it elsewhere."""
    v = torch.arange(start, start + n, dtype=torch.float32)
    return torch.stack([v, -v, v * 0.5], dim=1)


# --------------------------------------------------------------------------------------------------
# single process
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 5, 7, 12])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_queue_matches_deque_reference(size, seed):
    """Random pushes (sizes not dividing K, one larger than K): negatives() == deque(maxlen=K), in FIFO order."""
    rng = random.Random(seed * 100 + size)
    queue = KeyQueue(size, DIM)
    ref: deque = deque(maxlen=size)
    pushes = [rng.randint(1, size + 3) for _ in range(12)] + [2 * size + 1, 1, size, 3]
    start = 0
    for n in pushes:
        keys = make_keys(start, n)
        start += n
        queue.push(keys, gather=False)
        ref.extend(rows(keys))
        assert int(queue.count) == len(ref)
        assert sorted(rows(queue.negatives())) == sorted(ref)
        assert fifo_order(queue) == list(ref)
        assert int(queue.ptr) == start % size


def test_queue_push_without_ddp_gathers_nothing():
    """Without an initialised process group, push(gather=True) enqueues just the local keys."""
    queue = KeyQueue(6, DIM)
    queue.push(make_keys(0, 4))
    assert rows(queue.negatives()) == rows(make_keys(0, 4))


def test_queue_state_lives_in_buffers_and_size_zero_is_inert():
    """keys / ptr / count are in the state dict and restore the FIFO; a size-0 queue stays empty."""
    queue = KeyQueue(5, DIM)
    queue.push(make_keys(0, 7), gather=False)
    state = queue.state_dict()
    assert set(state) == {"keys", "ptr", "count"}
    other = KeyQueue(5, DIM)
    other.load_state_dict(state)
    other.push(make_keys(7, 2), gather=False)
    queue.push(make_keys(7, 2), gather=False)
    assert fifo_order(other) == fifo_order(queue) == rows(make_keys(4, 5))
    empty = KeyQueue(0, DIM)
    empty.push(make_keys(0, 3), gather=False)
    assert empty.negatives().shape == (0, DIM)
    with pytest.raises(ValueError):
        KeyQueue(-1, DIM)


# --------------------------------------------------------------------------------------------------
# real DDP (gloo, CPU)
# --------------------------------------------------------------------------------------------------

QUEUE_SIZE, STEPS, BATCH = 7, 5, 2


def ddp_keys(rank: int, step: int, batch: int) -> torch.Tensor:
    """Rank-specific keys: value rank·1000 + step·10 + row (and simple functions of it)."""
    v = torch.tensor([rank * 1000 + step * 10 + r for r in range(batch)], dtype=torch.float32)
    return torch.stack([v, -v, v + 0.25], dim=1)


def _ddp_queue_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        queue = KeyQueue(QUEUE_SIZE, DIM)
        for step in range(STEPS):
            queue.push(ddp_keys(rank, step, BATCH))
        torch.save({k: v.clone() for k, v in queue.state_dict().items()}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
    # Success: the result is on disk. Skip the teardown of the forked test worker's interpreter; an exception
    # above still propagates normally and fails the test through torch.multiprocessing.
    os._exit(0)


@pytest.mark.parametrize("world", [1, 3, 4])
def test_queue_identical_across_ranks_under_ddp(world, tmp_path):
    """Under gloo DDP every rank ends with the same (keys, ptr, count), equal to a deque fed rank-major. Each
    step gathers world · BATCH keys into a queue of 7: 2 (one rank), 6 (a push that does not divide the queue),
    8 (a push larger than the queue)."""
    # Forked, not spawned: the ranks start with torch already imported (a spawned one re-imports it, ~2.5 s each).
    mp.start_processes(_ddp_queue_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world,
                       join=True, start_method="fork")
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for state in states[1:]:
        for name in ("keys", "ptr", "count"):
            assert torch.equal(state[name], states[0][name]), name

    ref: deque = deque(maxlen=QUEUE_SIZE)
    for step in range(STEPS):
        for rank in range(world):
            ref.extend(rows(ddp_keys(rank, step, BATCH)))
    queue = KeyQueue(QUEUE_SIZE, DIM)
    queue.load_state_dict(states[0])
    total = STEPS * world * BATCH
    assert int(queue.count) == min(total, QUEUE_SIZE)
    assert int(queue.ptr) == total % QUEUE_SIZE
    assert sorted(rows(queue.negatives())) == sorted(ref)
    assert fifo_order(queue) == list(ref)


# --------------------------------------------------------------------------------------------------
# EMA teacher
# --------------------------------------------------------------------------------------------------


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.norm = nn.BatchNorm1d(2)

    def forward(self, x):
        return self.norm(self.lin(x))


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9, 0.999, 1.0])
def test_ema_update_is_convex_combination(momentum):
    """EMATeacher.update(m) sets every parameter to m·θ_t + (1 − m)·θ_s and copies the buffers."""
    from s2dc.models.s2dc_net import EMATeacher

    torch.manual_seed(0)
    student = Tiny().double()
    teacher = EMATeacher(student)
    with torch.no_grad():  # make teacher and student differ
        for p in teacher.net.parameters():
            p.add_(torch.randn_like(p))
        student.norm.running_mean.add_(1.5)
        student.norm.num_batches_tracked.add_(4)
    before = {n: p.detach().clone() for n, p in teacher.net.named_parameters()}
    teacher.update(student, momentum)
    for name, s_param in student.named_parameters():
        t_old = before[name]
        t_new = dict(teacher.net.named_parameters())[name]
        for idx in range(t_old.numel()):
            expected = momentum * float(t_old.view(-1)[idx]) + (1 - momentum) * float(s_param.detach().view(-1)[idx])
            assert math.isclose(float(t_new.view(-1)[idx]), expected, rel_tol=1e-12, abs_tol=1e-12), (name, idx)
    for (name, t_buf), s_buf in zip(teacher.net.named_buffers(), student.buffers()):
        assert torch.equal(t_buf, s_buf), name


def test_ema_teacher_has_no_gradients_and_is_a_copy():
    """The teacher's parameters have requires_grad False, are distinct tensors, and its forward records no graph."""
    from s2dc.models.s2dc_net import EMATeacher

    student = nn.Linear(3, 2)
    teacher = EMATeacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    for t, s in zip(teacher.net.parameters(), student.parameters()):
        assert t.data_ptr() != s.data_ptr() and torch.equal(t, s)
    out = teacher(torch.randn(4, 3, requires_grad=True))
    assert not out.requires_grad
    with torch.no_grad():
        student.weight.add_(1.0)
    assert not torch.equal(teacher.net.weight, student.weight)


def test_momentum_constant():
    """Constant schedule returns the base momentum at every step."""
    from s2dc.models.s2dc_net import momentum_at

    for step in (0, 1, 500, 1000, 5000):
        assert momentum_at(step, 1000, 0.996, "constant") == 0.996


@pytest.mark.parametrize("base", [0.99, 0.996])
def test_momentum_cosine(base):
    """Cosine schedule: 1 − (1 − base)(cos(πt/T) + 1)/2 — base at 0, (1 + base)/2 at T/2, 1 at T (and after)."""
    from s2dc.models.s2dc_net import momentum_at

    total = 1000
    assert math.isclose(momentum_at(0, total, base, "cosine"), base, abs_tol=1e-15)
    assert math.isclose(momentum_at(total // 2, total, base, "cosine"), (1 + base) / 2, abs_tol=1e-15)
    assert math.isclose(momentum_at(total, total, base, "cosine"), 1.0, abs_tol=1e-15)
    assert math.isclose(momentum_at(total + 50, total, base, "cosine"), 1.0, abs_tol=1e-15)
    # by hand: t = 250 → cos(π/4) = √2/2, t = 750 → cos(3π/4) = −√2/2
    half_root2 = math.sqrt(2) / 2
    assert math.isclose(momentum_at(250, total, base, "cosine"), 1 - (1 - base) * (half_root2 + 1) / 2, abs_tol=1e-15)
    assert math.isclose(momentum_at(750, total, base, "cosine"), 1 - (1 - base) * (1 - half_root2) / 2, abs_tol=1e-15)
    values = [momentum_at(t, total, base, "cosine") for t in range(0, total + 1, 50)]
    assert all(a <= b for a, b in zip(values, values[1:]))


def test_momentum_unknown_schedule():
    """An unknown schedule name raises ValueError."""
    from s2dc.models.s2dc_net import momentum_at

    with pytest.raises(ValueError):
        momentum_at(0, 10, 0.99, "linear")
