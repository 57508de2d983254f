"""Value types shared by the stages: what was sent, what each instance did, and the public verdicts."""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

ACTIVE_STATUSES = frozenset({"Pending", "InProgress", "Delayed", "Cancelling"})
"""Statuses that may still change. botocore's CommandExecuted waiter treats Cancelling as a failure;
the pipe keeps waiting on it because it waits for its own cancel to land."""
SUCCESS = "Success"
UNDELIVERED_STATUSES = frozenset({"Pending", "Delayed"})  # the agent has not received the command (yet)
UNKNOWN_RELEASE = "unknown"
"""``DeployOutcome.fleet``'s value for an instance whose ``current`` could not be read."""
NO_RELEASE = "none"
"""``DeployOutcome.fleet``'s value for an instance whose ``current`` points to no release (there is none
yet, or it points outside ``releases/``). Neither word can be a release id (``config.release.RELEASE_ID``)."""


# phases outside any command, as the result file names them (failed_phase, interrupted_phase); a stop there is
# always the pipeline's (a command's phase is also cut short by the pipe's own wait bound or AWS out of reach)
BAKE, LOAD_BALANCER = "bake", "load balancer"
SCALE_OUT = "scale-out"  # instances launched during the rollout could not all get it
OUTSIDE_COMMANDS = (LOAD_BALANCER, BAKE, SCALE_OUT)


class Status(StrEnum):
    """``SSM_DEPLOY_STATUS``: how far the deploy got (a public contract: later steps branch on it)."""

    NOT_SENT = "not sent"
    DRY_RUN = "dry run"
    SENT = "sent"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class PhaseStatus(StrEnum):
    """``SSM_DEPLOY_HEALTH_CHECK`` and ``SSM_DEPLOY_ROLLBACK``: what a follow-up phase did."""

    NOT_RUN = "not run"
    # rollback only: nothing to undo (no instance received the deploy; in release mode, every instance
    # it reached runs the release that was live before)
    NOT_NEEDED = "not needed"
    INTERRUPTED = "interrupted"  # the pipeline was stopped while it ran
    PASSED = "passed"  # health check
    SUCCEEDED = "succeeded"  # rollback, stage
    FAILED = "failed"


@dataclass(frozen=True)
class CommandSpec:
    """One command to send: what runs, where, and how fast. Phases are built from these values."""

    label: str  # "deploy", "health check", "rollback": names the phase in logs and the Comment
    script: tuple[str, ...]
    instance_ids: tuple[str, ...] = ()
    targets: tuple[Target, ...] = ()  # SSM resolves the instances; instance_ids is then empty
    execution_timeout: int = 3600
    delivery_timeout: int = 600
    max_concurrency: str = "50"
    max_errors: str = "0"
    comment: str = ""
    alarm: str | None = None  # SendCommand's AlarmConfiguration: SSM stops the command when it fires
    # release mode: the APP_DIR where this command may switch ``current``; once it ends, however it
    # ends, the pipe learns where each instance's ``current`` points (DeployOutcome.fleet)
    switches_in: str = ""
    stoppable: bool = True  # False: a stop neither holds it back nor cuts it short (the read-only read)


@dataclass(frozen=True)
class Batch:
    """Instances the rollout treats together: deployed, checked and (behind a load balancer)
    drained and registered again as one. ``targets`` when SSM resolves the instances itself."""

    number: int  # 1-based
    count: int  # how many batches the rollout has
    instance_ids: tuple[str, ...] = ()
    targets: tuple[Target, ...] = ()
    # going back (ROLLBACK_BATCH_SIZE): the numbers of the deploy's batches this one switches back together
    joins: tuple[int, ...] = ()

    @property
    def numbers(self) -> tuple[int, ...]:
        """The deploy's batches this batch stands for: itself, or those it joins."""
        return self.joins or (self.number,)

    def __str__(self) -> str:
        size = f"{len(self.instance_ids)} instance(s)" if self.instance_ids else "the TARGETS"
        if self.joins:
            return f"batches {', '.join(map(str, self.joins))} of {self.count} ({size})"
        return f"batch {self.number}/{self.count} ({size})"


@dataclass(frozen=True)
class SentCommand:
    command_id: str
    instance_ids: tuple[str, ...]  # empty for a TARGETS command: SSM resolves its instances
    comment: str = field(default="", compare=False)  # as sent: with its marker, what the console shows
    # RequestedDateTime as SSM answered it (AWS's clock): ListCommands finds the deploy's commands from it
    requested_at: datetime.datetime | None = field(default=None, compare=False)


def command_ids(commands: Sequence[SentCommand]) -> str:
    """``id-1, id-2``: the commands as messages name them."""
    return ", ".join(command.command_id for command in commands)


