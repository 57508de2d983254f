"""The rollout: batch after batch, deploy then health check; on failure, the rollback.

Each batch runs inside a hook (a context manager): that is where taking the batch out of a load
balancer and putting it back plugs in (``stages/load_balancer``). The hook's exit runs on every
path, a failure or a stop included. Without TARGET_GROUPS, BATCH_SIZE, CANARY, BAKE_TIME or ALARMS
the plan is one batch, which SSM paces with MaxConcurrency; with them the pipe sends one command
per batch and gates the next one on the bake and the alarms.

A batch that fails is rolled back while it is still out of the load balancer; then every batch
deployed before it, last first, each through the hook again (drained, rolled back, registered,
healthy), so the rollback keeps the service up too.
"""

from __future__ import annotations

import logging
import time

from pipe.errors import DeployFailed, DeployStopped, PipeError
from pipe.model import Batch, BatchRecord, Invocation, PhaseStatus, command_ids
from pipe.report.batches import batch_table
from pipe.run import Run
from pipe.stages.alarms import AlarmsUnreadable, firing
from pipe.stages.batch_hook import BatchHook, no_hook
from pipe.stages.phases import deploy_spec, healthcheck_spec, rollback_spec, run_phase
from pipe.stages.release.remote import release_exit_meaning

LISTED = 20  # instances named in a message; the summary table has them all
ALARM_POLL_SECONDS = 2.0  # between DescribeAlarms calls during the bake
log = logging.getLogger("ssm-deploy")


def roll_out(run: Run, batches: list[Batch], hook: BatchHook = no_hook) -> str:
    """Deploy every batch; return the success message or raise DeployFailed (rolled back if asked)."""
    driven = run.settings.rollout.pipe_driven
    records = (
        {batch.number: run.outcome.batch_record(batch.number, batch.instance_ids) for batch in batches}
        if driven
        else {}
    )
    done: list[Batch] = []  # deployed and back in service: a later failure rolls them back
    failure: DeployFailed | None = None
    rollback = _Rollback(run)
    try:
        for batch in batches:
            if len(batches) > 1:
                log.info(f"---- {batch} ----")
            record = records.get(batch.number)
            failure = _gate_before(run, batch) if done else None
            if failure is not None:
                break
            try:
                failure, rolled_back = _run_batch(run, batch, hook, rollback, record)
            except DeployStopped:
                raise
            except PipeError as error:  # e.g. SendCommand refused: batches before it still roll back
                if not done:
                    raise
                failure, rolled_back = DeployFailed(f"{str(batch).capitalize()}: {error}"), False
                if record is not None:
                    record.outcome = "failed"
            if failure is None:
                failure = _bake(run, batch, record)
            if not rolled_back:
                done.append(batch)
            if failure is not None:
                break
            if record is not None:
                record.outcome = "deployed"
        if failure is not None:
            for batch in reversed(done):
                rollback.batch(run, batch, hook, records.get(batch.number), failure)
            raise rollback.verdict(failure, _never_started(batches, records))
    finally:
        if driven:
            _log_table(run)
    deployed = len(run.outcome.deploy.invocations)
    checked = " and passed the health check" if run.settings.healthcheck_commands else ""
    bake = run.settings.rollout.bake_time
    baked = f", baked {bake} s after each of {len(batches)} batch(es)" if bake else ""
    return f"Deployed to {deployed} instance(s){checked}{baked}."


def _run_batch(
    run: Run, batch: Batch, hook: BatchHook, rollback: _Rollback, record: BatchRecord | None
) -> tuple[DeployFailed | None, bool]:
    """The batch inside its hook: deploy, health check, and on failure its rollback (still out of the
    load balancer). Returns the failure, if any, and whether the batch was rolled back here."""
    failure: DeployFailed | None = None
    rolled_back = False
    try:
        with hook(run, batch):
            started = time.monotonic()
            failure = _deploy_batch(run, batch)
            if record is not None:
                record.deploy = round(time.monotonic() - started, 1)
            if failure is not None:
                failure = _with_alarms(run, failure)
                if record is not None:
                    record.outcome = "failed"
                rolled_back = rollback.batch(run, batch, no_hook, record, failure)
    except DeployStopped as stopped:
        if record is not None:
            record.outcome = "stopped"
        if failure is not None:  # the batch had failed: say so, not only that the pipe was stopped
            raise DeployStopped(f"{failure} {stopped}") from None
        raise
    except DeployFailed as not_back:  # the hook: not drained in time, or not healthy again
        if record is not None and record.outcome == "not started":
            record.outcome = "failed"
        if failure is None:
            return not_back, False
        return DeployFailed(f"{failure} {not_back}"), rolled_back
    return failure, rolled_back


