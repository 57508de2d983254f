"""One phase run: send a CommandSpec (``plan/commands.py`` makes them), then follow it. Follow-up
phases (health check, rollback) try every instance whatever the others do.

In release mode a phase that may switch ``current`` (the deploy, the rollback) is followed by
learning where each instance's ``current`` points, however the phase ended: from the line its
script prints as it ends, or, where the invocation ended without it (timed out, cancelled, agent
lost, stopped, output cut), from a read-only command sent to those instances
(``DeployOutcome.fleet``; UNKNOWN_RELEASE where that fails too).
"""

from __future__ import annotations

import logging

from botocore.exceptions import BotoCoreError, ClientError

from pipe.apply.run import Run
from pipe.apply.send import cancel_command, send_commands
from pipe.apply.watch.follow import follow
from pipe.apply.watch.results import ensure_full_copy
from pipe.aws.console import console_url
from pipe.errors import DeployStopped, PipeError, SendOutcomeUnknown, StillRunning
from pipe.model import (
    UNKNOWN_RELEASE,
    CommandSpec,
    Invocation,
    PhaseOutcome,
    PhaseStatus,
    SentCommand,
    Status,
    Target,
    command_ids,
)
from pipe.plan.commands import read_spec
from pipe.release.remote import (
    OtherProcesses,
    current_at_start,
    current_report,
    other_processes,
)
from pipe.report.instances import LISTED, named
from pipe.runtime.interruption import Interrupted

log = logging.getLogger("ssm-deploy")


def run_phase(run: Run, spec: CommandSpec, record: PhaseOutcome) -> list[Invocation]:
    """Send ``spec`` and follow it to the end; returns the instances where it did not succeed.

    Once a stop is requested nothing new is sent: a stop before sending or while following marks the
    phase interrupted (in ``record`` and the outcome) and raises DeployStopped. A phase that may switch
    ``current`` then learns where each instance's points, however it ended."""
    try:
        run.stops.raise_if_requested()
    except Interrupted as stop:
        run.outcome.interrupted = spec.label
        raise DeployStopped(f"{stop} before the {spec.label} was sent: nothing more was sent.") from None
    sent_before = len(record.commands)
    commands = _send(run, spec, record)
    _log_sent(run, commands)
    try:
        invocations = follow(run, spec, commands, record)
    except DeployStopped as stopped:
        run.outcome.interrupted = spec.label
        if record.status is PhaseStatus.NOT_RUN:
            record.status = PhaseStatus.INTERRUPTED
        if spec.switches_in:
            reachable = not isinstance(stopped, StillRunning) or stopped.aws_answered
            _learn_fleet(run, spec.switches_in, _sent_since(record, sent_before), reachable)
        raise
    if spec.switches_in:
        _learn_fleet(run, spec.switches_in, _sent_since(record, sent_before))
    return [inv for inv in invocations.values() if not inv.succeeded]


def _sent_since(record: PhaseOutcome, sent_before: int) -> list[Invocation]:
    """The invocations of the commands this phase run sent (chunks held back and never sent have none)."""
    mine = {command.command_id for command in record.commands[sent_before:]}
    return [inv for inv in record.invocations.values() if inv.command_id in mine]


def _learn_fleet(run: Run, app_dir: str, invocations: list[Invocation], reachable: bool = True) -> None:
    """Record where ``current`` points on each instance the phase may have switched: its script's
    report, else a read command; UNKNOWN_RELEASE when AWS is out of reach (``reachable``: False),
    since the command may still be running there."""
    silent = []
    release_id = run.release.plan.release_id if run.release is not None else ""
    for invocation in invocations:
        if not invocation.may_have_run:
            continue
        reported = _reported(run, invocation) if invocation.ended_by_script else None
        if release_id and (began := current_at_start(invocation.stdout)) not in (None, release_id):
            run.outcome.at_start.setdefault(invocation.instance_id, began)
        if reported is not None:
            run.outcome.fleet[invocation.instance_id] = reported
        else:
            silent.append(invocation)
    if not silent:
        return
    if not reachable:
        for invocation in silent:
            run.outcome.fleet[invocation.instance_id] = UNKNOWN_RELEASE
        ids = [invocation.instance_id for invocation in silent]
        log.warning(f"Which release {app_dir}/current points to on {named(ids)} is unknown: AWS is out of reach")
        return
    read_fleet(run, app_dir, silent)


def _reported(run: Run, invocation: Invocation) -> str | None:
    """The release its script reported as it ended; None when the output lacks its end."""
    if "stdout" in invocation.cut and invocation.head_only:
        try:
            ensure_full_copy(run.clients.ssm, invocation)
        except (ClientError, BotoCoreError):
            return None
    return None if "stdout" in invocation.cut else current_report(invocation.stdout)