@dataclass
class Invocation:
    instance_id: str
    command_id: str = ""
    status: str = "Pending"
    status_details: str = "Pending"
    response_code: int | None = None
    elapsed: str = ""
    stdout: str = ""
    stderr: str = ""
    # the streams ("stdout", "stderr") whose copy above lacks its end: SSM cut it at its field
    # limit, or it is the head ListCommandInvocations gave (``head_only``)
    cut: frozenset[str] = frozenset()
    head_only: bool = False  # stdout/stderr are the listing's 2,500-character head; SSM keeps more
    lost: str = ""  # why the pipe gave the instance up (its agent went away), empty otherwise
    lost_undelivered: bool = False  # given up while still Pending or Delayed: its agent never received it
    stopped_at_max_errors: bool = False  # never started: the pipe held it back once MAX_ERRORS was passed

    @property
    def finished(self) -> bool:
        return bool(self.lost) or self.status not in ACTIVE_STATUSES

    @property
    def skipped(self) -> bool:
        """Never started: SSM (within one command) or the pipe (across the commands of more than 50
        INSTANCE_IDS) stopped the rollout because MAX_ERRORS was exceeded."""
        return self.stopped_at_max_errors or self.status_details == "Terminated"

    @property
    def received_deploy(self) -> bool:
        """The command started on the instance (so a rollback has something to undo there)."""
        never_ran = {"Terminated", "Undeliverable", "DeliveryTimedOut", "Pending"}
        return (
            not self.lost
            and not self.stopped_at_max_errors
            and self.status != "Pending"
            and self.status_details not in never_ran
        )

    @property
    def may_have_run(self) -> bool:
        """The command may have started on the instance: everything but an invocation the agent never
        received (Pending or Delayed, an agent given up on while it was so included; Undeliverable,
        DeliveryTimedOut) or one held back at MAX_ERRORS."""
        never_delivered = {"Terminated", "Undeliverable", "DeliveryTimedOut"}
        return (
            bool(self.command_id)
            and not self.stopped_at_max_errors
            and not self.lost_undelivered
            and self.status_details not in never_delivered
            and self.status not in UNDELIVERED_STATUSES
        )

    @property
    def ended_by_script(self) -> bool:
        """The script ran to its own end (its exit code is its own): not cut by a timeout, a cancel or a lost agent."""
        return not self.lost and self.status in (SUCCESS, "Failed") and self.may_have_run

    @property
    def succeeded(self) -> bool:
        return not self.lost and self.status == SUCCESS

    def describe(self) -> str:
        """``Failed (exit 3)`` or ``Failed/Undeliverable`` style text for messages."""
        text = self.status
        if self.status_details and self.status_details != self.status:
            text += f"/{self.status_details}"
        if self.response_code is not None and self.response_code >= 0:
            text += f" (exit {self.response_code})"
        if self.lost:
            text += f", given up: {self.lost}"
        if self.skipped:
            text += " (skipped: MAX_ERRORS reached)"
        return text


@dataclass
class PhaseOutcome:
    """What one phase (deploy, health check or rollback) sent and what each instance did."""

    status: PhaseStatus = PhaseStatus.NOT_RUN
    commands: list[SentCommand] = field(default_factory=list)
    _followed: list[dict[str, Invocation]] = field(default_factory=list)  # one live dict per batch

    def track(self, invocations: dict[str, Invocation]) -> None:
        """Record a batch's invocations as they are followed (the dict keeps changing)."""
        self._followed.append(invocations)

    @property
    def invocations(self) -> dict[str, Invocation]:
        return {instance_id: inv for part in self._followed for instance_id, inv in part.items()}

    @property
    def failed(self) -> list[Invocation]:
        return [inv for inv in self.invocations.values() if not inv.succeeded]


class BatchOutcome(StrEnum):
    """Where a batch of a rollout the pipe drives ended: the batch table and the result file's
    ``batches`` (a public contract). Which release each instance runs is ``DeployOutcome.fleet``."""

    NOT_STARTED = "not started"  # nothing was sent to it: it runs what it ran before
    DEPLOYED = "deployed"  # it runs the new version
    BAKE_STOPPED = "deployed, bake stopped"  # it runs the new version; the pipeline was stopped while it baked
    STOPPED = "stopped"  # the pipeline was stopped while it was deployed or checked
    FAILED = "failed"  # its deploy, health check or bake failed, and nothing of it was rolled back
    ROLLED_BACK = "rolled back"
    ROLLED_BACK_NOT_HEALTHY = "rolled back, not healthy"  # rolled back, but not healthy in the load balancer again
    ROLLBACK_FAILED = "rollback failed"  # the rollback failed on some of its instances
    ROLLBACK_NOT_RUN = "rollback not run"  # the load balancer or SendCommand refused it: left on the new version
    ROLLBACK_STOPPED = "rollback stopped"  # the pipeline was stopped during its rollback
    # deployed, and the rollback never reached it: the pipeline was stopped first, or no release was live before
    LEFT_ON_NEW = "left on the new version"


