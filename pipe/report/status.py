"""ACTION: status in words and values: the ledger's live release and last releases, the release each
instance runs, and the drift between them, for the log and for the result file (``report/sinks.py``).

The drift rule: an instance drifts when ``APP_DIR/current`` points to another release than the one the
ledger names live (or to any release while the ledger names none), or when a process on it runs from
another release than the one its ``current`` points to (what serves is not what ``current`` says: e.g.
a process of a release that was switched back from). An instance that could not be asked, or whose
processes could not be read, is unknown: not drift, but no proof of its absence either, so it fails the
step too.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from pipe.config.settings import DeploySettings
from pipe.errors import sentence
from pipe.model import NO_RELEASE, UNKNOWN_RELEASE
from pipe.release.ledger_archive import Recorded
from pipe.release.remote import PM2_FIX, OtherProcess, OtherProcesses
from pipe.report.durations import format_seconds
from pipe.report.instances import named
from pipe.report.result_file import where_it_ran

HISTORY_SHOWN = 10  # the last releases the status prints and writes
SHORT_COMMIT = 7


class Verdict(StrEnum):
    """``SSM_DEPLOY_STATUS`` of ACTION: status (a public contract: a scheduled pipeline alarms on it)."""

    NO_DRIFT = "no drift"  # every instance runs the live release (or none runs any, and none is live)
    DRIFT = "drift"  # an instance runs another release than the live one
    UNKNOWN = "unknown"  # no drift seen, but an instance could not be asked
    FAILED = "failed"  # the ledger or the instances could not be read: see the message


def drift(fleet: Mapping[str, str], live: str | None) -> dict[str, str]:
    """The instances whose ``current`` points elsewhere than the live release, with what they run;
    instances that could not be asked (UNKNOWN_RELEASE) are not judged."""
    expected = live or NO_RELEASE
    return {instance: runs for instance, runs in fleet.items() if runs not in (expected, UNKNOWN_RELEASE)}


@dataclass
class FleetStatus:
    """What one status run found, filled in as it reads; the sinks get it however the run ended."""

    ledger: str = ""
    live: Recorded | None = None  # the newest version every targeted instance ran: the live release
    recent: tuple[Recorded, ...] = ()  # the last versions, newest first
    fleet: dict[str, str] = field(default_factory=dict)  # instance -> release id, NO_RELEASE or UNKNOWN_RELEASE
    why_unknown: dict[str, str] = field(default_factory=dict)  # instance -> why it could not be asked
    names: Mapping[str, str] = field(default_factory=dict)  # Name tags
    # instance -> the processes its read found running from another release than its current's; None
    # where that list is missing (cut output). Instances absent here were not asked about processes
    processes: dict[str, OtherProcesses | None] = field(default_factory=dict)
    app_dir: str = ""
    message: str = ""  # why the run failed (Verdict.FAILED), "" otherwise
    started: float = field(default_factory=time.monotonic)

    @property
    def live_release(self) -> str | None:
        return self.live.entry.release.id if self.live is not None else None

    @property
    def drifted(self) -> dict[str, str]:
        return drift(self.fleet, self.live_release)

    @property
    def serving_other(self) -> dict[str, OtherProcesses]:
        """The instances where a process runs from another release than the one ``current`` points to."""
        return {
            instance: listed
            for instance, listed in self.processes.items()
            if listed is not None and listed.count and self.fleet.get(instance, UNKNOWN_RELEASE) != UNKNOWN_RELEASE
        }

    @property
    def drifted_instances(self) -> list[str]:
        """Every instance that drifts, by ``current`` or by a process: in the fleet's order."""
        return [i for i in self.fleet if i in self.drifted or i in self.serving_other]

    @property
    def unknown(self) -> list[str]:
        return [instance for instance, runs in self.fleet.items() if runs == UNKNOWN_RELEASE]

    @property
    def processes_unread(self) -> dict[str, str]:
        """The instances whose ``current`` was read but not their processes, with why."""
        unread = {}
        for instance, listed in self.processes.items():
            if self.fleet.get(instance, UNKNOWN_RELEASE) == UNKNOWN_RELEASE:
                continue
            if listed is None:
                unread[instance] = "the read's list of processes is missing from its output"
            elif listed.not_read:
                unread[instance] = listed.not_read
        return unread

    @property
    def verdict(self) -> Verdict:
        if self.message:
            return Verdict.FAILED
        if self.drifted or self.serving_other:
            return Verdict.DRIFT
        unknown = self.unknown or self.processes_unread or not self.fleet
        return Verdict.UNKNOWN if unknown else Verdict.NO_DRIFT

    def label(self, instance: str) -> str:
        name = self.names.get(instance)
        return f"{instance} ({name})" if name else instance


