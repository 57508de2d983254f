"""The Run Command service behind the patched SSM actions: targets, rolls out, counts, applies faults."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from standin import targets
from standin.agent import InvocationRun
from standin.cloudwatch import INSTANCE_APP_ID, LogsSink
from standin.command_alarm import AlarmWatch, check_configuration, watch
from standin.fleet import FilterError, Fleet, check_filters
from standin.moto_bridge import GroupReader, MotoCommand, ServiceError, TagReader
from standin.rollout import DEFAULT_MAX_CONCURRENCY, DEFAULT_MAX_ERRORS, RateError, Rollout, rate_limit

LEGACY_KEY_SERVICES = frozenset({"ssm", "logs"})  # also counted under the bare action name


@dataclass
class SentCommand:
    command_id: str
    caller_arn: str
    request: dict[str, Any]
    runs: dict[str, InvocationRun] = field(default_factory=dict)  # every target, started or not
    rollout: Rollout | None = None


@dataclass
class Throttle:
    """Answer ThrottlingException to ``failures`` of every ``out_of`` calls until ``until``, or
    until ``limit`` calls were throttled."""

    failures: int
    out_of: int
    until: float
    actions: frozenset[str] | None
    limit: int | None = None
    count: int = 0
    throttled: int = 0


@dataclass
class DecryptDenial:
    key_id: str
    caller_contains: str | None  # None: deny everyone


class RunCommandService:
    def __init__(
        self,
        fleet: Fleet,
        instance_environment: Callable[[], dict[str, str]],
        logs_sink: Callable[[], LogsSink],
        upload_interval: float = 0.2,
    ) -> None:
        self.fleet = fleet
        self._instance_environment = instance_environment
        self._logs_sink = logs_sink
        self.upload_interval = upload_interval
        self.sent: dict[str, SentCommand] = {}
        # Control-plane calls per API, every service: "ssm:SendCommand", "sts:AssumeRole", ...;
        # SSM and CloudWatch Logs actions also under the bare action name ("SendCommand"), as
        # before. Counted when the request arrives: throttled and IAM-denied calls count too.
        self.calls: collections.Counter[str] = collections.Counter()
        # The part of ``calls`` made from the instances: their agent (CloudWatch uploads) and
        # programs run by commands, e.g. the AWS CLI (told apart by their User-Agent).
        self.instance_calls: collections.Counter[str] = collections.Counter()
        self.callers: list[tuple[str, str]] = []
        self.last_call_at = 0.0  # wall-clock time the last call not made from an instance arrived
        self.decrypt_denials: list[DecryptDenial] = []
        self.throttles: list[Throttle] = []
        self.invocation_lag = 0.0
        self._sent_at: dict[str, float] = {}
        self.throttled = 0
        self._lock = threading.Lock()

    # --- hooks called by moto_bridge -------------------------------------------------------------
    def on_call(self, service: str, action: str, user_agent: str) -> None:
        keys = [f"{service}:{action}"]
        if service in LEGACY_KEY_SERVICES:
            keys.append(action)
        from_instance = f"app/{INSTANCE_APP_ID}" in user_agent
        with self._lock:
            for key in keys:
                self.calls[key] += 1
                if from_instance:
                    self.instance_calls[key] += 1
            if not from_instance:
                self.last_call_at = time.time()

    def calls_snapshot(self, include_instances: bool = True) -> collections.Counter[str]:
        """A copy of ``calls`` (without ``instance_calls`` when ``include_instances`` is False)."""
        with self._lock:
            counts = collections.Counter(self.calls)
            if not include_instances:
                counts.subtract(self.instance_calls)
        return +counts  # drops the keys left at zero

    def before_request(self, action: str, caller_arn: str, request: dict[str, Any]) -> None:
        with self._lock:
            self.callers.append((action, caller_arn))
            throttled = self._throttled(action)
        if throttled:
            raise ServiceError("ThrottlingException", "Rate exceeded")
        for key_id in request.get("KmsKeyIds", []):
            for denial in self.decrypt_denials:
                if denial.key_id in key_id and (denial.caller_contains is None or denial.caller_contains in caller_arn):
                    raise ServiceError(
                        "AccessDeniedException",
                        f"User: {caller_arn} is not authorized to perform: kms:Decrypt on resource: "
                        f"{key_id} because no resource-based policy allows the kms:Decrypt action "
                        "(Service: AWSKMS; Status Code: 400; Error Code: AccessDeniedException)",
                    )

    def invocations_visible(self, command_id: str) -> bool:
        sent_at = self._sent_at.get(command_id)
        return sent_at is None or time.monotonic() >= sent_at

    def _throttled(self, action: str) -> bool:
        now = time.monotonic()
        for throttle in self.throttles:
            if now >= throttle.until or (throttle.actions is not None and action not in throttle.actions):
                continue
            if throttle.limit is not None and throttle.throttled >= throttle.limit:
                continue
            throttle.count += 1
            if throttle.count % throttle.out_of < throttle.failures:
                throttle.throttled += 1
                self.throttled += 1
                return True
        return False

    def select_instances(self, request: dict[str, Any], tags_of: TagReader, group_query: GroupReader) -> list[str]:
        """SendCommand's instances: ``InstanceIds`` as given (duplicates dropped), or the managed
        instances ``Targets`` select (see ``targets.py``); checks the rate controls first."""
        for name in ("MaxConcurrency", "MaxErrors"):
            if request.get(name) is not None:
                try:
                    rate_limit(name, str(request[name]), 0)
                except RateError as error:
                    raise ServiceError("ValidationException", str(error)) from None
        check_configuration(request.get("AlarmConfiguration"))
        wanted = request.get("Targets") or []
        if wanted and request.get("InstanceIds"):
            raise ServiceError("InvalidParameters", "Specify either InstanceIds or Targets, not both.")
        if not wanted:
            return list(dict.fromkeys(request.get("InstanceIds") or []))
        directory = targets.Directory(self.fleet.ids(), lambda i: self.fleet.tags_of(i, tags_of), group_query)
        try:
            return targets.resolve(wanted, directory)
        except targets.TargetError as error:
            raise ServiceError(error.code, error.message) from None

    def on_send_command(self, command: MotoCommand, caller_arn: str, request: dict[str, Any]) -> None:
        if self.invocation_lag:
            self._sent_at[command.command_id] = time.monotonic() + self.invocation_lag
        sent = SentCommand(command.command_id, caller_arn, request)
        environment = self._instance_environment()
        for instance_id in command.instance_ids:
            sent.runs[instance_id] = InvocationRun(
                command,
                instance_id,
                self.fleet.get(instance_id),
                environment,
                self._logs_sink,
                self.upload_interval,
            )
        count = len(sent.runs)
        concurrency = str(request.get("MaxConcurrency") or DEFAULT_MAX_CONCURRENCY)
        errors = str(request.get("MaxErrors") or DEFAULT_MAX_ERRORS)
        alarm = AlarmWatch(command, command.alarm_configuration) if command.alarm_configuration else None
        sent.rollout = Rollout(
            command,
            list(sent.runs.values()),
            max_concurrency=rate_limit("MaxConcurrency", concurrency, count),
            max_errors=rate_limit("MaxErrors", errors, count),
            targeted=bool(request.get("Targets")),
            stop_check=alarm.stops_command if alarm else None,
        )
        with self._lock:
            self.sent[command.command_id] = sent
        sent.rollout.start()
        if alarm is not None:
            watch(sent.rollout, alarm)

    def on_cancel_command(self, command: MotoCommand, instance_ids: list[str]) -> None:
        sent = self.sent.get(command.command_id)
        if sent is not None and sent.rollout is not None:
            sent.rollout.cancel(instance_ids)

    @property
    def max_running(self) -> dict[str, int]:
        """Per command id: the most invocations that were dispatched and not yet final at once."""
        return {cid: sent.rollout.max_running for cid, sent in list(self.sent.items()) if sent.rollout}

    def peak_running(self, command_ids: list[str]) -> int:
        """The most invocations of these commands (together) dispatched and not yet final at once."""
        edges: list[tuple[float, int]] = []
        for command_id in command_ids:
            rollout = self.sent[command_id].rollout
            for span in list(rollout.spans.values()) if rollout else []:
                edges.append((span[0], 1))
                edges.append((span[1] if len(span) > 1 else float("inf"), -1))
        running = peak = 0
        for _, step in sorted(edges):  # at a tie the end (-1) sorts first: a slot freed, then taken
            running += step
            peak = max(peak, running)
        return peak

    def started_order(self, command_id: str) -> list[str]:
        """The command's instances in the order their invocations were dispatched."""
        rollout = self.sent[command_id].rollout
        return list(rollout.started) if rollout else []

    def instance_information(self, filters: list[dict[str, Any]], ec2_tags: TagReader) -> list[dict[str, Any]]:
        try:
            check_filters(filters)
        except FilterError as error:
            raise ServiceError(error.code, error.message) from None
        return self.fleet.information(filters, ec2_tags)

    # --- for tests and the demo ------------------------------------------------------------------
    def deny_decrypt(self, key_id: str, caller_contains: str | None = None) -> None:
        """Make KMS refuse to decrypt parameters under ``key_id`` (for callers whose ARN matches)."""
        self.decrypt_denials.append(DecryptDenial(key_id, caller_contains))

    def throttle(
        self, failures: int, out_of: int, seconds: float, actions: set[str] | None = None, limit: int | None = None
    ) -> None:
        """Answer ``failures`` of every ``out_of`` calls (of ``actions``) with ThrottlingException,
        for ``seconds`` or until ``limit`` calls were throttled, whichever comes first."""
        self.throttles.append(
            Throttle(failures, out_of, time.monotonic() + seconds, frozenset(actions) if actions else None, limit)
        )

    def hide_new_invocations(self, seconds: float) -> None:
        """Commands sent from now on list no invocations, and GetCommandInvocation answers
        InvocationDoesNotExist, for ``seconds`` after SendCommand (eventual consistency)."""
        self.invocation_lag = seconds

    def clear_faults(self) -> None:
        self.throttles.clear()
        self.decrypt_denials.clear()
        self.invocation_lag = 0.0

    def lose_instance(self, instance_id: str) -> None:
        """The instance is gone mid-run: its agent stops reporting and its processes die."""
        instance = self.fleet.get(instance_id)
        if instance is not None:
            instance.ping_status = "ConnectionLost"
        for sent in list(self.sent.values()):
            run = sent.runs.get(instance_id)
            if run is not None:
                run.lose()

    def stop_instance(self, instance_id: str) -> None:
        """EC2 stopped the instance (``power.py``): lost as above, and stopped until ``start_instance``; a
        command sent meanwhile is Delayed. The caller kills the rest of its processes."""
        instance = self.fleet.get(instance_id)
        if instance is None:
            return
        instance.stopped = True
        self.lose_instance(instance_id)
        for sent in list(self.sent.values()):
            run = sent.runs.get(instance_id)
            if run is not None:
                run.let_go(timeout=30)

    def start_instance(self, instance_id: str) -> None:
        """EC2 started it again: its agent is back and, as after a reboot, runs again what a stop cut short."""
        instance = self.fleet.get(instance_id)
        if instance is not None and instance.stopped:
            instance.stopped = False
            self.restore_instance(instance_id, resume=True)

    def restore_instance(self, instance_id: str, resume: bool = False) -> None:
        """The instance's agent is back (Online): it picks up the commands that waited for it. What it
        ran before it was lost stays killed, unless ``resume``: then, as AWS's agent does after a reboot
        (``InvocationRun.resume``), each command it was running when it was lost runs again from the start."""
        instance = self.fleet.get(instance_id)
        if instance is None:
            return
        if resume:
            for sent in list(self.sent.values()):
                run = sent.runs.get(instance_id)
                if run is not None:
                    run.resume()
        instance.ping_status = "Online"

    def cancel_all(self) -> None:
        """Cancel every command: nothing more starts, running processes are killed."""
        for sent in list(self.sent.values()):
            if sent.rollout is not None:
                sent.rollout.cancel(list(sent.runs))

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait for every dispatched invocation thread to end (and those they start in turn)."""
        deadline = time.monotonic() + timeout
        for sent in list(self.sent.values()):
            if sent.rollout is not None:
                sent.rollout.wait(max(0.0, deadline - time.monotonic()))
