"""The rollout: batch after batch, deploy then health check; on failure, the rollback. In a rolling
release deploy, the release is first staged on every instance while all of them serve
(``staging.py``): a release that cannot be staged stops the rollout before its first drain.

Each batch runs inside a hook (a context manager): that is where taking the batch out of a load
balancer and putting it back plugs in (``pipe/traffic/``). The hook's exit runs on every
path, a failure or a stop included. Without TARGET_GROUPS, BATCH_SIZE, CANARY, BAKE_TIME or ALARMS
the plan is one batch, which SSM paces with MaxConcurrency; with them the pipe sends one command
per batch and gates the next one on the bake and the alarms.

After the planned batches, instances that joined the fleet meanwhile (launched by their Auto Scaling
group) get batches of their own (``joined.py``) before the deploy can succeed.

A batch that fails is rolled back while it is still out of the load balancer; then every batch
deployed before it, last first, each through the hook again (drained, rolled back, registered,
healthy), so the rollback keeps the service up too. ROLLBACK_BATCH_SIZE joins those batches into
fewer, larger ones (``_batches_back``): faster, with more instances out of service at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence

from pipe.apply.joined import Joiners
from pipe.apply.phases import run_phase
from pipe.apply.run import Run
from pipe.apply.staging import check_before_going_back, stage_release
from pipe.aws.alarms import AlarmsUnreadable, firing
from pipe.config.rollout import LARGEST, rollback_size
from pipe.errors import DeployFailed, DeployStopped, PipeError
from pipe.model import (
    BAKE,
    LOAD_BALANCER,
    NO_RELEASE,
    SCALE_OUT,
    UNKNOWN_RELEASE,
    Batch,
    BatchOutcome,
    BatchRecord,
    Invocation,
    PhaseStatus,
    command_ids,
)
from pipe.plan.commands import (
    DEPLOY,
    HEALTH_CHECK,
    ROLLBACK,
    STAGE,
    deploy_spec,
    healthcheck_spec,
    rollback_spec,
    stages,
)
from pipe.release.fleet_state import failed_back, fleet_at_end
from pipe.report.batches import batch_table
from pipe.report.fleet import fleet_sentence
from pipe.report.instances import LISTED, listed, named, release_meanings
from pipe.traffic import BatchHook, no_hook, room

ALARM_POLL_SECONDS = 2.0  # between DescribeAlarms calls during the bake
# what failed, besides the commands' phases (the result file's failed_phase)
ALARMS_GATE = "alarms before a batch"
log = logging.getLogger("ssm-deploy")


def roll_out(run: Run, batches: list[Batch], hook: BatchHook = no_hook) -> str:
    """Deploy every batch; return the success message or raise DeployFailed (rolled back if asked).
    However it ends, each batch's record says where it ended, and in release mode the message says
    which release each instance runs."""
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
        try:
            if stages(run.plan):
                staged = stage_release(run)
                if staged is not None:
                    _failed_in(run, STAGE)
                    raise staged
            else:
                known = _known_instances(run, batches)
                refused = check_before_going_back(run, known, () if known or not batches else batches[0].targets)
                if refused is not None:
                    raise refused
            queue, ran, joiners = list(batches), [], Joiners(batches)  # ran: every batch begun, joined ones last
            while queue:
                batch = queue.pop(0)
                ran.append(batch)
                failure, rolled_back = _next_batch(run, batch, hook, rollback, records.get(batch.number), done)
                if not rolled_back:
                    done.append(batch)
                if failure is None and not queue:  # instances launched meanwhile get the deploy too
                    queue, failure = _joined(run, joiners, ran, records)
                if failure is not None:
                    break
        except DeployStopped as stopped:
            rollback.record_stop()
            raise _amended(stopped, _standing(run, records, {})) from None
        if failure is not None:
            for batch in _batches_back(run, done):
                rollback.batch(run, batch, hook, _records(records, batch), failure)
            raise rollback.verdict(run, failure, _standing(run, records, rollback.notes()))
    finally:
        if driven:
            _log_table(run)
    gone = run.outcome.departed
    deployed = len([i for i in run.outcome.deploy.invocations if i not in gone])
    checked = " and passed the health check" if run.settings.healthcheck_commands else ""
    bake = run.settings.rollout.bake_time
    baked = f", baked {bake} s after each of {len(batches)} batch(es)" if bake else ""
    joined = run.outcome.joined
    launched = f"{named(list(joined))} launched during the rollout" if joined else ""
    left = f"{named(list(gone))} left the fleet" if gone else ""
    skipped = run.outcome.skipped
    left_out = f"{named(list(skipped))} stopped, left out (SKIP_STOPPED): not deployed" if skipped else ""
    changed = "; ".join(part for part in (launched, left, left_out) if part)
    return f"Deployed to {deployed} instance(s){f' ({changed})' if changed else ''}{checked}{baked}."


def _joined(
    run: Run, joiners: Joiners, ran: list[Batch], records: dict[int, BatchRecord]
) -> tuple[list[Batch], DeployFailed | None]:
    """The batches for the instances that joined the fleet during the rollout, or the failure to find them."""
    try:
        more = joiners.batches(run, ran)
    except DeployStopped:
        _stopped_in(run, SCALE_OUT)
        raise
    except DeployFailed as failure:
        _failed_in(run, SCALE_OUT)
        return [], failure
    if run.settings.rollout.pipe_driven:
        records.update({batch.number: run.outcome.batch_record(batch.number, batch.instance_ids) for batch in more})
    return more, None


def _next_batch(
    run: Run, batch: Batch, hook: BatchHook, rollback: _Rollback, record: BatchRecord | None, done: list[Batch]
) -> tuple[DeployFailed | None, bool]:
    """The gate, the batch and its bake: the failure, if any, and whether the batch was rolled back."""
    if batch.count > 1:
        log.info(f"---- {batch} ----")
    failure = _gate_before(run, batch) if done else None
    if failure is not None:
        _failed_in(run, ALARMS_GATE)
        return failure, True  # never started: nothing of it to roll back
    try:
        failure, rolled_back = _run_batch(run, batch, hook, rollback, record)
    except DeployStopped:
        raise
    except PipeError as error:  # e.g. SendCommand refused: batches before it still roll back
        if not done:
            raise
        if record is not None:
            record.outcome = BatchOutcome.FAILED
        _failed_in(run, DEPLOY)
        return DeployFailed(f"{str(batch).capitalize()}: {error}"), False
    if failure is None:
        if record is not None:
            record.outcome = BatchOutcome.DEPLOYED
        failure = _bake(run, batch, record)
    return failure, rolled_back


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
                    record.outcome = BatchOutcome.FAILED
                rolled_back = rollback.batch(run, batch, no_hook, [record] if record is not None else [], failure)
    except DeployStopped as stopped:
        if not rollback.began:  # a stop while a batch switched back comes back in is the rollback's
            _stopped_in(run, LOAD_BALANCER)  # the drain or the return to service, unless a command was cut short
        if record is not None and record.outcome in (BatchOutcome.NOT_STARTED, BatchOutcome.FAILED):
            record.outcome = BatchOutcome.STOPPED
        if failure is not None:  # the batch had failed: say so, not only that the pipe was stopped
            raise _amended(stopped, "", before=str(failure)) from None
        raise
    except DeployFailed as not_back:  # the hook: not drained in time, or not healthy again
        if record is not None and record.outcome is BatchOutcome.NOT_STARTED:
            record.outcome = BatchOutcome.FAILED
        if failure is None:
            _failed_in(run, LOAD_BALANCER)
            return not_back, False
        return DeployFailed(f"{failure} {not_back}"), rolled_back
    return failure, rolled_back


def _deploy_batch(run: Run, batch: Batch) -> DeployFailed | None:
    outcome = run.outcome.deploy
    plan = run.plan.release_plan
    before, sent_before = set(outcome.invocations), len(outcome.commands)
    failed = run_phase(run, deploy_spec(run.plan, batch), outcome)
    invocations = {i: inv for i, inv in outcome.invocations.items() if i not in before}
    mine = command_ids(outcome.commands[sent_before:])
    try:
        failed = _without_departed(run, failed)
    except DeployFailed as too_few:
        _failed_in(run, DEPLOY)
        return DeployFailed(_prefixed(batch, str(too_few)))
    if failed:
        _failed_in(run, DEPLOY)
        message = _failure_message(failed, len(invocations), mine)
        return DeployFailed(_prefixed(batch, message + (release_meanings(failed) if plan is not None else "")))
    if not invocations:
        _failed_in(run, DEPLOY)
        return DeployFailed(f"TARGETS matched no managed instance: nothing ran. Command id: {mine}.")
    missed = _left_out_by_ssm(run, batch, invocations)
    if missed:
        _failed_in(run, DEPLOY)
        return DeployFailed(
            f"TARGETS matched {len(run.plan.instances or ())} instance(s) when the deploy was planned, but SSM's own "
            f"resolution of them, as it took the command, left out {named(missed)}, still in the fleet (matched by "
            f"TARGETS when resolved again, running or stopped, or not readable): they did not get the deploy. "
            f"Command id: {mine}."
        )
    if run.settings.healthcheck_commands:
        instance_ids = [i for i in batch.instance_ids or invocations if i not in run.outcome.departed]
        failure = _health_check(run, instance_ids) if instance_ids else None
        return DeployFailed(_prefixed(batch, str(failure))) if failure is not None else None
    return None


def _left_out_by_ssm(run: Run, batch: Batch, reached: Mapping[str, Invocation]) -> list[str]:
    """One command to TARGETS, which SSM resolves again as it takes it: the instances they matched when the
    plan was made (and counted as the fleet) that SSM's resolution left out and that are still in the fleet
    (those TARGETS no longer match left it: gone, not failed). They did not get the deploy."""
    if not batch.targets or not run.plan.instances:
        return []
    missed = [i for i in run.plan.instances if i not in reached and i not in run.outcome.departed]
    gone = run.left_the_fleet(missed)
    return [i for i in missed if i not in gone]


def _without_departed(run: Run, failed: list[Invocation]) -> list[Invocation]:
    """``failed`` without the instances that left the fleet on purpose (their Auto Scaling group terminated
    them; TARGETS no longer match them): each is named as gone, not failed. DeployFailed when too few are left."""
    gone = run.left_the_fleet([inv.instance_id for inv in failed])
    return [inv for inv in failed if inv.instance_id not in gone]


def _health_check(run: Run, instance_ids: list[str]) -> DeployFailed | None:
    settings, record = run.settings, run.outcome.health_check
    log.info(
        f"---- Health check on {len(instance_ids)} instance(s): up to {settings.healthcheck_retries} "
        f"attempt(s), {settings.healthcheck_interval} s apart ----"
    )
    unhealthy = run_phase(run, healthcheck_spec(run.plan, instance_ids), record)
    try:  # an instance its group terminated during the check is gone, not unhealthy (as during the deploy)
        unhealthy = _without_departed(run, unhealthy)
    except DeployFailed as too_few:
        record.status = PhaseStatus.FAILED
        _failed_in(run, HEALTH_CHECK)
        return too_few
    if unhealthy or record.status is not PhaseStatus.FAILED:
        record.status = PhaseStatus.FAILED if unhealthy else PhaseStatus.PASSED
    if not unhealthy:
        gone = len([i for i in instance_ids if i in run.outcome.departed])
        left = f" still in the fleet ({gone} gone)" if gone else ""
        log.info(f"Health check passed on all {len(instance_ids) - gone} instance(s){left}")
        return None
    _failed_in(run, HEALTH_CHECK)
    return DeployFailed(
        f"The deploy ran, but the health check failed on {len(unhealthy)} of {len(instance_ids)} instance(s): "
        f"{listed(unhealthy)}. Command id: {command_ids(record.commands)}."
        + (release_meanings(unhealthy) if run.release is not None else "")
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
                record.outcome = BatchOutcome.FAILED
            _failed_in(run, BAKE)
            return DeployFailed(problem)
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            run.stops.raise_stopped_if_requested(f"during the bake of {batch}: nothing more was sent.")
        except DeployStopped:
            _stopped_in(run, BAKE)
            if record is not None:
                record.bake = round(time.monotonic() - started, 1)
                record.outcome = BatchOutcome.BAKE_STOPPED
            raise
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
    """ROLLBACK_COMMANDS on every instance that received the deploy, batch by batch. In release mode the
    switch back to the release that was live before, on every instance whose ``current`` (as read from
    the instance, DeployOutcome.fleet) points anywhere else, and only on those: one whose activation
    failed went back by itself, one whose deploy timed out after its switch did not."""

    def __init__(self, run: Run) -> None:
        self.release_mode = run.release is not None
        self.live_before = run.release.live_before if run.release is not None else ""
        self.wanted = bool(run.settings.rollback_commands or self.release_mode)
        self.targeted: list[str] = []  # the instances the rollback was sent to
        self.broken: list[Invocation] = []
        self.not_back: list[str] = []
        self.not_run: list[str] = []  # instances whose rollback was never sent, and why
        self.not_run_why: list[str] = []
        self.left: list[str] = []  # release mode, no release live before: nothing to switch back to
        self.unreached: list[str] = []  # a stop came before their rollback
        self.cut: list[str] = []  # a stop came during their rollback
        self.tried: set[int] = set()  # the batches whose rollback began
        self.stopped: DeployStopped | None = None
        self.record = run.outcome.rollback
        self.outcome = run.outcome

    def targets(self, run: Run, batch: Batch) -> list[str]:
        """The batch's instances the rollback is for: in release mode those whose ``current`` points
        anywhere but the release live before (unknown included); else those that received the deploy."""
        deployed = run.outcome.deploy.invocations
        ids = set(batch.instance_ids) if batch.instance_ids else set(deployed)
        ids -= set(run.outcome.departed)  # gone: nothing there to roll back
        if not self.release_mode:
            return [i for i, inv in deployed.items() if i in ids and inv.received_deploy]
        fleet = run.outcome.fleet
        return [
            i
            for i in deployed
            if i in ids and fleet.get(i, NO_RELEASE) not in (self.live_before, NO_RELEASE) and self._switched(run, i)
        ]

    def _switched(self, run: Run, instance_id: str) -> bool:
        """Whether this deploy may have switched the instance: always when the ledger names a live release (the
        switch back is to it, wherever ``current`` points); with none, when ``current`` is on the new release
        (or could not be read): one still on another release its script never left (it failed before its
        switch, or switched back itself) has nothing to go back to, nor stayed on the new release."""
        if self.live_before:
            return True
        new = run.release.plan.release_id if run.release is not None else ""
        return run.outcome.fleet.get(instance_id) in (new, UNKNOWN_RELEASE)

    def batch(
        self, run: Run, batch: Batch, hook: BatchHook, records: Sequence[BatchRecord], failure: DeployFailed
    ) -> bool:
        """Roll ``batch`` back (through ``hook``); whether nothing more can be done for it here.
        ``records``: of the deploy's batches it stands for (several when ROLLBACK_BATCH_SIZE joins them)."""
        if not self.wanted:
            return False
        targets = self.targets(run, batch)
        if self.stopped is not None:
            if self.tried.intersection(batch.numbers):
                return False  # its own rollback was the one stopped
            self.unreached += targets
            if targets:
                _mark(records, BatchOutcome.LEFT_ON_NEW)
            return False
        if not targets:
            return True
        if not (self.targeted or self.left):
            log.error(f"{failure}")
        back_to = self._back_to(run, targets)
        if not back_to:
            self.left += targets
            _mark(records, BatchOutcome.LEFT_ON_NEW)
            return True
        going = {i for ids in back_to.values() for i in ids}
        self.left += [i for i in targets if i not in going]
        targets = [i for i in targets if i in going]
        self.targeted += targets
        self.tried.update(batch.numbers)
        self._announce(run, batch, targets, back_to)
        rolled_back = False
        try:
            with hook(run, batch):
                for release, ids in back_to.items():
                    broken = run_phase(run, rollback_spec(run.plan, ids, release), self.record)
                    self.broken += broken
                rolled_back = True
        except DeployStopped as stopped:
            self.stopped = stopped
            self.cut += targets
            _mark(records, BatchOutcome.ROLLBACK_STOPPED)
            return False
        except PipeError as error:
            if rolled_back:  # rolled back, but not healthy in the load balancer again
                self.not_back.append(str(error))
                _mark(records, BatchOutcome.ROLLED_BACK_NOT_HEALTHY)
                return True
            # the hook refused before the rollback was sent (drain, capacity), or the send failed
            self.not_run += targets
            self.not_run_why.append(str(error))
            _mark(records, BatchOutcome.ROLLBACK_NOT_RUN)
            return False
        _mark(records, BatchOutcome.ROLLBACK_FAILED if broken else BatchOutcome.ROLLED_BACK)
        return True

    def _announce(self, run: Run, batch: Batch, targets: list[str], back_to: dict[str, list[str]]) -> None:
        if run.plan.release_plan is None:
            log.info(f"---- Rollback on the {len(targets)} instance(s) that received the deploy{_of(batch)} ----")
        elif self.live_before:
            log.info(
                f"---- Switching {len(targets)} instance(s) back to the release that was live before, "
                f"{self.live_before}{_of(batch)} ----"
            )
        else:
            ran = "; ".join(f"{release} on {named(ids)}" for release, ids in back_to.items())
            log.info(
                f"---- Switching {len(targets)} instance(s) back to the release each ran before this deploy "
                f"(the release ledger names no live release): {ran}{_of(batch)} ----"
            )

    def _back_to(self, run: Run, targets: list[str]) -> dict[str, list[str]]:
        """The release to go back to, and the targets that go back to it: the one live before this deploy; in
        release mode with none in the release ledger (a first deploy of this SERVICE and ENVIRONMENT into an
        APP_DIR another one deployed), the one ``current`` pointed to on each instance as its deploy script began
        (``outcome.at_start``); an instance that ran none (its first release) is left out."""
        if not self.release_mode or self.live_before:
            return {"": targets} if targets else {}
        grouped: dict[str, list[str]] = {}
        for instance_id in targets:
            release = run.outcome.at_start.get(instance_id)
            if release:
                grouped.setdefault(release, []).append(instance_id)
        return grouped

    def notes(self) -> dict[str, str]:
        """Why an instance is not on the release live before, for the fleet sentence."""
        found = {i: "no release was live before it" for i in self.left}
        found |= {i: "the pipeline was stopped before its rollback" for i in self.unreached}
        found |= {i: "the pipeline was stopped during its rollback" for i in self.cut}
        found |= {i: "rollback not run" for i in self.not_run}
        found |= {inv.instance_id: f"rollback {inv.describe()}" for inv in self.broken}
        return found

    def record_stop(self) -> None:
        """A stop ended the rollout, inside the rollback or outside it (e.g. while a batch switched back
        came back into service): a rollback that began is ``interrupted``, never ``not run``, and is the
        phase the stop cut short unless a command's phase was. It began with its first batch, before any
        rollback command: a stop while that batch drains again cuts the rollback short too."""
        self.record.status = PhaseStatus.INTERRUPTED if self.began else PhaseStatus.NOT_RUN
        if self.began and not self.outcome.interrupted:
            self.outcome.interrupted = ROLLBACK

    @property
    def began(self) -> bool:
        return bool(self.record.commands or self.tried)

    def verdict(self, run: Run, failure: DeployFailed, standing: str) -> DeployFailed:
        suffix = f" {standing}" if standing else ""
        if self.stopped is not None:
            self.record_stop()
            return _amended(self.stopped, suffix.strip(), before=f"{failure} The rollback did not finish:")
        if not self.wanted:
            return DeployFailed(f"{failure}{suffix}")
        if not self.targeted:
            self.record.status = PhaseStatus.NOT_RUN if self.left else PhaseStatus.NOT_NEEDED
            if self.left:
                nothing = f"no release was live before this one, so {named(self.left)} stayed on it"
            elif self.release_mode and self.live_before:
                nothing = "no instance's current points at a release other than the one that was live before"
            elif self.release_mode:
                nothing = "no instance's current was switched by this deploy"
            else:
                nothing = "no instance received the deploy"
            return DeployFailed(f"{failure} Nothing was rolled back: {nothing}.{suffix}")
        self.record.status = (
            PhaseStatus.FAILED if self.broken or self.not_back or self.not_run else PhaseStatus.SUCCEEDED
        )
        not_back = f" {' '.join(self.not_back)}" if self.not_back else ""
        if self.not_run:
            not_back += (
                f" ROLLBACK NOT RUN on {len(self.not_run)} instance(s), still on the new version: "
                f"{named(self.not_run)} ({' '.join(self.not_run_why)})."
            )
        if not self.broken and not self.not_run:
            return DeployFailed(
                f"{failure} Rollback succeeded on all {len(self.targeted)} instance(s).{not_back}{suffix}"
            )
        if not self.broken:
            done = len(self.targeted) - len(self.not_run)
            succeeded = f" Rollback succeeded on {done} of {len(self.targeted)} instance(s)." if done else ""
            return DeployFailed(f"{failure}{succeeded}{not_back}{suffix}")
        return DeployFailed(
            f"{failure} ROLLBACK FAILED on {len(self.broken)} of {len(self.targeted)} instance(s): "
            f"{listed(self.broken)}; they need attention. Rollback command id: {command_ids(self.record.commands)}."
            f"{release_meanings(self.broken) if self.release_mode else ''}{not_back}{suffix}"
        )


