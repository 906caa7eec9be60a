"""Non-finite values never reach a checkpoint: checks of a step's loss and gradients, and of saved weights."""

from __future__ import annotations

import torch
import torch.distributed as dist


class NonFiniteError(FloatingPointError):
    """A training step produced NaN/Inf; the update was not applied (the command exits with 1)."""


def gradient_norm(parameters, clip: float) -> torch.Tensor:
    """Global L2 norm of the parameters' gradients, before clipping; with ``clip > 0`` the gradients are then
    scaled to a norm of at most ``clip`` (``torch.nn.utils.clip_grad_norm_``)."""
    parameters = [p for p in parameters if p.grad is not None]
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(parameters, clip)
    return torch.nn.utils.get_total_norm([p.grad for p in parameters])


def step_is_finite(loss: torch.Tensor, grad_norm: torch.Tensor) -> bool:
    """Whether the loss and the global gradient norm are finite on every rank (one all-reduce under DDP,
    so that all ranks stop together)."""
    ok = (torch.isfinite(loss.detach()) & torch.isfinite(grad_norm.detach())).to(torch.int32)
    if dist.is_initialized():
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok)


def describe_step(step: int, values: dict[str, float], grad_norm: float, hint: str) -> str:
    """Message of a :class:`NonFiniteError`: which step, which terms, what to try."""
    terms = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
    return (f"non-finite values at step {step} ({terms}, gradient norm {grad_norm:.4g}); the update was not "
            f"applied and nothing from this step was saved. {hint}")


def non_finite_tensors(state: dict) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold NaN or Inf."""
    return [k for k, v in state.items()
            if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def require_finite(state: dict, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` and the first bad tensors when ``state`` holds NaN or Inf."""
    bad = non_finite_tensors(state)
    if bad:
        raise ValueError(f"{what} are not finite: {len(bad)} tensors hold NaN or Inf (e.g. {bad[:3]}); "
                         "the run that made them diverged; use an earlier checkpoint")
