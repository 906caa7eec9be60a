"""The optimisers of s2dc: torch's AdamW (pretraining, fine-tuning) and L-BFGS (the linear probe) without their
``torch.compile`` guards.

torch wraps ``Optimizer.add_param_group`` (so ``__init__``), ``zero_grad``, ``state_dict``, ``load_state_dict`` and
AdamW's ``step`` in guards for ``torch.compile`` that import ``torch._dynamo`` on their first call: about 1.9 s of
every training or probing process's start-up on the project's 2-core machine (``bench/bench_startup.py``), for
nothing, since s2dc never compiles. The classes here call the same methods without the guards: the same arithmetic
bit for bit (tests/test_optim.py), and ``torch._dynamo`` is never imported.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class _WithoutCompileGuards:
    """Mixin for a ``torch.optim.Optimizer`` subclass: the base methods, each one's guard (a functools.wraps
    wrapper) replaced by the method it wraps (``__wrapped__``)."""

    add_param_group = Optimizer.add_param_group.__wrapped__
    zero_grad = Optimizer.zero_grad.__wrapped__
    state_dict = Optimizer.state_dict.__wrapped__
    load_state_dict = Optimizer.load_state_dict.__wrapped__


class EagerAdamW(_WithoutCompileGuards, torch.optim.AdamW):
    """``torch.optim.AdamW``: same arguments, state and results."""

    def step(self, closure=None):
        """One AdamW update, outside autograd (as the guard sets it: unless the optimiser is differentiable)."""
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return torch.optim.AdamW.step.__wrapped__(self, closure)


class EagerLBFGS(_WithoutCompileGuards, torch.optim.LBFGS):
    """``torch.optim.LBFGS``: same arguments, state and results (its ``step`` has no guard)."""