def _known_instances(run: Run, batches: Sequence[Batch]) -> list[str]:
    """The instances the batches name, or for one command to TARGETS (SSM resolves its instances) the ones
    TARGETS matched when the plan was made; none when they could not be resolved."""
    named = [i for batch in batches for i in batch.instance_ids]
    return named or list(run.plan.instances or ())


def _batches_back(run: Run, done: list[Batch]) -> Iterator[Batch]:
    """The batches deployed before a failed one, last first, as the rollback takes them: each alone, or
    with ROLLBACK_BATCH_SIZE whole batches joined up to that many instances (never split). ``max`` asks
    the traffic managers how many may be out of service right before each one (MIN_HEALTHY with the
    targets' health then), and the hook still waits for that capacity as for any batch."""
    size = run.settings.rollout.rollback_batch_size
    left = list(reversed(done))
    if size is None or not all(batch.instance_ids for batch in left):
        yield from left
        return
    total = sum(len(batch.instance_ids) for batch in run.plan.batches)
    while left:
        pending = [i for batch in left for i in batch.instance_ids]
        limit = rollback_size(size, total, room(run.plan.traffic, run, pending) if size == LARGEST else None)
        joined = [left.pop(0)]
        while left and sum(len(b.instance_ids) for b in joined) + len(left[0].instance_ids) <= limit:
            joined.append(left.pop(0))
        if len(joined) == 1:
            yield joined[0]
            continue
        ids = tuple(i for batch in joined for i in batch.instance_ids)
        yield Batch(joined[0].number, joined[0].count, ids, joins=tuple(batch.number for batch in joined))


