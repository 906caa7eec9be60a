"""How a message names several things (used by every stage, so it sits below all of them)."""

from __future__ import annotations


def listed(items: list[str], most: int = 5) -> str:
    """The first ``most`` of ``items`` joined by commas, then how many more: ``'a', 'b' and 3 more``."""
    return ", ".join(items[:most]) + (f" and {len(items) - most} more" if len(items) > most else "")
