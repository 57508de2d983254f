"""The Run Command service behind the patched SSM actions: dispatches invocations, applies faults."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from standin.agent import InvocationRun
from standin.fleet import Fleet
from standin.moto_bridge import MotoCommand, ServiceError


@dataclass
class SentCommand:
    command_id: str
    caller_arn: str
    request: dict[str, Any]
    runs: dict[str, InvocationRun] = field(default_factory=dict)


@dataclass
class Throttle:
    """Answer ThrottlingException to ``failures`` of every ``out_of`` calls until ``until``."""

    failures: int
    out_of: int
    until: float
    actions: frozenset[str] | None
    count: int = 0


@dataclass
class DecryptDenial:
    key_id: str
    caller_contains: str | None  # None: deny everyone


class RunCommandService:
    def __init__(
        self,
        fleet: Fleet,
        instance_environment: Callable[[], dict[str, str]],
        logs_client_factory: Callable[[], Any],
        upload_interval: float = 0.2,
    ) -> None:
        self.fleet = fleet
        self._instance_environment = instance_environment
        self._logs_client_factory = logs_client_factory
        self.upload_interval = upload_interval
        self.sent: dict[str, SentCommand] = {}
        self.calls: collections.Counter[str] = collections.Counter()
        self.callers: list[tuple[str, str]] = []
        self.decrypt_denials: list[DecryptDenial] = []
        self.throttles: list[Throttle] = []
        self.invocation_lag = 0.0
        self._sent_at: dict[str, float] = {}
        self.throttled = 0
        self._lock = threading.Lock()

    # --- hooks called by moto_bridge -------------------------------------------------------------
    def before_request(self, action: str, caller_arn: str, request: dict[str, Any]) -> None:
        with self._lock:
            self.calls[action] += 1
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
            throttle.count += 1
            if throttle.count % throttle.out_of < throttle.failures:
                self.throttled += 1
                return True
        return False

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
                self._logs_client_factory,
                self.upload_interval,
            )
        with self._lock:
            self.sent[command.command_id] = sent
        for run in sent.runs.values():
            run.start()

    def on_cancel_command(self, command: MotoCommand, instance_ids: list[str]) -> None:
        sent = self.sent.get(command.command_id)
        if sent is None:
            return
        for instance_id in instance_ids:
            run = sent.runs.get(instance_id)
            if run is not None:
                run.cancel()

    def instance_information(self, instance_ids: list[str] | None) -> list[dict[str, Any]]:
        return self.fleet.information(instance_ids)

    # --- for tests and the demo ------------------------------------------------------------------
    def deny_decrypt(self, key_id: str, caller_contains: str | None = None) -> None:
        """Make KMS refuse to decrypt parameters under ``key_id`` (for callers whose ARN matches)."""
        self.decrypt_denials.append(DecryptDenial(key_id, caller_contains))

    def throttle(self, failures: int, out_of: int, seconds: float, actions: set[str] | None = None) -> None:
        """Answer ``failures`` of every ``out_of`` calls (of ``actions``) with ThrottlingException."""
        self.throttles.append(
            Throttle(failures, out_of, time.monotonic() + seconds, frozenset(actions) if actions else None)
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

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait for every started invocation thread to end."""
        for sent in list(self.sent.values()):
            for run in sent.runs.values():
                run.thread.join(timeout)