# --- the log -----------------------------------------------------------------------------------------


def history_lines(ledger: str, live: Recorded | None, recent: Sequence[Recorded]) -> list[str]:
    """The live release, then one line per recent version: id, action, result, commit, build and its
    URL, who triggered it, when."""
    if not recent:
        return [f"Release ledger {ledger}: no release recorded yet"]
    head = f"Release ledger {ledger}: live release " + (
        f"{live.entry.release.id} (version {live.version})" if live is not None else "none (no deploy succeeded)"
    )
    lines = [head, f"Last {len(recent)} release(s), newest first:"]
    lines += [f"  {release_line(item)}" for item in recent]
    return lines


def release_line(item: Recorded) -> str:
    """``v7 000042-0123456 deploy succeeded commit 0123456 build #42 <url> by {uuid} at 2026-...``"""
    entry, run = item.entry, item.entry.run
    parts = [f"v{item.version}", entry.release.id, entry.action, entry.status]
    if entry.release.commit:
        parts.append(f"commit {entry.release.commit[:SHORT_COMMIT]}")
    parts.append(f"build #{run.build}" + (f" {run.build_url}" if run.build_url else ""))
    if run.triggered_by:
        parts.append(f"by {run.triggered_by}")
    parts.append(f"at {entry.time}")
    return " ".join(parts)


def fleet_lines(status: FleetStatus, app_dir: str) -> list[str]:
    """What each instance's ``current`` points to, instance by instance."""
    lines = [f"{app_dir}/current on {len(status.fleet)} instance(s):"]
    for instance, runs in status.fleet.items():
        if runs == UNKNOWN_RELEASE:
            shown = f"unknown ({status.why_unknown.get(instance, 'the read got no answer')})"
        else:
            shown = "no release" if runs == NO_RELEASE else runs
        lines.append(f"  {status.label(instance)}: {shown}")
    return lines


def problem_lines(status: FleetStatus) -> list[str]:
    """One line per drifted instance, one per process of another release than its ``current``'s (with
    the fix), then one per instance that could not be asked or whose processes could not be read."""
    said = status.live_release or "no release"
    lines = [
        f"Drift: {status.label(instance)} runs {_release_words(runs)}; the ledger says {said} is live"
        for instance, runs in status.drifted.items()
    ]
    for instance, listed in status.serving_other.items():
        lines += _process_lines(status, instance, listed)
    lines += [
        f"Unknown: {status.label(instance)} could not be asked "
        f"({status.why_unknown.get(instance, 'the read got no answer')})"
        for instance in status.unknown
    ]
    lines += [
        f"Unknown: the processes of {status.label(instance)} could not be read ({why})"
        for instance, why in status.processes_unread.items()
    ]
    return lines


def _process_lines(status: FleetStatus, instance: str, listed: OtherProcesses) -> list[str]:
    current = _release_words(status.fleet[instance])
    lines = [
        f"Drift: on {status.label(instance)} {process_words(process)}, while current points to {current}; "
        f"fix: stop that process ({fix_words(status.app_dir)})"
        for process in listed.shown
    ]
    if listed.count > len(listed.shown):
        lines.append(
            f"Drift: on {status.label(instance)} {listed.count - len(listed.shown)} more process(es) run from "
            f"another release than {current} (the first {len(listed.shown)} are named above)"
        )
    return lines


def process_words(process: OtherProcess) -> str:
    """``process 4242 (node, user web) runs release 000002-0123456``"""
    copy = "a deleted copy of release" if process.deleted else "release"
    return f"process {process.pid} ({process.command}, user {process.user}) runs {copy} {process.release}"


def fix_words(app_dir: str) -> str:
    """The deploy's advice for a process of a replaced release (exit 86, 90), for this APP_DIR."""
    return PM2_FIX.format(app_dir=app_dir or "APP_DIR")


