"""The progress line of a fleet too large for a line per instance."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pipe.model import ACTIVE_STATUSES, Invocation

if TYPE_CHECKING:
    from pipe.apply.watch.tracker import CommandCounts


def progress_line(
    counts: Mapping[str, CommandCounts], invocations: Mapping[str, Invocation], instance_count: int, finished: bool
) -> str:
    """Per status once every command is read (``finished``); before that, from the commands' counts."""
    total = max(instance_count, sum(max(c.target, 0) for c in counts.values()))
    if not finished:
        done = sum(c.completed for c in counts.values())
        errors = sum(c.errors for c in counts.values())
        timed_out = sum(c.delivery_timed_out for c in counts.values())
        notes = [f"{errors} failed"] if errors else []
        notes += [f"{timed_out} delivery timed out"] if timed_out else []
        return (
            f"Progress: {done}/{total} finished"
            + (f" ({', '.join(notes)})" if notes else "")
            + f", {total - done} running or pending"
        )
    statuses = Counter(inv.status for inv in invocations.values())
    done = sum(count for status, count in statuses.items() if status not in ACTIVE_STATUSES)
    final = ", ".join(
        f"{count} {status}" for status, count in sorted(statuses.items()) if status not in ACTIVE_STATUSES
    )
    return (
        f"Progress: {done}/{len(invocations)} finished"
        + (f" ({final})" if final else "")
        + f", {statuses['InProgress']} running, {statuses['Pending'] + statuses['Delayed']} pending"
    )
