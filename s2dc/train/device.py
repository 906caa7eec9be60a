"""The one place that turns a ``device`` option into a ``torch.device``."""

from __future__ import annotations

import torch


def pick_device(device: str, index: int = 0, key: str = "run.device") -> torch.device:
    """``"auto"`` (CUDA if available, else CPU), ``"cpu"`` or ``"cuda"`` (GPU ``index``, e.g. LOCAL_RANK).

    Raises ``ValueError`` naming ``key`` for an unknown value or for ``"cuda"`` on a machine without CUDA.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"{key} must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{key}='cuda' but PyTorch sees no CUDA device here (torch {torch.__version__}); "
                         "use 'auto' or 'cpu', or install a CUDA build of torch (README, set-up)")
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", index)
    return torch.device("cpu")