def _records(records: dict[int, BatchRecord], batch: Batch) -> list[BatchRecord]:
    return [records[number] for number in batch.numbers if number in records]


def _mark(records: Sequence[BatchRecord], outcome: BatchOutcome) -> None:
    for record in records:
        record.outcome = outcome


def _failed_in(run: Run, phase: str) -> None:
    """The first failure decides the verdict: the result file names its phase."""
    if not run.outcome.failed_phase:
        run.outcome.failed_phase = phase


def _stopped_in(run: Run, phase: str) -> None:
    """A stop outside any command (a drain, a bake, a wait for launches): the result file names its phase.
    A command's phase, set where the command was cut short, comes first."""
    if not run.outcome.interrupted:
        run.outcome.interrupted = phase


def _of(batch: Batch) -> str:
    return f" ({batch})" if batch.count > 1 else ""


def _prefixed(batch: Batch, message: str) -> str:
    return f"{str(batch).capitalize()}: {message}" if batch.count > 1 else message


def _amended(error: DeployStopped, after: str, before: str = "") -> DeployStopped:
    """The same stop (a StillRunning keeps its type and command ids), its message between ``before`` and ``after``."""
    error.args = (" ".join(part for part in (before, str(error), after) if part),)
    return error


def _standing(run: Run, records: dict[int, BatchRecord], notes: dict[str, str]) -> str:
    """Where the rollout stands as it ends: batches never started or left on the new version, and in
    release mode which release each instance runs."""
    parts = []
    left = [r for r in records.values() if r.outcome is BatchOutcome.NOT_STARTED]
    if left:
        ids = [i for r in left for i in r.instance_ids]
        parts.append(
            f"Batch(es) {', '.join(str(r.number) for r in left)} ({len(ids)} instance(s)) were never started and "
            f"still run the old version: {named(ids)}."
        )
    on_new = (BatchOutcome.DEPLOYED, BatchOutcome.BAKE_STOPPED, BatchOutcome.LEFT_ON_NEW)
    kept = [r for r in records.values() if r.outcome in on_new]
    if kept:
        ids = [i for r in kept for i in r.instance_ids]
        parts.append(
            f"Batch(es) {', '.join(str(r.number) for r in kept)} ({len(ids)} instance(s)) still run the new version: "
            f"{named(ids)}."
        )
    release = run.release
    if release is not None:
        if run.outcome.fleet:  # an instance no command reached (its batch never started): as the ledger says
            instances = [i for r in records.values() for i in r.instance_ids]
            run.outcome.fleet.update(fleet_at_end(instances, run.outcome, release.plan.release_id, release.live_before))
        back = failed_back(run.outcome)
        sentence = fleet_sentence(run.outcome.fleet, release.live_before, release.plan.release_id, notes, back)
        parts.append(sentence)
    return " ".join(part for part in parts if part)


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
