"""matplotlib for every figure of the package: pyplot on the file-only Agg backend, and an atomic PNG writer."""

from __future__ import annotations

import io
from pathlib import Path

from .files import atomic_write_bytes


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported here: matplotlib is a pipeline extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, out: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG at ``out`` (atomically: nothing half-written is left) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write_bytes(Path(out), buffer.getvalue())
    return Path(out)