def verdict_message(status: FleetStatus) -> str:
    """The step's last line: ``No drift: ...`` (it passes) or what fails it."""
    verdict, live = status.verdict, status.live_release
    count = len(status.fleet)
    if verdict is Verdict.NO_DRIFT:
        if live is None:
            return f"No drift: the ledger names no live release and none of the {count} instance(s) runs one"
        return f"No drift: {count} instance(s) run {live}, the live release"
    if verdict is Verdict.FAILED:
        return status.message
    parts = []
    drifted = status.drifted_instances
    if drifted:
        parts.append(f"Drift on {len(drifted)} of {count} instance(s) ({named(drifted)})")
    serving_other = status.serving_other
    if serving_other:
        processes = sum(listed.count for listed in serving_other.values())
        parts.append(f"{processes} process(es) run from another release than current on {named(list(serving_other))}")
    if status.unknown:
        parts.append(f"{len(status.unknown)} instance(s) could not be asked ({named(status.unknown)})")
    unread = list(status.processes_unread)
    if unread:
        parts.append(f"the processes of {len(unread)} instance(s) could not be read ({named(unread)})")
    if not status.fleet:
        parts.append("no instance was asked")
    return "; ".join(parts) + f"; the ledger says {live or 'no release'} is live"


def _release_words(runs: str) -> str:
    return "no release" if runs == NO_RELEASE else runs


# --- the result file ---------------------------------------------------------------------------------


def status_document(settings: DeploySettings, status: FleetStatus) -> dict[str, object]:
    """RESULT_FILE's JSON for ACTION: status."""
    seconds = max(0.0, time.monotonic() - status.started)
    return {
        "action": settings.action,
        "status": status.verdict.value,
        "message": verdict_message(status),
        "summary": summary(settings, status, seconds),
        "duration_seconds": round(seconds, 1),
        **where_it_ran(settings),
        "ledger": status.ledger,
        "live_release": status.live_release,
        "releases": [_release_document(item) for item in status.recent],
        "fleet": dict(status.fleet),
        "drifted_instances": [{"instance_id": i, "runs": runs} for i, runs in status.drifted.items()],
        "processes_of_other_releases": [
            {
                "instance_id": instance,
                "current": status.fleet[instance],
                "count": listed.count,
                "processes": [_process_document(process) for process in listed.shown],
            }
            for instance, listed in status.serving_other.items()
        ],
        "unknown_instances": [
            {"instance_id": i, "reason": status.why_unknown.get(i, "the read got no answer")} for i in status.unknown
        ],
        "processes_unread": [{"instance_id": i, "reason": why} for i, why in status.processes_unread.items()],
    }


def status_dotenv(settings: DeploySettings, status: FleetStatus) -> dict[str, str]:
    """The ``.env`` twin's and Bitbucket's shared variables' ``SSM_DEPLOY_*`` values for ACTION: status."""
    seconds = max(0.0, time.monotonic() - status.started)
    return {
        "SSM_DEPLOY_ACTION": settings.action,
        "SSM_DEPLOY_STATUS": status.verdict.value,
        "SSM_DEPLOY_ENVIRONMENT": settings.environment or "",
        "SSM_DEPLOY_LEDGER": status.ledger,
        "SSM_DEPLOY_LIVE_RELEASE": status.live_release or "",
        "SSM_DEPLOY_DRIFTED_INSTANCES": " ".join(status.drifted_instances),
        "SSM_DEPLOY_UNKNOWN_INSTANCES": " ".join(status.unknown),
        "SSM_DEPLOY_DURATION": str(round(seconds)),
        "SSM_DEPLOY_SUMMARY": summary(settings, status, seconds),
    }


def summary(settings: DeploySettings, status: FleetStatus, seconds: float) -> str:
    """A few sentences a notifier can print as they are."""
    where = ", ".join(part for part in (settings.environment, f"build {settings.build.build_number}") if part)
    lines = [f"ssm-deploy status: {status.verdict.value.upper()} after {format_seconds(seconds)} ({where})."]
    lines.append(sentence(verdict_message(status)))
    return "\n".join(lines)


def _process_document(process: OtherProcess) -> dict[str, object]:
    return {
        "pid": process.pid,
        "user": process.user,
        "command": process.command,
        "release": process.release,
        "deleted_copy": process.deleted,
    }


def _release_document(item: Recorded) -> dict[str, object]:
    entry = item.entry
    return {
        "version": item.version,
        "release": entry.release.id,
        "action": entry.action,
        "result": entry.status,
        "commit": entry.release.commit,
        "build": entry.run.build,
        "build_url": entry.run.build_url,
        "triggered_by": entry.run.triggered_by,
        "time": entry.time,
        "previous_release": entry.previous_release,
    }
