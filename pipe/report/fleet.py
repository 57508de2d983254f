"""Which instances run which release, in words: the sentence a release-mode verdict ends with."""

from __future__ import annotations

from collections.abc import Mapping

from pipe.model import NO_RELEASE, UNKNOWN_RELEASE
from pipe.report.instances import named


def fleet_sentence(
    fleet: Mapping[str, str],
    live_before: str,
    new: str,
    notes: Mapping[str, str],
    failed_back: Mapping[str, str] | None = None,
) -> str:
    """``Now i-1, i-2 run 000007-abc (the release live before); i-3 runs 000008-def (the new release:
    rollback failed).`` from ``fleet`` (instance -> release, as last read from each instance) and
    ``notes`` (instance -> why it is not on the release live before); "" for an empty fleet. The release live before
    comes first, then the new one, then any other, then the instances that could not be read. An instance whose
    ``current`` is back on the release live before although its switch back failed (``failed_back``: instance ->
    how, exit 86: ACTIVATE_COMMANDS failed there too, or a process still runs another release) is not said to run
    it: ``i-1: current points back at 000007-abc (the release live before), but its switch back Failed (exit 86)``."""
    groups: dict[tuple[str, str], list[str]] = {}
    for instance_id, release in fleet.items():
        # back where it was: nothing to explain, unless going back failed
        note = (failed_back or {}).get(instance_id, "") if release == live_before else notes.get(instance_id, "")
        groups.setdefault((release, note), []).append(instance_id)

    def rank(key: tuple[str, str]) -> tuple[bool, bool, bool, str, str]:
        release, note = key
        return (release != live_before, release != new, release == UNKNOWN_RELEASE, release, note)

    ordered = sorted(groups.items(), key=lambda group: rank(group[0]))
    parts = [_group(ids, release, note, live_before, new) for (release, note), ids in ordered]
    return f"Now {'; '.join(parts)}." if parts else ""


def _group(ids: list[str], release: str, note: str, live_before: str, new: str) -> str:
    names = named(ids)
    verb = "run" if len(ids) > 1 else "runs"
    if release == UNKNOWN_RELEASE:
        return f"{names}: release unknown (where `current` points could not be read{': ' + note if note else ''})"
    if release == live_before != new and note:
        return f"{names}: current points back at {release} (the release live before), but {note}"
    what = [note] if note else []
    if release == NO_RELEASE:
        return f"{names} {verb} no release" + (f" ({note})" if note else "")
    if release == live_before == new:
        what.insert(0, "the release live before, deployed again")
    elif release == live_before:
        what.insert(0, "the release live before")
    elif release == new:
        what.insert(0, "the new release")
    return f"{names} {verb} {release}" + (f" ({': '.join(what)})" if what else "")
