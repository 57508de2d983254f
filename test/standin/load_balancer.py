"""Target health of ELBv2 target groups, as Elastic Load Balancing documents it (no moto here), with
real HTTP health checks; the requests themselves go through a data plane (``haproxy.py``).

moto registers and deregisters at once and calls every registered target ``healthy``. This model
keeps each (target group, target) pair instead, and checks every target over HTTP:

* **Health checks** (ALB user guide, "Health checks for Application Load Balancer target groups"):
  ``GET http://<address>:<port><HealthCheckPath>`` (``User-Agent: ELB-HealthChecker/2.0``,
  ``Connection: close``: "After each health check is completed, the load balancer node closes the
  connection"), where the address is the instance's private IP (``address_of``) and the port
  ``HealthCheckPort`` ("traffic-port": the target's port). A check passes when the status matches
  ``Matcher.HttpCode`` ("200", "200,202", "200-299"; ALB default "200"). A failed check has the
  reason code and description of "Health check reason codes": a status the matcher refuses is
  ``Target.ResponseCodeMismatch`` ("Health checks failed with these codes: [500]"); no complete
  answer within ``HealthCheckTimeoutSeconds`` (connecting included) is ``Target.Timeout`` ("Request
  timed out"); a refused or reset connection, a malformed response or an instance without an
  address (``address_of`` answers None) is ``Target.FailedHealthChecks`` ("Health checks failed");
  anything unexpected in the checker itself is ``Elb.InternalError``. "After your target is
  registered, it must pass one health check to be considered healthy": a new target is ``initial``
  until its first passing check (``Elb.RegistrationInProgress`` before any check completed,
  ``Elb.InitialHealthChecking`` after failing ones). ``UnhealthyThresholdCount`` consecutive
  failures make a target ``unhealthy`` (the reason of the latest failure), and an unhealthy target
  needs ``HealthyThresholdCount`` consecutive passes to be ``healthy`` again. Only HTTP checks
  (the stand-in's groups are HTTP; an HTTPS group is checked over HTTP too).
* **Check timing**: the first check of a target starts one interval after RegisterTargets; each
  next one is due one interval after the previous one *started* ("The time it takes for the target
  to respond does not affect the interval for the next health check request"), but a target never
  has two checks at once: when a check outlasts the interval (the timeout floor below can exceed
  a scaled interval) the next one starts as soon as it ends. Checks of different targets run
  concurrently, as tasks of one asyncio loop in the thread ``elb-health-checks`` (a hanging target
  holds only its own check; no thread per target). The loop sleeps until the next check or the end
  of a deregistration delay is due, or a registration, a deregistration or the end of a check wakes
  it (so an idle stand-in costs no CPU). ``address_of`` is called in that loop: it must be a quick
  lookup that does not block. The targets of a group that no load balancer uses are not
  checked.
* **Targets** (RegisterTargets API reference): a target is an instance and a port, the group's port
  unless RegisterTargets gives one ("You can register each EC2 instance or IP address with the same
  target group multiple times using different ports"); an instance may be a target of several
  groups. DeregisterTargets and DescribeTargetHealth name a
  target the same way: "If you specified a port override when you registered a target, you must
  specify both the target ID and the port when you deregister it" (an id alone is the one on the
  group's port).
* **Deregistration** (ALB user guide, "Deregistration delay"): "The initial state of a deregistering
  target is draining"; the load balancer stops sending it requests at once. Even when the target
  has no in-flight requests, "the status of the target is displayed as draining until the
  deregistration delay timeout expires" (``deregistration_delay.timeout_seconds``, default 300).
  After it, the target is gone: DescribeTargetHealth without ``Targets`` no longer lists it, and
  naming it answers ``unused`` / ``Target.NotRegistered``.
* **Registering a draining target again** cancels its deregistration: it is registered at once
  with the health its checks found (ELB keeps checking while it drains; observed behaviour, as in
  ansible/ansible#44149: ``draining`` right before RegisterTargets, ``healthy`` right after). A
  target registered after it was gone starts over as ``initial``.
* **Not in use**: a target group that no load balancer uses gets no health checks; its targets are
  ``unused`` / ``Target.NotInUse`` (TargetHealth API reference).
* **Routing** (``in_service``): requests go only to ``healthy`` targets. "If a target group contains
  only unhealthy registered targets, the load balancer routes requests to all those targets,
  regardless of their health status" (fail open; with the default routing-failover threshold of
  one healthy target, "all targets available to the load balancer node, including unhealthy
  targets"): with no healthy target, every registered target that is not draining.

Time: health-check intervals and the deregistration delay are multiplied by ``time_scale`` (0.05 in
e2e tests: a 5-s interval takes 0.25 s); the values AWS reports (the group's attributes) stay
unscaled. The check timeout is scaled too but never below ``TIMEOUT_FLOOR`` (1 s): a loopback HTTP
answer takes milliseconds, yet on a loaded 2-core machine running the suite in parallel a thread
can wait hundreds of milliseconds for the CPU, and a shorter timeout would make healthy targets
fail at random.

Data plane: the model is the control plane. Whenever the routing of a group changes (a check
changed a state, a target was registered, deregistered or is gone, fail-open began or ended), it
hands the group's whole routing state to ``data_plane.apply``: per target (address, port, mode),
mode ``ready`` (in the routing set), ``maint`` (registered, not routed) or ``drain``
(deregistering: no new requests, in-flight ones finish); a target no longer listed is gone (its
remaining requests are cut). A target whose address was never known has no server. Calls come
from the API threads and from worker threads of the check loop, one at a time, each with the
newest state, and a change becomes visible (DescribeTargetHealth, ``states``, ``in_service``) only
once the data plane has it: when a target reads ``healthy`` its server takes requests, when
DeregisterTargets returns it takes no new ones, when it is gone its server takes nothing (deleted,
or held in maintenance until HAProxy agrees to delete it). An error of the data plane is logged and
kept in ``data_plane_errors``; the next change tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

IDLE_WAKE = 1.0  # seconds the check loop sleeps at most when nothing is due (it wakes when work comes)
TIMEOUT_FLOOR = 1.0  # seconds: the shortest health-check timeout, whatever the time scale
BODY_LIMIT = 1 << 20  # bytes of a health-check answer's body read at most (then the connection is closed)
USER_AGENT = "ELB-HealthChecker/2.0"

INITIAL, HEALTHY, UNHEALTHY, DRAINING, UNUSED = "initial", "healthy", "unhealthy", "draining", "unused"
READY, MAINT, DRAIN = "ready", "maint", "drain"  # a target's mode in the data plane
# Reason codes and descriptions: ALB user guide, "Health check reason codes"
REASONS = {
    "Elb.RegistrationInProgress": "Target registration is in progress",
    "Elb.InitialHealthChecking": "Initial health checks in progress",
    "Elb.InternalError": "Health checks failed due to an internal error",
    "Target.ResponseCodeMismatch": "Health checks failed with these codes: [{code}]",
    "Target.Timeout": "Request timed out",
    "Target.FailedHealthChecks": "Health checks failed",
    "Target.DeregistrationInProgress": "Target deregistration is in progress",
    "Target.NotRegistered": "Target is not registered to the target group",
    "Target.NotInUse": "Target group is not configured to receive traffic from the load balancer",
}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupSettings:
    """What the model reads of a target group (live, from moto, through ``moto_bridge``)."""

    port: int
    interval: int  # HealthCheckIntervalSeconds
    healthy_threshold: int  # HealthyThresholdCount
    unhealthy_threshold: int  # UnhealthyThresholdCount
    deregistration_delay: int  # deregistration_delay.timeout_seconds
    in_use: bool  # some load balancer forwards to the group
    timeout: int = 5  # HealthCheckTimeoutSeconds
    path: str = "/"  # HealthCheckPath
    check_port: int | None = None  # HealthCheckPort; None: "traffic-port" (each target's port)
    matcher: str = "200"  # Matcher.HttpCode


@dataclass(frozen=True)
class Server:
    """One target as the data plane sees it."""

    address: str
    port: int
    mode: str  # READY, MAINT or DRAIN


class DataPlane(Protocol):
    def apply(self, group_arn: str, servers: Mapping[str, Server]) -> None:
        """The whole routing state of the group now (server name -> Server); a name missing since
        the previous call is gone: cut its remaining requests and remove it."""


SettingsReader = Callable[[str], GroupSettings | None]
AddressOf = Callable[[str], str | None]  # instance id -> its private IP; None: unreachable


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one health check: passed, or the reason code and description of the failure."""

    reason: str | None = None
    description: str | None = None

    @property
    def passed(self) -> bool:
        return self.reason is None

    @staticmethod
    def failed(reason: str, code: int | None = None) -> CheckResult:
        return CheckResult(reason, REASONS[reason].format(code=code))


