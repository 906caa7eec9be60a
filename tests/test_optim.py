"""EagerAdamW and EagerLBFGS: torch's AdamW and L-BFGS bit for bit, without importing torch._dynamo."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from s2dc.train.optim import EagerAdamW, EagerLBFGS
from s2dc.train.schedule import warmup_cosine


def _train(optimizer_class, steps: int = 6) -> tuple[list[torch.Tensor], dict]:
    """A small network trained by ``optimizer_class`` with two parameter groups (as fine-tuning does), a warm-up
    schedule and gradient clipping; halfway, the optimiser is rebuilt from its state_dict (as a resume does)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.Linear(8, 2))
    x, y = torch.randn(16, 6), torch.randn(16, 2)

    def build():
        groups = [{"params": net[0].parameters(), "lr": 2e-3}, {"params": net[2].parameters(), "lr": 1e-2}]
        optimizer = optimizer_class(groups, weight_decay=0.05)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, 2, steps))

    optimizer, scheduler = build()
    for step in range(steps):
        if step == steps // 2:
            saved = (optimizer.state_dict(), scheduler.state_dict())
            optimizer, scheduler = build()
            optimizer.load_state_dict(saved[0])
            scheduler.load_state_dict(saved[1])
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
        optimizer.step()
        scheduler.step()
    return [p.detach().clone() for p in net.parameters()], optimizer.state_dict()


def test_eager_adamw_equals_torchs_adamw_bit_for_bit():
    eager, eager_state = _train(EagerAdamW)
    stock, stock_state = _train(torch.optim.AdamW)
    assert all(torch.equal(a, b) for a, b in zip(eager, stock, strict=True))
    assert eager_state["param_groups"] == stock_state["param_groups"]
    for key, state in stock_state["state"].items():
        assert state.keys() == eager_state["state"][key].keys()
        assert all(torch.equal(state[name], eager_state["state"][key][name]) for name in state)


def test_eager_lbfgs_equals_torchs_lbfgs_bit_for_bit():
    """A class-weighted softmax regression fitted by full-batch L-BFGS with a line search (as the probe does)."""
    torch.manual_seed(1)
    x, y = torch.randn(40, 5, dtype=torch.float64), torch.randint(0, 3, (40,))
    fitted = []
    for optimizer_class in (EagerLBFGS, torch.optim.LBFGS):
        layer = torch.nn.Linear(5, 3, dtype=torch.float64)
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
        optimizer = optimizer_class(layer.parameters(), max_iter=30, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(layer(x), y) + 1e-3 * layer.weight.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        fitted.append((layer.weight.detach().clone(), optimizer.state_dict()["state"][0]["n_iter"]))
    assert torch.equal(fitted[0][0], fitted[1][0]) and fitted[0][1] == fitted[1][1] > 1
    assert fitted[0][0].abs().sum() > 0


def test_the_eager_optimisers_do_not_import_dynamo():
    """In a fresh interpreter: each is built, steps, saves and loads; torch._dynamo stays unimported (torch's own
    optimisers import it on their first call, which is the point of the classes)."""
    code = (
        "import sys, torch\n"
        "from s2dc.train.optim import EagerAdamW, EagerLBFGS\n"
        "p = torch.nn.Parameter(torch.ones(3))\n"
        "for opt in (EagerAdamW([p], lr=0.1), EagerLBFGS([p], max_iter=3)):\n"
        "    def closure():\n"
        "        opt.zero_grad(); loss = (p ** 2).sum(); loss.backward(); return loss\n"
        "    opt.step(closure); opt.load_state_dict(opt.state_dict())\n"
        "assert p.grad_fn is None and not torch.equal(p.detach(), torch.ones(3))\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False"]


def test_the_schedules_by_hand():
    """Warm-up over 2 of 6 steps, then cosine to zero: steps 0-1 at 1/2 and 2/2 of the peak (the first step already
    learns), then 0.5 (1 + cos(pi p)) at p = 0, 1/4, 2/4, 3/4 of the rest, and 0 from the end on; the constant schedule
    keeps the peak after the same warm-up. (The optimiser tests give both optimisers one schedule, so it cancels.)"""
    from s2dc.train.schedule import warmup_constant

    root = math.sqrt(2) / 2
    assert [warmup_cosine(s, 2, 6) for s in range(8)] == pytest.approx(
        [0.5, 1.0, 1.0, (1 + root) / 2, 0.5, (1 - root) / 2, 0.0, 0.0], abs=1e-12)
    assert [warmup_constant(s, 2, 6) for s in range(8)] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert [warmup_cosine(s, 0, 4) for s in range(4)] == pytest.approx([1.0, (1 + root) / 2, 0.5, (1 - root) / 2])