@dataclass
class BatchRecord:
    """One batch of a rollout the pipe drives: what happened to it and how long each step took (seconds)."""

    number: int
    instance_ids: tuple[str, ...]
    outcome: BatchOutcome = BatchOutcome.NOT_STARTED
    drain: float | None = None
    deploy: float | None = None
    healthy: float | None = None
    bake: float | None = None
    # from its deregistration until every group reports it healthy again, added up over each time it was
    # taken out (its deploy, its rollback); None when it never left the load balancer or never came back
    out_of_service: float | None = None

    def timings(self) -> dict[str, float | None]:
        return {
            "drain": self.drain,
            "deploy": self.deploy,
            "healthy": self.healthy,
            "out_of_service": self.out_of_service,
            "bake": self.bake,
        }

    def out_of_service_for(self, seconds: float) -> None:
        """One more time out of service, ``seconds`` long, ended with the batch healthy again."""
        self.out_of_service = round((self.out_of_service or 0.0) + seconds, 1)


@dataclass
class DeployOutcome:
    """How far the deploy got, for the result file: each phase's invocations, the batches, and in
    release mode which release each instance runs."""

    status: Status = Status.NOT_SENT
    message: str = ""
    failed_phase: str = ""  # the phase whose failure decided the verdict: deploy, health check, bake...
    started: float = field(default_factory=time.monotonic, compare=False)  # when the deploy began, for its duration
    ended: float | None = field(default=None, compare=False)  # when it ended (``end``), before the sinks read it
    # release mode, a rollout the pipe drives: the release prepared on every instance before the first batch
    stage: PhaseOutcome = field(default_factory=PhaseOutcome)
    stage_seconds: float | None = None
    deploy: PhaseOutcome = field(default_factory=PhaseOutcome)
    health_check: PhaseOutcome = field(default_factory=PhaseOutcome)
    rollback: PhaseOutcome = field(default_factory=PhaseOutcome)
    interrupted: str = ""  # the phase a stop (SIGTERM/SIGINT) interrupted, empty otherwise
    batches: list[BatchRecord] = field(default_factory=list)  # a rollout the pipe drives, batch by batch
    # release mode: instance id -> the release id its ``APP_DIR/current`` points to, as last read from
    # the instance itself (its script's report, or a read command when an invocation ended without
    # telling). UNKNOWN_RELEASE when even asking failed; an instance not in it was never touched.
    fleet: dict[str, str] = field(default_factory=dict)
    # release mode: instance id -> the release ``current`` pointed to as its install script began, under the
    # instance's lock (said before COMMANDS, whose output may push the switch's own line out of what SSM
    # keeps): what it ran before this deploy, where a failed deploy goes back to when the release ledger names
    # no live release
    at_start: dict[str, str] = field(default_factory=dict)
    # instance id -> how it left the fleet during the deploy (its Auto Scaling group terminated it, TARGETS no longer
    # match it): not a failure
    departed: dict[str, str] = field(default_factory=dict)
    # with TARGETS and SKIP_STOPPED: instance id -> what it is (stopped when the deploy was planned, left out: it runs
    # what it had); not a failure, and not in the fleet the release ledger calls live
    skipped: dict[str, str] = field(default_factory=dict)
    # instance id -> how it joined the fleet during the deploy (its group launched it): deployed in a batch of its own
    joined: dict[str, str] = field(default_factory=dict)

    def end(self) -> None:
        """The deploy is over: its duration stops here, the same for every sink."""
        if self.ended is None:
            self.ended = time.monotonic()

    def seconds(self) -> float:
        """How long the deploy took (so far, before ``end``)."""
        return max(0.0, (self.ended if self.ended is not None else time.monotonic()) - self.started)

    def records_of(self, batch: Batch) -> list[BatchRecord]:
        """The records of the deploy's batches ``batch`` stands for (several when it joins them)."""
        if not batch.joins:
            return [self.batch_record(batch.number, batch.instance_ids)]
        return [record for record in self.batches if record.number in batch.joins]

    def batch_record(self, number: int, instance_ids: tuple[str, ...]) -> BatchRecord:
        """Batch ``number``'s record, added the first time it is asked for."""
        for record in self.batches:
            if record.number == number:
                return record
        record = BatchRecord(number, instance_ids)
        self.batches.append(record)
        return record


@dataclass(frozen=True)
class SecretRef:
    """An environment variable on the instance whose value comes from a Parameter Store parameter:
    a name (``/deploy/prod/db``), an ARN (a parameter shared from another account), either one
    with a version (``:3``) or a label (``:prod``)."""

    env_name: str
    parameter: str


@dataclass(frozen=True)
class Target:
    """One SendCommand target: ``tag:Service=api,web`` (values OR'ed; several targets are AND'ed)."""

    key: str
    values: tuple[str, ...]

    def to_api(self) -> dict[str, Any]:
        return {"Key": self.key, "Values": list(self.values)}

    def __str__(self) -> str:
        return f"{self.key}={','.join(self.values)}"