def read_fleet(run: Run, app_dir: str, silent: list[Invocation]) -> None:
    """Ask the instances whose command ended without saying where ``current`` points (``read_current``);
    UNKNOWN_RELEASE where it gets no answer."""
    ids = [invocation.instance_id for invocation in silent]
    why = "; ".join(f"{inv.instance_id}: {inv.describe()}" for inv in silent[:LISTED])
    log.info(
        f"---- Reading {app_dir}/current on {len(ids)} instance(s) whose command ended without saying where it "
        f"points ({why}) ----"
    )
    found = read_current(run, app_dir, ids)
    run.outcome.fleet.update(found)
    unknown = [instance_id for instance_id, release in found.items() if release == UNKNOWN_RELEASE]
    if unknown:
        log.warning(
            f"Which release {app_dir}/current points to on {named(unknown)} is unknown: the read got "
            "no answer. The pipe treats them as possibly on the new release."
        )


def read_current(run: Run, app_dir: str, instance_ids: list[str], targets: tuple[Target, ...] = ()) -> dict[str, str]:
    """Where ``APP_DIR/current`` points on each of ``instance_ids`` (none named: on each instance SSM found
    for ``targets``), by the read-only read command, followed to its end whatever a stop says: a release id,
    NO_RELEASE, or UNKNOWN_RELEASE where the read got no answer."""
    found = _read(run, app_dir, instance_ids, targets, processes=False)
    return {instance_id: release for instance_id, (release, _) in found.items()}


def read_serving(run: Run, app_dir: str, instance_ids: list[str]) -> dict[str, tuple[str, OtherProcesses | None]]:
    """ACTION: status: ``read_current`` with, on each instance, the processes running from another release
    than the one ``current`` points to (None where the read got no answer or its list was cut)."""
    return _read(run, app_dir, instance_ids, (), processes=True)


def _read(
    run: Run, app_dir: str, instance_ids: list[str], targets: tuple[Target, ...], processes: bool
) -> dict[str, tuple[str, OtherProcesses | None]]:
    record, spec = PhaseOutcome(), read_spec(run.settings, app_dir, instance_ids, targets, processes)
    try:
        commands = _send(run, spec, record)
        _log_sent(run, commands)
        follow(run, spec, commands, record)
    except (PipeError, ClientError, BotoCoreError) as error:
        log.warning(f"Reading {app_dir}/current did not finish: {error}")
    found: dict[str, tuple[str, OtherProcesses | None]] = {}
    for instance_id in instance_ids or sorted(record.invocations):
        answer = record.invocations.get(instance_id)
        release, listed = None, None
        if answer is not None and answer.succeeded:
            release = current_report(answer.stdout)
            if processes and "stdout" not in answer.cut:
                listed = other_processes(answer.stdout)
        found[instance_id] = (release if release is not None else UNKNOWN_RELEASE, listed)
    return found


def send_only(run: Run, spec: CommandSpec) -> str:
    """WAIT: 'false': send and return. A stop that arrived while sending cancels what was sent."""
    run.stops.raise_if_requested()
    record = run.outcome.deploy
    _send(run, spec, record)
    try:
        run.stops.raise_if_requested()
    except Interrupted as stop:
        run.outcome.interrupted = spec.label
        cancelled = all([cancel_command(run.clients.ssm, c.command_id) for c in record.commands])
        what = "it was cancelled" if cancelled else "cancelling it failed, so it may still be running"
        raise DeployStopped(f"{stop} while command {command_ids(record.commands)} was sent: {what}.") from None
    for command in record.commands:
        _log_console(run, command)
    return f"Sent command {command_ids(record.commands)}; not waiting for it (WAIT: 'false')."


def _send(run: Run, spec: CommandSpec, record: PhaseOutcome) -> list[SentCommand]:
    check_stop = run.stops.raise_if_requested if spec.stoppable else (lambda: None)
    try:
        commands = send_commands(run.clients.ssm, run.settings, spec, check_stop)
    except SendOutcomeUnknown:
        if run.outcome.status is Status.NOT_SENT:  # a command may be running: never report "not sent"
            run.outcome.status = Status.RUNNING
        raise
    record.commands += commands
    if run.outcome.status is Status.NOT_SENT:
        run.outcome.status = Status.RUNNING
    return commands


def _log_sent(run: Run, commands: list[SentCommand]) -> None:
    for command in commands:
        count = f"{len(command.instance_ids)} instance(s)" if command.instance_ids else "the TARGETS"
        log.info(f"Sent command {command.command_id} to {count} [{command.comment}] by {run.identity.arn}")
        _log_console(run, command)


def _log_console(run: Run, command: SentCommand) -> None:
    url = console_url(run.region, command.command_id)
    if url:  # none in a partition whose console has no public address
        log.info(f"Console: {url}")
