"""Instances named in a message: the first LISTED, then how many more (the result file has them all)."""

from __future__ import annotations

from collections.abc import Sequence

LISTED = 20


def named(ids: Sequence[str], limit: int = LISTED) -> str:
    """``i-1, i-2 and 3 more``."""
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
