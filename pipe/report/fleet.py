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
    ``current`` is back on a release although its switch back failed there (``failed_back``: instance -> how, exit
    86: ACTIVATE_COMMANDS failed there too, or a process still runs another release) is not said to run it: ``i-1:
    current points back at 000007-abc (the release live before), but its switch back Failed (exit 86)`` (the note
    of ``notes`` first: ``the pipeline was stopped during its rollback``). That release is the one live before, or
    with none in the ledger the one ``current`` pointed to as its deploy began."""
    groups: dict[tuple[str, str, bool], list[str]] = {}
    for instance_id, release in fleet.items():
        back = instance_id in (failed_back or {}) and _went_back_to(release, live_before, new)
        if back:  # where it went back to, but going back failed there
            note = notes.get(instance_id) or (failed_back or {})[instance_id]
        else:  # back where it was: nothing to explain
            note = notes.get(instance_id, "") if release != live_before else ""
        groups.setdefault((release, note, back), []).append(instance_id)

    def rank(key: tuple[str, str, bool]) -> tuple[bool, bool, bool, str, bool, str]:
        release, note, back = key
        return (release != live_before, release != new, release == UNKNOWN_RELEASE, release, back, note)

    ordered = sorted(groups.items(), key=lambda group: rank(group[0]))
    parts = [_group(ids, release, note, back, live_before, new) for (release, note, back), ids in ordered]
    return f"Now {'; '.join(parts)}." if parts else ""


def _went_back_to(release: str, live_before: str, new: str) -> bool:
    """Whether ``current`` on a release says an instance went back to it: one that is neither unknown, nor none,
    nor the new release (unless that is the release live before, deployed again)."""
    return release not in (UNKNOWN_RELEASE, NO_RELEASE) and (release != new or release == live_before)


def _group(ids: list[str], release: str, note: str, back: bool, live_before: str, new: str) -> str:
    names = named(ids)
    verb = "run" if len(ids) > 1 else "runs"
    if release == UNKNOWN_RELEASE:
        return f"{names}: release unknown (where `current` points could not be read{': ' + note if note else ''})"
    what = [note] if note and not back else []
    if release == NO_RELEASE:
        return f"{names} {verb} no release" + (f" ({note})" if note else "")
    if release == live_before == new:
        what.insert(0, "the release live before, deployed again")
    elif release == live_before:
        what.insert(0, "the release live before")
    elif release == new:
        what.insert(0, "the new release")
    described = f" ({': '.join(what)})" if what else ""
    if back:
        return f"{names}: current points back at {release}{described}, but {note}"
    return f"{names} {verb} {release}{described}"
