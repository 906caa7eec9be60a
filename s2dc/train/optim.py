"""The optimiser of pretraining and fine-tuning: torch's AdamW without its ``torch.compile`` guards.

torch wraps ``Optimizer.__init__`` (through ``add_param_group``), ``step``, ``zero_grad``, ``state_dict`` and
``load_state_dict`` in guards for ``torch.compile`` that import ``torch._dynamo`` on their first call: about 1.9 s
of every training process's start-up on the project's 2-core machine (``bench/bench_startup.py``), for nothing,
since s2dc never compiles. :class:`EagerAdamW` calls the same methods without the guards: the same arithmetic bit
for bit (tests/test_optim.py), and ``torch._dynamo`` is never imported.
"""

from __future__ import annotations

import torch

_AdamW = torch.optim.AdamW


class EagerAdamW(_AdamW):
    """``torch.optim.AdamW`` (same arguments, state and results) whose methods skip the compile guards."""

    # Each guard is a functools.wraps wrapper; __wrapped__ is the method it guards.
    add_param_group = _AdamW.add_param_group.__wrapped__
    zero_grad = _AdamW.zero_grad.__wrapped__
    state_dict = _AdamW.state_dict.__wrapped__
    load_state_dict = _AdamW.load_state_dict.__wrapped__

    def step(self, closure=None):
        """One AdamW update, outside autograd (as the guard sets it: unless the optimiser is differentiable)."""
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return _AdamW.step.__wrapped__(self, closure)