PASSED = CheckResult()


def matches(matcher: str, status: int) -> bool:
    """Whether ``status`` is one of the Matcher's HttpCode: "200", "200,202", "200-299" or a mix."""
    for part in matcher.split(","):
        low, _, high = part.strip().partition("-")
        if low and int(low) <= status <= int(high or low):
            return True
    return False


def server_name(instance_id: str, port: int) -> str:
    """The data plane's name of a target (HAProxy names: letters, digits, '-', '_', '.', ':')."""
    return f"{instance_id}_{port}"


async def check(address: str | None, port: int, settings: GroupSettings, timeout: float) -> CheckResult:
    """One health check: ``GET <path>`` to ``address:port``, the whole answer within ``timeout``."""
    if address is None:
        return CheckResult.failed("Target.FailedHealthChecks")
    try:
        async with asyncio.timeout(timeout):
            status = await _http_status(address, port, settings.path)
    except TimeoutError:  # the timeout, or a connect that timed out in the kernel (ETIMEDOUT)
        return CheckResult.failed("Target.Timeout")
    except (OSError, EOFError, ValueError):  # refused, reset, unreachable; malformed or cut answer
        return CheckResult.failed("Target.FailedHealthChecks")
    return PASSED if matches(settings.matcher, status) else CheckResult.failed("Target.ResponseCodeMismatch", status)


