"""matplotlib for every figure of the package: pyplot on the file-only Agg backend, and an atomic PNG writer that
marks its PNGs and never replaces a file it did not write."""

from __future__ import annotations

import io
from pathlib import Path

from .files import atomic_write_bytes
from .recorded import replace_all

#: The PNG text chunk (keyword, value) that marks a figure as drawn by s2dc.
MARK = ("Software", "s2dc")


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported here: matplotlib is a pipeline extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def is_s2dc_png(path: str | Path) -> bool:
    """Whether ``path`` is a PNG that :func:`save_png` wrote (it carries :data:`MARK`)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.text.get(MARK[0]) == MARK[1]
    except (OSError, ValueError, SyntaxError):  # not an image, a broken one, a folder
        return False


def check_png_out(out: str | Path) -> None:
    """Raise ValueError, naming the file, if ``out`` exists and is not a figure s2dc drew (a user's picture, notes,
    a folder): the figures of a command go to fixed names in a folder the user chooses."""
    out = Path(out)
    if (out.exists() or out.is_symlink()) and not is_s2dc_png(out):
        raise ValueError(f"'{out}' exists and is not a figure s2dc drew; refusing to overwrite it (move it, or give "
                         "another folder; a figure of an s2dc older than 2026-11-30 carries no mark: delete it)")


def png_bytes(fig, dpi: int = 110) -> bytes:
    """``fig`` as a marked PNG (see :func:`check_png_out`); closes it."""
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={MARK[0]: MARK[1]})
    finally:
        pyplot().close(fig)
    return buffer.getvalue()


def save_png(fig, out: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a marked PNG at ``out`` (:func:`check_png_out` first; atomically: nothing half-written is
    left) and close it."""
    try:
        check_png_out(out)
    except ValueError:
        pyplot().close(fig)
        raise
    atomic_write_bytes(Path(out), png_bytes(fig, dpi))
    return Path(out)


def write_pngs(folder: str | Path, pngs: dict[str, bytes | None]) -> list[Path]:
    """Write the marked PNGs ``pngs`` (``{path under folder: png_bytes(...)}``; None: remove an earlier figure of
    that name) into ``folder`` as one (:func:`s2dc.recorded.replace_all`: stopped on the way, the previous figures
    stay, every one), each name checked first (:func:`check_png_out`). Returns the paths written."""
    for name in pngs:
        check_png_out(Path(folder) / name)
    return replace_all(Path(folder), pngs)
