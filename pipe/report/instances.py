"""Instances named in a message: the first LISTED, then how many more (the result file has them all);
what their invocations did, and what a release script's exit code says happened there."""

from __future__ import annotations

from collections.abc import Sequence

from pipe.model import Invocation
from pipe.release.remote import release_exit_meaning

LISTED = 20


def named(ids: Sequence[str], limit: int = LISTED) -> str:
    """``i-1, i-2 and 3 more``."""
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def release_meanings(failed: list[Invocation]) -> str:
    """`` Exit 90 on i-1: <what the release script says it means>.`` for each release exit code."""
    by_meaning: dict[tuple[int | None, str], list[str]] = {}
    for inv in failed:
        meaning = None if inv.skipped else release_exit_meaning(inv.response_code)
        if meaning is not None:
            by_meaning.setdefault((inv.response_code, meaning), []).append(inv.instance_id)
    return "".join(
        f" Exit {code} on {', '.join(ids[:LISTED])}{' ...' if len(ids) > LISTED else ''}: {meaning}."
        for (code, meaning), ids in by_meaning.items()
    )


def listed(invocations: list[Invocation], limit: int = LISTED) -> str:
    """``i-1: Failed (exit 3); i-2: ...``, at most ``limit`` of them."""
    shown = "; ".join(f"{inv.instance_id}: {inv.describe()}" for inv in invocations[:limit])
    if len(invocations) > limit:
        shown += f"; and {len(invocations) - limit} more (see the summary)"
    return shown