def _deploy_batch(run: Run, batch: Batch) -> DeployFailed | None:
    outcome = run.outcome.deploy
    plan = run.release.plan if run.release is not None else None
    before, sent_before = set(outcome.invocations), len(outcome.commands)
    failed = run_phase(run, deploy_spec(run.plan, batch), outcome)
    invocations = {i: inv for i, inv in outcome.invocations.items() if i not in before}
    mine = command_ids(outcome.commands[sent_before:])
    if failed:
        message = _failure_message(failed, len(invocations), mine)
        return DeployFailed(_prefixed(batch, message + (_release_meanings(failed) if plan is not None else "")))
    if not invocations:
        return DeployFailed(f"TARGETS matched no managed instance: nothing ran. Command id: {mine}.")
    if run.settings.healthcheck_commands:
        instance_ids = list(batch.instance_ids or invocations)
        failure = _health_check(run, instance_ids)
        return DeployFailed(_prefixed(batch, str(failure))) if failure is not None else None
    return None


def _health_check(run: Run, instance_ids: list[str]) -> DeployFailed | None:
    settings, record = run.settings, run.outcome.health_check
    log.info(
        f"---- Health check on {len(instance_ids)} instance(s): up to {settings.healthcheck_retries} "
        f"attempt(s), {settings.healthcheck_interval} s apart ----"
    )
    unhealthy = run_phase(run, healthcheck_spec(run.plan, instance_ids), record)
    if unhealthy or record.status is not PhaseStatus.FAILED:
        record.status = PhaseStatus.FAILED if unhealthy else PhaseStatus.PASSED
    if not unhealthy:
        log.info(f"Health check passed on all {len(instance_ids)} instance(s)")
        return None
    return DeployFailed(
        f"The deploy ran, but the health check failed on {len(unhealthy)} of {len(instance_ids)} instance(s): "
        f"{listed(unhealthy)}. Command id: {command_ids(record.commands)}."
    )


def _gate_before(run: Run, batch: Batch) -> DeployFailed | None:
    """Before a batch after the first: no alarm may be in ALARM."""
    alarms = run.settings.rollout.alarms
    if not alarms:
        return None
    problem = _alarm_problem(run, f"before {batch}")
    return DeployFailed(problem) if problem else None


def _bake(run: Run, batch: Batch, record: BatchRecord | None) -> DeployFailed | None:
    """BAKE_TIME seconds with the batch back in service, reading ALARMS all along."""
    rollout = run.settings.rollout
    if not rollout.bake_time and not rollout.alarms:
        return None
    if rollout.bake_time:
        watching = f", watching {len(rollout.alarms)} alarm(s)" if rollout.alarms else ""
        log.info(f"{batch}: baking {rollout.bake_time} s{watching}...")
    started = time.monotonic()
    deadline = started + rollout.bake_time
    while True:
        problem = _alarm_problem(run, f"during the bake of {batch}") if rollout.alarms else None
        if problem:
            if record is not None:
                record.bake = round(time.monotonic() - started, 1)
                record.outcome = "failed"
            return DeployFailed(problem)
        left = deadline - time.monotonic()
        if left <= 0:
            break
        run.stops.raise_stopped_if_requested(f"during the bake of {batch}: nothing more was sent.")
        time.sleep(min(ALARM_POLL_SECONDS, left))
    if record is not None:
        record.bake = round(time.monotonic() - started, 1)
    if rollout.bake_time:
        log.info(f"{batch}: baked {rollout.bake_time} s" + (", no alarm fired" if rollout.alarms else ""))
    return None


def _alarm_problem(run: Run, when: str) -> str | None:
    try:
        on = firing(run.clients.cloudwatch, run.settings.rollout.alarms)
    except AlarmsUnreadable as error:
        return f"ALARMS could not be read {when} ({error}): the rollout stopped, as it does for an alarm."
    if not on:
        return None
    return f"Alarm {'; '.join(map(str, on))} {when}: the rollout stopped."


def _with_alarms(run: Run, failure: DeployFailed) -> DeployFailed:
    """Name the alarm when one fired while the batch's commands ran (SSM then stops them)."""
    if not run.settings.rollout.alarms:
        return failure
    problem = _alarm_problem(run, "while the batch ran")
    return DeployFailed(f"{failure} {problem}") if problem else failure


