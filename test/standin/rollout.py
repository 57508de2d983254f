"""Rate controls of one command: MaxConcurrency, MaxErrors, and the command's overall status.

A ``Rollout`` owns a command's invocations from SendCommand on. Every invocation exists (and is
listed) from the start with Status ``Pending``; at most ``MaxConcurrency`` of them are dispatched
to their agents at a time, in a stable order (the order of ``InstanceIds``, or the fleet's
registration order for ``Targets``). As one reaches a final status the next pending one starts.

Errors that count against ``MaxErrors`` are the ones AWS counts (user guide, "Understanding
command statuses"): ``Failed`` (the script's exit code was not 0) and ``TimedOut`` with
``ExecutionTimedOut``. ``Undeliverable``, ``DeliveryTimedOut`` and ``Cancelled`` do not count.
When the count *exceeds* MaxErrors ("if you specify 3, the system stops sending the command when
the fourth error is received"; 0: after the first), no further invocation starts: every one not
yet started ends ``Cancelled`` / ``Terminated`` at once, running ones finish normally.

Percentages (``"10%"``) are of the command's target count, rounded *down*, the rule AWS documents
for its other percentage rate controls (CloudFormation StackSets, Service Catalog: "rounds down to
the next whole number ... except where rounding down would result in zero", then 1). For
MaxConcurrency that minimum is 1; MaxErrors may round down to 0 (10% of 5 targets: the first
error stops the rollout). AWS documents "10% of 50 instances: stops at the sixth error", which
this rule reproduces.

The command's CloudWatch alarm (``command_alarm.py``) stops a rollout the same way, through
``stop_check`` / ``halt``: the invocations not yet started end ``Cancelled`` / ``Cancelled``.

Not modelled: the slow start AWS describes (one invocation first, then two more per
acknowledgement, growing to MaxConcurrency), and pending invocations turning DeliveryTimedOut
when the command's TimeoutSeconds passes before they were dispatched.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from standin.moto_bridge import MotoCommand

if TYPE_CHECKING:
    from standin.agent import InvocationRun

ACTIVE = frozenset({"Pending", "InProgress", "Delayed", "Cancelling"})
COUNTED_ERRORS = frozenset({"Failed", "ExecutionTimedOut"})  # StatusDetails that count against MaxErrors
NOT_ATTEMPTED = frozenset({"Undeliverable", "DeliveryTimedOut"})
DEFAULT_MAX_CONCURRENCY = "50"
DEFAULT_MAX_ERRORS = "0"
PATTERNS = {  # the SSM API model's patterns for SendCommand
    "MaxConcurrency": re.compile(r"^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$"),
    "MaxErrors": re.compile(r"^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$"),
}


class RateError(ValueError):
    """A MaxConcurrency / MaxErrors value the API refuses (answered as ValidationException)."""


def rate_limit(field: str, value: str, target_count: int) -> int:
    """``"10"`` -> 10; ``"10%"`` -> 10% of ``target_count`` rounded down (MaxConcurrency: at least 1)."""
    if not PATTERNS[field].fullmatch(value):
        raise RateError(
            f"1 validation error detected: Value '{value}' at '{field[0].lower()}{field[1:]}' failed to "
            f"satisfy constraint: Member must satisfy regular expression pattern: {PATTERNS[field].pattern}"
        )
    minimum = 1 if field == "MaxConcurrency" else 0
    if value.endswith("%"):
        return max(minimum, int(value[:-1]) * target_count // 100)
    return int(value)


def command_status(statuses: Sequence[tuple[str, str]], max_errors: int, targeted: bool) -> tuple[str, str]:
    """The command's (Status, StatusDetails) from its invocations' (Status, StatusDetails).

    The user guide's "Detailed status for a command", applied in this order:

    1. no invocation at all: ``Failed`` / ``NoInstancesInTag`` when Targets matched nothing
       (a plain empty InstanceIds list keeps moto's ``Success``);
    2. any invocation still Pending/InProgress/Delayed/Cancelling: ``Pending`` while every
       invocation is Pending (no agent has received it yet), else ``InProgress``;
    3. every invocation Success: ``Success`` / ``Success``;
    4. the user cancelled (any invocation ``Cancelled`` / ``Cancelled``): ``Cancelled``;
    5. MaxErrors was *reached* (the docs: Failed is "the value of MaxErrors or more invocations
       show Failed"; Success requires "the value of max-errors wasn't reached"; with MaxErrors 0
       that means one error): ``Failed`` / ``Failed`` when the Failed invocations alone reach it,
       ``TimedOut`` / ``ExecutionTimedOut`` when the execution timeouts alone do, else ``Failed``.
       So MaxErrors "1" with one failure lets the rollout go on (it stops only above 1) but the
       command still ends Failed;
    6. nothing succeeded (all Undeliverable / DeliveryTimedOut / errors under the limit):
       ``TimedOut`` / ``DeliveryTimedOut`` when delivery timeouts reach the limit, else ``Failed``
       (the guide: "if all invocations ... Undeliverable, the command status returned is Failed");
    7. otherwise (some Success, the rest not-attempted or errors under the limit): Status
       ``Success`` with StatusDetails ``Incomplete`` — the guide: Incomplete is "not enough
       invocations failed for the status to be Failed", and "four Undeliverable and one Success:
       the parent command's status is Success". Status has no "Incomplete" value of its own.

    StatusDetails use the API's spelling without spaces (``DeliveryTimedOut``, like invocations).
    """
    if not statuses:
        return ("Failed", "NoInstancesInTag") if targeted else ("Success", "Success")
    if any(status in ACTIVE for status, _ in statuses):
        if all(status == "Pending" for status, _ in statuses):
            return "Pending", "Pending"
        return "InProgress", "InProgress"
    details = [detail for _, detail in statuses]
    if all(detail == "Success" for detail in details):
        return "Success", "Success"
    if "Cancelled" in details:
        return "Cancelled", "Cancelled"
    limit = max(max_errors, 1)
    failed, timed_out = details.count("Failed"), details.count("ExecutionTimedOut")
    if failed >= limit:
        return "Failed", "Failed"
    if timed_out >= limit:
        return "TimedOut", "ExecutionTimedOut"
    if failed + timed_out >= limit:
        return "Failed", "Failed"
    if "Success" not in details:
        if details.count("DeliveryTimedOut") >= limit:
            return "TimedOut", "DeliveryTimedOut"
        return "Failed", "Failed"
    return "Success", "Incomplete"


class Rollout:
    """Dispatches one command's invocations under MaxConcurrency / MaxErrors; keeps its status."""

    def __init__(
        self,
        command: MotoCommand,
        runs: Sequence[InvocationRun],
        max_concurrency: int,
        max_errors: int,
        targeted: bool,
        stop_check: Callable[[], bool] | None = None,
    ) -> None:
        """``stop_check``: asked before each dispatch; True stops the rollout (``halt``), as the
        command's CloudWatch alarm does (``command_alarm.py``)."""
        self.command = command
        self._stop_check = stop_check
        self._final = threading.Event()  # set once the command's status is final
        self.max_concurrency = max_concurrency
        self.max_errors = max_errors
        self.targeted = targeted
        self.runs = {run.instance_id: run for run in runs}
        self.started: list[str] = []  # instance ids in the order they were dispatched
        self.spans: dict[str, list[float]] = {}  # instance id -> [dispatched, final] (time.monotonic)
        self.max_running = 0  # most invocations dispatched and not yet final at one time
        self.errors = 0
        self.stopped = False  # MaxErrors exceeded: nothing more starts
        self._pending = deque(runs)
        self._running: set[str] = set()
        self._lock = threading.RLock()
        for run in runs:
            run.bind(self._report, self._finished)

    def start(self) -> None:
        with self._lock:
            self._refresh()
            self._dispatch()

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._running)

    def cancel(self, instance_ids: Sequence[str]) -> None:
        """CancelCommand: pending invocations end Cancelled at once, running ones are told to stop."""
        wanted = set(instance_ids)
        with self._lock:
            kept: deque[InvocationRun] = deque()
            for run in self._pending:
                if run.instance_id in wanted:
                    self.command.update_invocation(run.instance_id, Status="Cancelled", StatusDetails="Cancelled")
                else:
                    kept.append(run)
            self._pending = kept
            running = [self.runs[i] for i in self._running if i in wanted]
            self._refresh()
        for run in running:
            run.cancel()

    def halt(self) -> None:
        """Nothing more starts: every invocation not yet dispatched ends Cancelled / Cancelled at
        once (running ones go on), as when the command's alarm fires."""
        with self._lock:
            self._halt("Cancelled", "Cancelled")
            self._refresh()

    def active(self) -> bool:
        """Whether the command's status is not final yet."""
        return not self._final.is_set()

    def wait_final(self, timeout: float) -> bool:
        """Wait until the command's status is final (False on timeout)."""
        return self._final.wait(timeout)

    def wait(self, timeout: float) -> bool:
        """Wait until no dispatched agent thread is alive (False on timeout).

        Pending invocations start only from a finishing agent's thread (before it ends), so once
        none is alive nothing more will start: the rollout is done, or stuck behind a lost agent.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                alive = [self.runs[i].thread for i in self.started if self.runs[i].thread.is_alive()]
            if not alive:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            alive[0].join(remaining)

    # --- called from the agents' threads --------------------------------------------------------
    def _report(self, instance_id: str, fields: dict[str, Any]) -> None:
        with self._lock:
            self.command.update_invocation(instance_id, **fields)
            self._refresh()

    def _finished(self, run: InvocationRun, details: str) -> None:
        with self._lock:
            self._running.discard(run.instance_id)
            self.spans.get(run.instance_id, []).append(time.monotonic())
            if details in COUNTED_ERRORS:
                self.errors += 1
            if self.errors > self.max_errors and not self.stopped:
                self._halt("Cancelled", "Terminated")
            self._dispatch()
            self._refresh()

    # --- with the lock held ---------------------------------------------------------------------
    def _halt(self, status: str, details: str) -> None:
        self.stopped = True
        for waiting in self._pending:
            self.command.update_invocation(waiting.instance_id, Status=status, StatusDetails=details, ResponseCode=-1)
        self._pending.clear()

    def _dispatch(self) -> None:
        while self._pending and not self.stopped and len(self._running) < self.max_concurrency:
            if self._stop_check is not None and self._stop_check():
                self._halt("Cancelled", "Cancelled")
                break
            run = self._pending.popleft()
            self._running.add(run.instance_id)
            self.started.append(run.instance_id)
            self.spans[run.instance_id] = [time.monotonic()]
            self.max_running = max(self.max_running, len(self._running))
            run.start()

    def _refresh(self) -> None:
        statuses = self.command.statuses()
        status, details = command_status(statuses, self.max_errors, self.targeted)
        self.command.set_summary(
            status,
            details,
            completed=sum(1 for s, _ in statuses if s not in ACTIVE),
            errors=sum(1 for _, d in statuses if d in COUNTED_ERRORS),
            delivery_timed_out=sum(1 for _, d in statuses if d == "DeliveryTimedOut"),
        )
        if status not in ACTIVE:
            self._final.set()