async def _http_status(address: str, port: int, path: str) -> int:
    """The status of a complete HTTP/1.1 answer to ``GET path`` on a new connection, closed after it."""
    reader, writer = await asyncio.open_connection(address, port)
    try:
        host = f"[{address}]" if ":" in address else address
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: {USER_AGENT}\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n".encode("latin-1")
        )
        await writer.drain()
        found = re.fullmatch(rb"HTTP/1\.[01] ([0-9]{3})(?: [^\r\n]*)?\r?\n", await reader.readline())
        if found is None:
            raise ValueError("not an HTTP/1.x status line")
        length: int | None = None
        while (line := await reader.readline()) not in (b"\r\n", b"\n"):
            if not line:
                raise EOFError("the headers were cut")
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if length is not None:
            await reader.readexactly(min(length, BODY_LIMIT))
        else:  # Connection: close, so the body ends where the connection does
            read = 0
            while read < BODY_LIMIT and (chunk := await reader.read(65536)):
                read += len(chunk)
        return int(found.group(1))
    finally:
        writer.close()


@dataclass
class _Target:
    instance_id: str
    port: int
    address: str | None = None  # the latest one ``address_of`` gave
    health: str = INITIAL  # INITIAL / HEALTHY / UNHEALTHY: what the checks found
    checks: int = 0  # health checks completed since registration
    passes: int = 0  # consecutive
    failures: int = 0  # consecutive
    failure: CheckResult = field(default_factory=lambda: CheckResult.failed("Target.FailedHealthChecks"))  # latest
    next_check: float = 0.0  # when the next check may start
    checking: bool = False  # a check is running
    drain_until: float | None = None  # set while draining

    def record(self, result: CheckResult, settings: GroupSettings) -> None:
        self.checks += 1
        if result.passed:
            self.passes, self.failures = self.passes + 1, 0
            if self.health == INITIAL or (self.health == UNHEALTHY and self.passes >= settings.healthy_threshold):
                self.health = HEALTHY
        else:
            self.passes, self.failures, self.failure = 0, self.failures + 1, result
            if self.health != UNHEALTHY and self.failures >= settings.unhealthy_threshold:
                self.health = UNHEALTHY

    def state(self, in_use: bool) -> tuple[str, str | None, str | None]:
        """(State, Reason, Description) as DescribeTargetHealth reports them."""
        if self.drain_until is not None:
            return DRAINING, "Target.DeregistrationInProgress", REASONS["Target.DeregistrationInProgress"]
        if not in_use:
            return UNUSED, "Target.NotInUse", REASONS["Target.NotInUse"]
        if self.health == INITIAL:
            reason = "Elb.RegistrationInProgress" if self.checks == 0 else "Elb.InitialHealthChecking"
            return INITIAL, reason, REASONS[reason]
        if self.health == UNHEALTHY:
            return UNHEALTHY, self.failure.reason, self.failure.description
        return HEALTHY, None, None