class _Rollback:
    """ROLLBACK_COMMANDS on every instance that received the deploy, batch by batch; in release mode
    the switch back on every instance that switched (one whose activation failed went back by itself)."""

    def __init__(self, run: Run) -> None:
        self.release_mode = run.release is not None
        self.wanted = bool(run.settings.rollback_commands or self.release_mode)
        self.received: list[str] = []
        self.broken: list[Invocation] = []
        self.not_back: list[str] = []
        self.not_run: list[str] = []  # instances whose rollback was never sent, and why
        self.not_run_why: list[str] = []
        self.stopped: DeployStopped | None = None
        self.record = run.outcome.rollback

    def batch(self, run: Run, batch: Batch, hook: BatchHook, record: BatchRecord | None, failure: DeployFailed) -> bool:
        """Roll ``batch`` back (through ``hook``); whether nothing of it is left on the new version."""
        if not self.wanted or self.stopped is not None:
            return False
        plan = run.release.plan if run.release is not None else None
        deployed = run.outcome.deploy.invocations
        ids = set(batch.instance_ids) if batch.instance_ids else set(deployed)
        received = [
            i
            for i, inv in deployed.items()
            if i in ids and (inv.succeeded if plan is not None else inv.received_deploy)
        ]
        if not received:
            return True
        if not self.received:
            log.error(f"{failure}")
        self.received += received
        if plan is not None:
            log.info(
                f"---- Switching {len(received)} instance(s) back to the release that was live before{_of(batch)} ----"
            )
        else:
            log.info(f"---- Rollback on the {len(received)} instance(s) that received the deploy{_of(batch)} ----")
        rolled_back = False
        try:
            with hook(run, batch):
                broken = run_phase(run, rollback_spec(run.plan, received), self.record)
                self.broken += broken
                rolled_back = True
        except DeployStopped as stopped:
            self.stopped = stopped
            return False
        except PipeError as error:
            if rolled_back:  # rolled back, but not healthy in the load balancer again
                self.not_back.append(str(error))
                if record is not None:
                    record.outcome = "rolled back, not healthy"
                return True
            # the hook refused before the rollback was sent (drain, capacity), or the send failed
            self.not_run += received
            self.not_run_why.append(str(error))
            if record is not None:
                record.outcome = "rollback not run"
            return False
        if record is not None:
            record.outcome = "rollback failed" if broken else "rolled back"
        return True

    def verdict(self, failure: DeployFailed, never_started: str) -> DeployFailed:
        suffix = f" {never_started}" if never_started else ""
        if self.stopped is not None:
            return DeployStopped(f"{failure} The rollback did not finish: {self.stopped}{suffix}")
        if not self.wanted:
            return DeployFailed(f"{failure}{suffix}")
        if not self.received:
            self.record.status = PhaseStatus.NOT_NEEDED
            nothing = (
                "no instance switched to the new release" if self.release_mode else "no instance received the deploy"
            )
            return DeployFailed(f"{failure} Nothing was rolled back: {nothing}.{suffix}")
        self.record.status = (
            PhaseStatus.FAILED if self.broken or self.not_back or self.not_run else PhaseStatus.SUCCEEDED
        )
        not_back = f" {' '.join(self.not_back)}" if self.not_back else ""
        if self.not_run:
            names = ", ".join(self.not_run[:LISTED]) + (" ..." if len(self.not_run) > LISTED else "")
            not_back += (
                f" ROLLBACK NOT RUN on {len(self.not_run)} instance(s), still on the new version: {names} "
                f"({' '.join(self.not_run_why)})."
            )
        if not self.broken and not self.not_run:
            return DeployFailed(
                f"{failure} Rollback succeeded on all {len(self.received)} instance(s).{not_back}{suffix}"
            )
        if not self.broken:
            done = len(self.received) - len(self.not_run)
            return DeployFailed(
                f"{failure} Rollback succeeded on {done} of {len(self.received)} instance(s).{not_back}{suffix}"
            )
        return DeployFailed(
            f"{failure} ROLLBACK FAILED on {len(self.broken)} of {len(self.received)} instance(s): "
            f"{listed(self.broken)}; they need attention. Rollback command id: {command_ids(self.record.commands)}."
            f"{not_back}{suffix}"
        )


def _of(batch: Batch) -> str:
    return f" ({batch})" if batch.count > 1 else ""


def _prefixed(batch: Batch, message: str) -> str:
    return f"{str(batch).capitalize()}: {message}" if batch.count > 1 else message


def _never_started(batches: list[Batch], records: dict[int, BatchRecord]) -> str:
    left = [b for b in batches if records.get(b.number) and records[b.number].outcome == "not started"]
    if not left:
        return ""
    ids = [i for b in left for i in b.instance_ids]
    names = ", ".join(ids[:LISTED]) + (" ..." if len(ids) > LISTED else "")
    numbers = ", ".join(str(b.number) for b in left)
    return f"Batch(es) {numbers} ({len(ids)} instance(s)) were never started and still run the old version: {names}."


def _log_table(run: Run) -> None:
    lines = batch_table(run.outcome.batches)
    if lines:
        log.info("\n".join(lines))


def _failure_message(failed: list[Invocation], total: int, commands: str) -> str:
    skipped = [inv for inv in failed if inv.skipped]
    broken = [inv for inv in failed if not inv.skipped]
    message = f"Deploy failed on {len(broken)} of {total} instance(s): {listed(broken)}."
    if skipped:
        names = ", ".join(inv.instance_id for inv in skipped[:LISTED]) + (" ..." if len(skipped) > LISTED else "")
        message += (
            f" The rollout stopped at MAX_ERRORS: {len(skipped)} instance(s) were skipped and still run the old "
            f"version: {names}."
        )
    return message + f" Command id: {commands}."


def _release_meanings(failed: list[Invocation]) -> str:
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