def health_row(
    instance_id: str, port: int, check_port: int | None, state: str, reason: str | None, description: str | None
) -> dict[str, Any]:
    """One TargetHealthDescription (no Reason or Description when healthy, as the API reference says)."""
    health: dict[str, Any] = {"State": state}
    if reason is not None:
        health.update(Reason=reason, Description=description or REASONS[reason])
    return {
        "Target": {"Id": instance_id, "Port": port},
        "HealthCheckPort": str(check_port or port),
        "TargetHealth": health,
    }


TargetKey = tuple[str, int]  # (instance id, port): one registration


def _routed(group: Mapping[TargetKey, _Target], in_use: bool) -> list[TargetKey]:
    """The targets requests go to: the healthy ones, or (fail open) every registered target that is
    not draining when none is healthy."""
    states = {key: t.state(in_use)[0] for key, t in group.items()}
    healthy = [key for key, state in states.items() if state == HEALTHY]
    return healthy or [key for key, state in states.items() if state in (INITIAL, UNHEALTHY)]


class LoadBalancerModel:
    """Every target group's targets and their health; health checks run in one asyncio loop thread.

    Two locks: ``_lock`` guards the targets and is held only for moments; ``_publish_lock`` is
    taken first by everything that changes the routing (and by every reader, DescribeTargetHealth
    included), and held while the data plane applies the change. So a state is never seen before
    the data plane has it: once a target reads ``healthy`` its server is ready, once it reads
    ``draining`` its server drains, once it is gone its server takes nothing."""

    def __init__(
        self,
        settings_of: SettingsReader,
        address_of: AddressOf,
        time_scale: float = 1.0,
        data_plane: DataPlane | None = None,
    ) -> None:
        self._settings_of = settings_of
        self._address_of = address_of
        self.time_scale = time_scale
        self._data_plane = data_plane
        self._groups: dict[str, dict[TargetKey, _Target]] = {}
        self._lock = threading.Lock()  # the targets
        self._publish_lock = threading.RLock()  # routing changes and readers, one at a time
        self._published: dict[str, dict[str, Server]] = {}  # what the data plane has, per group
        self._purging: set[str] = set()  # groups whose ended delays a worker thread is purging
        self.journal: list[tuple[str, str, list[TargetKey]]] = []  # (group, "register"/"deregister", targets)
        self.data_plane_errors: list[str] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None  # set (in the loop) when there may be new work
        self._tasks: set[asyncio.Task[None]] = set()

    # --- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="elb-health-checks", daemon=True)
            self._thread.start()
            self._ready.wait(10)

    def stop(self) -> None:
        """End the checks (running ones are cancelled); the data plane is its owner's to stop."""
        self._stop.set()
        self._wake_up()
        if self._thread is not None:
            self._thread.join(10)

    # --- the API actions (called through moto_bridge) ---------------------------------------------
    def register(self, group_arn: str, targets: list[tuple[str, int | None]]) -> None:
        """RegisterTargets of (instance id, port; None: the group's port): new targets start
        ``initial``; a draining one is registered again; one already registered is left as it is
        (the call is idempotent)."""
        settings = self._settings(group_arn)
        addresses = {instance_id: self._lookup(instance_id) for instance_id, _ in targets}  # before the first check
        now = time.monotonic()
        with self._publish_lock:
            with self._lock:
                group = self._groups.setdefault(group_arn, {})
                for instance_id, port in targets:
                    key = (instance_id, port or settings.port)
                    target = group.get(key)
                    if target is not None and target.drain_until is not None:
                        target.drain_until = None
                    elif target is None:
                        target = group[key] = _Target(
                            instance_id, key[1], next_check=now + settings.interval * self.time_scale
                        )
                    target.address = addresses[instance_id] or target.address
                self.journal.append((group_arn, "register", [(i, p or settings.port) for i, p in targets]))
            self._publish(group_arn, settings.in_use)
        self._wake_up()

    def deregister(self, group_arn: str, targets: list[tuple[str, int | None]]) -> None:
        """DeregisterTargets of (instance id, port; None: the group's port): registered targets
        drain for the deregistration delay; others are left alone ("If the specified target does not
        exist, the action returns successfully"), a registration on another port of the instance
        included."""
        settings = self._settings(group_arn)
        until = time.monotonic() + settings.deregistration_delay * self.time_scale
        with self._publish_lock:
            with self._lock:
                group = self._groups.get(group_arn, {})
                for instance_id, port in targets:
                    target = group.get((instance_id, port or settings.port))
                    if target is not None and target.drain_until is None:
                        target.drain_until = until
                self.journal.append((group_arn, "deregister", [(i, p or settings.port) for i, p in targets]))
                self._purge(group_arn, time.monotonic())
            self._publish(group_arn, settings.in_use)
        self._wake_up()

    def forget(self, instance_ids: list[str]) -> None:
        """Drop every target of these instances from every group at once, with no draining, and
        hand the changed groups to the data plane: no AWS action does this (the stand-in's
        ``retire``, once nothing looks at the instances again), it only ends their health checks."""
        doomed = set(instance_ids)
        with self._publish_lock:
            with self._lock:
                changed = []
                for arn, group in self._groups.items():
                    gone = [key for key in group if key[0] in doomed]
                    for key in gone:
                        del group[key]
                    if gone:
                        changed.append(arn)
            for arn in changed:
                settings = self._settings_of(arn)
                self._publish(arn, settings is not None and settings.in_use)

    def describe(self, group_arn: str, targets: list[tuple[str, int | None]] | None) -> list[dict[str, Any]]:
        """DescribeTargetHealth rows: every target (draining ones included) when ``targets`` is None,
        else one row per named (instance id, port; None: the group's port), ``unused`` /
        ``Target.NotRegistered`` when it is not registered."""
        settings = self._settings(group_arn)
        with self._publish_lock:
            with self._lock:
                purged = self._purge(group_arn, time.monotonic())
                group = self._groups.get(group_arn, {})
                named = list(group) if targets is None else [(i, p or settings.port) for i, p in targets]
                rows = []
                for instance_id, port in named:
                    target = group.get((instance_id, port))
                    state: tuple[str, str | None, str | None] = (UNUSED, "Target.NotRegistered", None)
                    if target is not None:
                        state = target.state(settings.in_use)
                    rows.append(health_row(instance_id, port, settings.check_port, *state))
            if purged:
                self._publish(group_arn, settings.in_use)
        return rows

    # --- for the stand-in and its traffic ------------------------------------------------------------
    def states(self, group_arn: str) -> dict[str, str]:
        """Instance id -> State of every target DescribeTargetHealth would list (an instance
        registered on several ports: the State of its first registration; see ``port_states``)."""
        states: dict[str, str] = {}
        for row in self.describe(group_arn, None):
            states.setdefault(row["Target"]["Id"], row["TargetHealth"]["State"])
        return states

    def port_states(self, group_arn: str) -> dict[TargetKey, str]:
        """(Instance id, port) -> State of every target DescribeTargetHealth would list."""
        rows = self.describe(group_arn, None)
        return {(row["Target"]["Id"], row["Target"]["Port"]): row["TargetHealth"]["State"] for row in rows}

    def in_service(self, group_arn: str) -> list[str]:
        """The instances the load balancer sends requests to now: those of the healthy targets, or
        (fail open) of every registered target that is not draining when none is healthy."""
        settings = self._settings(group_arn)
        with self._publish_lock:
            with self._lock:
                purged = self._purge(group_arn, time.monotonic())
                routed = _routed(self._groups.get(group_arn, {}), settings.in_use)
            if purged:
                self._publish(group_arn, settings.in_use)
        return list(dict.fromkeys(instance_id for instance_id, _ in routed))

    def groups_of(self, instance_id: str) -> list[str]:
        """ARNs of the groups in which the instance is a target, on any port (draining included)."""
        with self._lock:
            return [arn for arn, group in self._groups.items() if any(i == instance_id for i, _ in group)]

    def changes(self, group_arn: str) -> list[tuple[str, list[TargetKey]]]:
        """Every RegisterTargets and DeregisterTargets of the group, in order: ("register" or
        "deregister", the (instance id, port) targets as the call named them)."""
        with self._lock:
            return [(action, list(keys)) for arn, action, keys in self.journal if arn == group_arn]

    # --- the health checks ------------------------------------------------------------------------
    def check_due(self, now: float) -> None:
        """Start every health check due at ``now`` and drop the targets whose deregistration delay
        is over. The check loop calls it whenever something is due; called from another thread (a
        test forcing checks), it returns when those checks are done. Needs ``start()``."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("LoadBalancerModel.start() was not called")
        if threading.current_thread() is self._thread:
            self._start_due(now)
            return
        asyncio.run_coroutine_threadsafe(self._run_due(now), loop).result()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._ready.set()
        try:
            while not self._stop.is_set():
                self._wake.clear()
                self._start_due(time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.0, self._next_due() - time.monotonic()))
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._loop = None

    def _next_due(self) -> float:
        """When the loop must look again: the earliest check not under way or end of a delay (at
        most ``IDLE_WAKE`` from now)."""
        due = time.monotonic() + IDLE_WAKE
        with self._lock:
            for arn, group in self._groups.items():
                for target in group.values():
                    if not target.checking:
                        due = min(due, target.next_check)
                    if target.drain_until is not None and arn not in self._purging:  # a purge wakes it
                        due = min(due, target.drain_until)
        return due

    def _wake_up(self) -> None:
        """Have the loop look for due work now (from any thread)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has just ended
                loop.call_soon_threadsafe(wake.set)

    async def _run_due(self, now: float) -> None:
        await asyncio.gather(*self._start_due(now), return_exceptions=True)

    def _start_due(self, now: float) -> list[asyncio.Task[None]]:
        """(In the loop) start the due checks as tasks, and the purge of groups with ended delays."""
        with self._lock:
            ended = [
                arn
                for arn, group in self._groups.items()
                if arn not in self._purging
                and any(t.drain_until is not None and t.drain_until <= now for t in group.values())
            ]
            self._purging.update(ended)
            due = [
                (arn, target)
                for arn, group in self._groups.items()
                for target in group.values()
                if target.next_check <= now and not target.checking
            ]
        for arn in ended:
            self._spawn(asyncio.to_thread(self._purge_ended, arn))
        started = []
        for arn, target in due:
            settings = self._settings_of(arn)
            interval = (settings.interval if settings else 30) * self.time_scale
            with self._lock:
                target.next_check = now + interval
                if settings is None or not settings.in_use:
                    continue
                target.checking = True
            started.append(self._spawn(self._check(arn, target, settings)))
        return started

    def _spawn(self, work: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _check(self, group_arn: str, target: _Target, settings: GroupSettings) -> None:
        """One check of ``target`` and its result: recorded here when it changes nothing the data
        plane sees, else by a worker thread that also hands the change to the data plane."""
        try:
            address = self._lookup(target.instance_id) or target.address
            timeout = max(settings.timeout * self.time_scale, TIMEOUT_FLOOR)
            result = await check(address, settings.check_port or target.port, settings, timeout)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("health check of %s in %s", target.instance_id, group_arn)
            address, result = target.address, CheckResult.failed("Elb.InternalError")
        with self._lock:
            after = replace(target, address=address)
            after.record(result, settings)
            inline = self._data_plane is None or (
                (after.address, after.state(settings.in_use)[0]) == (target.address, target.state(settings.in_use)[0])
            )
            if inline:
                target.address = address
                target.record(result, settings)
                target.checking = False
        if not inline:
            await asyncio.to_thread(self._record, group_arn, target, address, result, settings)
        self._wake_up()  # a check that outlasted its interval: the next one is due now

    def _record(
        self, group_arn: str, target: _Target, address: str | None, result: CheckResult, settings: GroupSettings
    ) -> None:
        with self._publish_lock:
            with self._lock:
                target.address = address
                target.record(result, settings)
                target.checking = False
            self._publish(group_arn, settings.in_use)

    def _purge_ended(self, group_arn: str) -> None:
        settings = self._settings_of(group_arn)
        with self._publish_lock:
            with self._lock:
                self._purging.discard(group_arn)
                purged = self._purge(group_arn, time.monotonic())
            if purged:
                self._publish(group_arn, settings is not None and settings.in_use)
        self._wake_up()  # the group's other delays count again

    def _lookup(self, instance_id: str) -> str | None:
        try:
            return self._address_of(instance_id)
        except Exception:
            log.exception("address of %s", instance_id)
            return None

    # --- the data plane ---------------------------------------------------------------------------
    def _routing(self, group_arn: str, in_use: bool) -> dict[str, Server]:
        """The group's routing state (lock held): every target with a known address, and its mode."""
        group = self._groups.get(group_arn, {})
        routed = set(_routed(group, in_use))
        servers = {}
        for key, target in group.items():
            if target.address is None:
                continue
            mode = READY if key in routed else MAINT
            if target.drain_until is not None:
                mode = DRAIN
            servers[server_name(target.instance_id, target.port)] = Server(target.address, target.port, mode)
        return servers

    def _publish(self, group_arn: str, in_use: bool) -> None:
        """(Publish lock held) hand the group's routing state to the data plane, unless it has it."""
        if self._data_plane is None:
            return
        with self._lock:
            servers = self._routing(group_arn, in_use)
        if self._published.get(group_arn) == servers:
            return
        try:
            self._data_plane.apply(group_arn, servers)
        except Exception as error:
            log.exception("data plane of %s", group_arn)
            self.data_plane_errors.append(f"{group_arn}: {error!r}")
            self._published.pop(group_arn, None)
        else:
            self._published[group_arn] = servers

    def _settings(self, group_arn: str) -> GroupSettings:
        settings = self._settings_of(group_arn)
        if settings is None:
            raise KeyError(group_arn)
        return settings

    def _purge(self, group_arn: str, now: float) -> bool:
        """Drop the targets whose deregistration delay is over (lock held); whether any was."""
        group = self._groups.get(group_arn)
        if group is None:
            return False
        gone = [key for key, t in group.items() if t.drain_until is not None and t.drain_until <= now]
        for key in gone:
            del group[key]
        return bool(gone)
