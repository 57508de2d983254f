"""The deploy lock: one deploy at a time per service and environment, across repositories and runs.

Bitbucket's own concurrency control covers one repository's deployment environment; this lock is a
String parameter in Parameter Store, ``/deploy-lock/<service>/<environment>`` (``pipe.config.lock``),
that every deploy of that service and environment must create before it sends anything.

Acquire. ``PutParameter`` with ``Overwrite=False`` creates the parameter or fails with
``ParameterAlreadyExists`` ("The parameter already exists. You can't create duplicate parameters",
API Reference): of several deploys creating it at once, exactly one succeeds. The value is JSON naming
the holder (the deploy role's ARN, the repository, build, build URL and commit), when it was taken,
last renewed and when it expires; nothing secret. A deploy that finds a live lock fails at once,
naming the holder's build. ``pipe/deploy.py`` takes the lock before it reads anything of the fleet
(instances, target-group health, the release ledger), so a deploy started during another one is
refused for the lock alone. A dry run changes nothing: ``check_lock`` only reads the lock and refuses
as a deploy would.

Heartbeat. The lock expires ``LOCK_EXPIRY_SECONDS`` (minutes) after it was taken or last renewed; a
daemon thread renews it every ``LOCK_RENEW_SECONDS`` while the deploy runs (``Heartbeat``), so a
deploy of any length keeps it, and the lock of a build that was killed (no release) can be taken
over minutes later, not hours. A renewal proves ownership as a takeover does (Parameter Store has no
conditional overwrite): it reads the lock and writes only if it still holds this deploy's id, then
reads the version before its write (``name:N-1``) and requires it to be this deploy's last value. A
lock found deleted, overwritten or taken over is lost: the heartbeat logs an error naming who holds
it now, stops renewing and calls ``on_lost`` (the deploy stops at its next safe point, as for
SIGTERM: two deploys must not roll out side by side). A renewal that fails (AWS unreachable,
throttled, denied) is a warning naming the expiry; the next one tries again. Each renewal adds a
version; Parameter Store keeps the 100 most recent and deletes the oldest one when a new one is
created (PutParameter API Reference, ParameterMaxVersionLimitExceeded: unless it has a label, which
the pipe never adds), so a long deploy never fills the history.

Stale takeover. A lock past its expiry belongs to a deploy that died without releasing it. Parameter
Store has no compare-and-swap on overwrite, so a takeover is made safe in two steps:

1. One taker per stale lock: the taker creates ``<lock>/takeover-<stale lock id>`` with
   ``Overwrite=False``; the others fail as for a held lock. It then re-reads the lock and goes on
   only if it still holds the stale id, and overwrites it (``Overwrite=True``).
2. A check after the write: PutParameter returns the new version, and every write to an existing
   parameter adds exactly one version ("Parameter Store automatically creates a new version",
   PutParameter API Reference, Version), so version N-1 (``GetParameter`` of ``name:N-1``, API
   Reference: "To query by parameter version, use "Name": "name:version"") is what the overwrite
   replaced. If that is not the stale lock, another deploy took the lock between the re-read and the
   write (the stale holder released it and a new deploy created it): its value is written back and
   this deploy fails as for a held lock.

Residual race: the deploy whose lock was overwritten in step 2 may end, find this deploy's id and
leave the lock in place, in the milliseconds before its value is written back; the lock then stays
until its own expiry. A takeover marker left by a taker that died mid-takeover is ignored after
``MARKER_TTL_SECONDS``. Expiry is judged by the local clock against the holder's: build machines keep
UTC by NTP (skew of seconds), and while its renewals succeed a live holder's lock always has more
than ``LOCK_EXPIRY_SECONDS - LOCK_RENEW_SECONDS`` (minutes) left. The same milliseconds-wide race
exists for a renewal: a taker's overwrite of a lock created after its re-read may meet the new
holder's renewal, and the new holder may then count its lock as lost and stop.

Release (a context manager, so it runs on every exit, errors and stops included): the heartbeat
is stopped first (after the renewal under way, if any), then the lock is deleted only if it still holds this
deploy's id (GetParameter, then DeleteParameter); DeleteParameter has no condition, so a takeover in
between, possible only once this lock had expired, would be deleted too. A release that fails is a
warning naming the exact ``aws ssm delete-parameter`` command; it never changes the deploy's verdict.
Give ``deploy_lock`` a ``release_ssm`` client on which ``stop_between_attempts`` is not registered:
it makes the renewals and the release, which must go on after a stop (the rollback and the load
balancer's registrations that follow a stop may take minutes); on the deploy's own client a stop
ends every call before SendCommand, and the lock would stay until it expires. It also makes a takeover's
calls after its overwrite (the read of what it replaced, the write back) and deletes the marker: cut there
by a stop, the takeover would end with the clean-up of a failed acquisition, which deletes a lock holding
this deploy's id, although the overwrite may have replaced another deploy's. (A stop between the attempts
of the overwrite itself, retried after an attempt that may have landed, still ends it that way: the
residual race above, narrowed further by a retry.)

Every time in a message carries its date (``2026-12-06 13:56:40 UTC``): a lock may be read on
another day than it was taken.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from botocore.exceptions import BotoCoreError, ClientError

from pipe.aws.errors import error_code, error_message, explain, is_access_denied, permission_for
from pipe.config.build_context import BuildContext, cut
from pipe.config.lock import LOCK_EXPIRY_SECONDS, LOCK_RENEW_SECONDS, LOCK_ROOT
from pipe.errors import NothingSent
from pipe.limits import PARAMETER_VALUE_STANDARD_MAX

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

log = logging.getLogger("ssm-deploy")

SUBJECT = "LOCK"
SCHEMA = 1
LOCK_DESCRIPTION = "ssm-deploy deploy lock: one deploy at a time; delete it only if its build has stopped"
MARKER_DESCRIPTION = "ssm-deploy: a deploy is taking over the stale lock above"
# A takeover takes a few calls; a marker older than a lock's expiry was left by a taker that died
# mid-way, and is ignored as a lock that old would be.
MARKER_TTL_SECONDS = LOCK_EXPIRY_SECONDS
ACTIONS = ("ssm:PutParameter", "ssm:GetParameter", "ssm:DeleteParameter")
# Caps on the free-text fields (ASCII), so a lock always fits a standard-tier value (4 KB).
FIELD_CAPS = {"holder": 600, "repo": 200, "build": 20, "build_url": 300, "commit": 64}
ALREADY_EXISTS = "ParameterAlreadyExists"
NOT_FOUND = {"ParameterNotFound", "ParameterVersionNotFound"}

Clock = Callable[[], datetime.datetime]
OnLost = Callable[[str], None]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class LockRequest:
    """What to lock, and who asks: ``holder`` is the deploy role's ARN (the caller identity)."""

    name: str
    holder: str
    build: BuildContext
    expiry_seconds: int = LOCK_EXPIRY_SECONDS  # after it was taken or last renewed


@dataclass(frozen=True)
class LockRecord:
    """One lock as the parameter holds it."""

    lock_id: str
    holder: str
    repo: str
    build_number: str
    build_url: str
    commit: str
    acquired_at: datetime.datetime
    expires_at: datetime.datetime
    renewed_at: datetime.datetime  # the last heartbeat (acquired_at until the first renewal)

    @classmethod
    def new(cls, request: LockRequest, now: datetime.datetime) -> LockRecord:
        build = request.build
        now = now.astimezone(datetime.UTC).replace(microsecond=0)  # as the value records it
        return cls(
            lock_id=str(uuid.uuid4()),
            holder=_capped(request.holder, "holder"),
            repo=_capped(build.repo, "repo"),
            build_number=_capped(build.build_number, "build"),
            build_url=_capped(build.url, "build_url"),
            commit=_capped(build.commit, "commit"),
            acquired_at=now,
            expires_at=now + datetime.timedelta(seconds=request.expiry_seconds),
            renewed_at=now,
        )

    def renewed(self, now: datetime.datetime, expiry_seconds: int) -> LockRecord:
        """The same lock (same id), renewed at ``now``."""
        now = now.astimezone(datetime.UTC).replace(microsecond=0)
        return dataclasses.replace(self, renewed_at=now, expires_at=now + datetime.timedelta(seconds=expiry_seconds))

    def to_json(self) -> str:
        document = {
            "v": SCHEMA,
            "id": self.lock_id,
            "holder": self.holder,
            "repo": self.repo,
            "build": self.build_number,
            "build_url": self.build_url,
            "commit": self.commit,
            "acquired_at": timestamp(self.acquired_at),
            "renewed_at": timestamp(self.renewed_at),
            "expires_at": timestamp(self.expires_at),
        }
        text = json.dumps(document, ensure_ascii=True, separators=(",", ":"))
        assert len(text) < PARAMETER_VALUE_STANDARD_MAX  # the caps above keep it near 1.3 KB at most
        return text

    @classmethod
    def from_json(cls, text: str) -> LockRecord:
        """The lock a parameter value holds; ValueError when the value is not one."""
        try:
            document = json.loads(text)
            if not isinstance(document, dict) or document.get("v") != SCHEMA:
                raise ValueError(f"not a lock of schema {SCHEMA}")
            fields = {key: document[key] for key in ("id", "holder", "repo", "build", "build_url", "commit")}
            if not all(isinstance(value, str) for value in fields.values()) or not fields["id"]:
                raise ValueError("a field is not a string")
            acquired_at = _parse_time(document["acquired_at"])
            # a lock written by a pipe version without the heartbeat has no renewed_at
            renewed_at = _parse_time(document["renewed_at"]) if "renewed_at" in document else acquired_at
            return cls(
                lock_id=fields["id"],
                holder=fields["holder"],
                repo=fields["repo"],
                build_number=fields["build"],
                build_url=fields["build_url"],
                commit=fields["commit"],
                acquired_at=acquired_at,
                expires_at=_parse_time(document["expires_at"]),
                renewed_at=renewed_at,
            )
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"not a lock: {error}") from None

    def describe(self) -> str:
        """``build <url> (commit 0123456, as <holder ARN>)``, for messages."""
        build = self.build_url or f"{self.repo} #{self.build_number}"
        details = [f"commit {self.commit[:7]}"] if self.commit else []
        details += [f"as {self.holder}"] if self.holder else []
        return f"build {build}" + (f" ({', '.join(details)})" if details else "")


@dataclass(frozen=True)
class LockHolding:
    """The lock this deploy holds; ``took_over`` is the stale lock it replaced, if any."""

    name: str
    record: LockRecord
    took_over: LockRecord | None = None


class LockHeld(NothingSent):
    """Another deploy holds the lock (or the lock parameter holds something unreadable)."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(SUBJECT, problem, fix)


@contextmanager
def deploy_lock(
    ssm: SSMClient,
    request: LockRequest,
    now: Clock = utc_now,
    release_ssm: SSMClient | None = None,
    on_lost: OnLost = lambda _: None,
    renew_every: float = LOCK_RENEW_SECONDS,
) -> Iterator[LockHolding]:
    """Hold the lock ``request.name`` for the ``with`` block, renewed every ``renew_every`` seconds;
    released however the block ends.

    Raises ``LockHeld`` when another deploy holds it, and ``NothingSent`` when Parameter Store refuses
    or cannot be reached. ``release_ssm`` (default ``ssm``) makes the renewals and the release: see
    the module docstring for why it should not honour stops. ``on_lost(reason)`` is called (from the
    heartbeat's thread) once the lock turns out to be someone else's."""
    releaser = release_ssm or ssm
    acquisition = _Acquisition(ssm, request, now, cleanup=releaser)
    try:
        holding = acquisition.acquire()
    except LockHeld:
        raise
    except BaseException:
        # a retried PutParameter may have created the lock before the error: never leave it behind
        _abandon(releaser, request.name, acquisition.record.lock_id)
        raise
    log.info(
        f"Lock {holding.name} taken until {when(holding.record.expires_at)}, renewed every "
        f"{renew_every:g} s while this deploy runs"
    )
    heartbeat = Heartbeat(releaser, holding, request.expiry_seconds, now, on_lost, renew_every)
    try:
        heartbeat.start()
        yield holding
    finally:
        holding = heartbeat.stop()
        if heartbeat.lost is None:  # a lost lock is someone else's: the heartbeat said so
            release(releaser, holding)


def check_lock(ssm: SSMClient, request: LockRequest, now: Clock = utc_now) -> str:
    """For a dry run, which changes nothing: refuse as a deploy would (``LockHeld`` for a live or
    unreadable lock), or say in a line of the plan what a deploy would find."""
    return _Acquisition(ssm, request, now).check()


def release(ssm: SSMClient, holding: LockHolding) -> None:
    """Delete the lock if it still holds ``holding``'s id; only ever warns."""
    name = holding.name
    try:
        current = _read(ssm, name)
        if current is None:
            log.warning(f"Lock {name} was already gone when this deploy ended (deleted by hand?)")
            return
        try:
            found = LockRecord.from_json(current[1])
        except ValueError:
            log.warning(f"Lock {name} no longer holds this deploy's lock (it holds something else): left in place")
            return
        if found.lock_id != holding.record.lock_id:
            log.warning(
                f"Lock {name} was taken over by {found.describe()} before this deploy ended "
                f"(this deploy's lock was due to expire at {when(holding.record.expires_at)}): left in place"
            )
            return
        _delete(ssm, name)
        log.info(f"Lock {name} released")
    except Exception as error:  # a release never changes the deploy's verdict (a stop included)
        reason = explain(error) if isinstance(error, ClientError) else str(error)
        log.warning(
            f"Lock {name} could not be released: {reason} It expires at {when(holding.record.expires_at)}; "
            f"to free it now: {delete_command(ssm, name)}"
        )


class LockLost(Exception):
    """The lock no longer holds this deploy's id; the message says what holds it now."""


class Heartbeat:
    """Renews a held lock every ``every`` seconds in a daemon thread, until ``stop`` or until the lock
    is lost (then ``lost`` says how, and ``on_lost`` was called). ``renew`` is one renewal, in the
    caller's thread (tests drive it with an injected clock)."""

    def __init__(
        self,
        ssm: SSMClient,
        holding: LockHolding,
        expiry_seconds: int,
        now: Clock = utc_now,
        on_lost: OnLost = lambda _: None,
        every: float = LOCK_RENEW_SECONDS,
    ) -> None:
        self.ssm = ssm
        self.holding = holding
        self.expiry_seconds = expiry_seconds
        self.now = now
        self.on_lost = on_lost
        self.every = every
        self.lost: str | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lock heartbeat {holding.name}", daemon=True)

    @property
    def name(self) -> str:
        return self.holding.name

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> LockHolding:
        """End the heartbeat (after the renewal under way, if any); the lock as last renewed."""
        self._stopping.set()
        if self.running:
            self._thread.join()
        return self.holding

    def _beat(self) -> None:
        while not self._stopping.wait(self.every):
            if not self.renew():
                return

    def renew(self) -> bool:
        """Renew once; False once the lock is lost. Never raises."""
        try:
            self.holding = dataclasses.replace(self.holding, record=self._renewed())
        except LockLost as lost:
            self.lost = str(lost)
            log.error(
                f"Lock {self.name} lost: {self.lost}. Another deploy may be running beside this one: this deploy "
                "stops at its next safe point."
            )
            self.on_lost(f"The deploy lock {self.name} was lost ({self.lost}), so the deploy was stopped")
            return False
        except Exception as error:  # AWS unreachable, throttled, denied: the next beat tries again
            reason = explain(error) if isinstance(error, ClientError) else f"{error}."
            log.warning(
                f"Lock {self.name} could not be renewed: {reason} It expires at "
                f"{when(self.holding.record.expires_at)} unless a later renewal (every {self.every:g} s) succeeds."
            )
            return True
        log.debug(f"Lock {self.name} renewed until {when(self.holding.record.expires_at)}")
        return True

    def _renewed(self) -> LockRecord:
        """Write the renewed lock if it is still ours, and prove the write replaced our own value."""
        ours = self.holding.record
        current = _read(self.ssm, self.name)
        if current is None:
            raise LockLost("it was deleted, by hand or by a deploy that took it over and ended")
        found = _lock_or_none(current[1])
        if found is None:
            raise LockLost("it now holds something this pipe did not write")
        if found.lock_id != ours.lock_id:
            raise LockLost(f"it was taken over by {found.describe()} at {when(found.acquired_at)}")
        record = ours.renewed(self.now(), self.expiry_seconds)
        response = self.ssm.put_parameter(Name=self.name, Value=record.to_json(), Type="String", Overwrite=True)
        version = int(response["Version"])
        replaced = _read(self.ssm, f"{self.name}:{version - 1}") if version > 1 else None
        if replaced is None:  # deleted between the read and the write, which created it again
            _abandon(self.ssm, self.name, ours.lock_id)
            raise LockLost("it was deleted, by hand or by a deploy that took it over and ended")
        if replaced[1] != current[1]:  # written between the read and the write: give it back
            self.ssm.put_parameter(Name=self.name, Value=replaced[1], Type="String", Overwrite=True)
            other = _lock_or_none(replaced[1])
            raise LockLost(f"it was taken over by {other.describe()}" if other else "it was overwritten")
        return record


class _Acquisition:
    """One attempt to take the lock: create it, or take a stale one over."""

    def __init__(self, ssm: SSMClient, request: LockRequest, now: Clock, cleanup: SSMClient | None = None) -> None:
        self.ssm = ssm
        # deletes the takeover marker: a client a stop does not cut short, or a stop during a takeover
        # leaves the marker, and every deploy is refused as if another one were taking the lock over
        self.cleanup = cleanup or ssm
        self.request = request
        self.now = now
        self.record = LockRecord.new(request, now())
        self.value = self.record.to_json()

    @property
    def name(self) -> str:
        return self.request.name

    def acquire(self) -> LockHolding:
        for _ in range(2):  # once more if the lock was released between our create and our read
            if self._create(self.name, self.value, LOCK_DESCRIPTION):
                return LockHolding(self.name, self.record)
            current = self._read(self.name)
            if current is not None:
                return self._settle(current[1])
        raise LockHeld(
            f"The lock {self.name} changed hands twice while this deploy tried to take it",
            "run this step again",
        )

    def _settle(self, text: str) -> LockHolding:
        """The lock exists: ours (a retried create), live (held), or stale (taken over)."""
        found = self._parse_or_held(text)
        if found.lock_id == self.record.lock_id:  # botocore retried a create that had succeeded
            return LockHolding(self.name, self.record)
        if found.expires_at > self.now():
            raise self._held(found)
        return self._take_over(found)

    def check(self) -> str:
        """A dry run's look at the lock: a live or unreadable lock refuses it (``LockHeld``)."""
        current = self._read(self.name)
        if current is None:
            return f"  lock:      {self.name} is free: the deploy takes it before reading the fleet"
        found = self._parse_or_held(current[1])
        if found.expires_at > self.now():
            raise self._held(found)
        return (
            f"  lock:      {self.name} was left by {found.describe()}, which expired at {when(found.expires_at)}: "
            "the deploy would take it over"
        )

    def _take_over(self, stale: LockRecord) -> LockHolding:
        # a parameter may have parameters below it: AWS's own public parameters do, e.g.
        # /aws/service/ecs/optimized-ami/amazon-linux-2/recommended and its sub-parameter .../image_id
        # (Amazon ECS Developer Guide, "Retrieving Amazon ECS-optimized Linux AMI metadata")
        marker = f"{self.name}/takeover-{stale.lock_id}"
        if not self._claim(marker):
            raise LockHeld(
                f"The lock {self.name} held by {stale.describe()} expired at {when(stale.expires_at)}, "
                "and another deploy is taking it over",
                f"run this step again once that deploy ends; {self._delete_hint()}",
            )
        try:
            current = self._read(self.name)
            if current is None:  # released meanwhile: a plain create again
                if self._create(self.name, self.value, LOCK_DESCRIPTION):
                    return LockHolding(self.name, self.record)
                current = self._read(self.name)
                if current is None:
                    raise LockHeld(f"The lock {self.name} changed hands while this deploy took it", "run again")
            found = self._parse_or_held(current[1])
            if found.lock_id != stale.lock_id:
                raise self._held(found)
            version = self._write(self.name, self.value, self.ssm)  # a stop before it: nothing written
            # after it, through the client a stop does not cut short: a stop before the check of what it
            # replaced or the write back would end the acquisition, and its clean-up (``_abandon``) delete the
            # lock, which holds this deploy's id but may have replaced another deploy's. Version 1: the stale
            # lock was deleted meanwhile and nobody else created one
            replaced = self._read(f"{self.name}:{version - 1}", self.cleanup) if version > 1 else None
            if replaced is not None and replaced[1] != current[1]:
                self._give_back(replaced[1])
        finally:
            self._quietly_delete(marker)
        log.warning(
            f"Lock {self.name} was stale: {stale.describe()} last renewed it at {when(stale.renewed_at)}, "
            f"it expired at {when(stale.expires_at)} and was never released (its build was killed?). Taken over."
        )
        return LockHolding(self.name, self.record, took_over=stale)

    def _give_back(self, replaced: str) -> NoReturn:
        """The overwrite replaced a lock taken after the re-read: write it back and fail as held."""
        self._write(self.name, replaced, self.cleanup)
        raise self._held(self._parse_or_held(replaced))

    def _claim(self, marker: str) -> bool:
        """Create the takeover marker; a marker left by a taker that died is replaced once."""
        note = json.dumps({"by": self.record.lock_id, "build_url": self.record.build_url, "at": timestamp(self.now())})
        if self._create(marker, note, MARKER_DESCRIPTION):
            return True
        existing = self._read(marker)
        if existing is not None and not self._abandoned(existing[1]):
            return False
        self._quietly_delete(marker)
        return self._create(marker, note, MARKER_DESCRIPTION)

    def _abandoned(self, note: str) -> bool:
        try:
            started = _parse_time(json.loads(note)["at"])
        except (ValueError, KeyError, TypeError):
            return True  # not a marker this pipe wrote
        return (self.now() - started).total_seconds() > MARKER_TTL_SECONDS

    # --- messages ------------------------------------------------------------------------------

    def _parse_or_held(self, text: str) -> LockRecord:
        try:
            return LockRecord.from_json(text)
        except ValueError as error:
            raise LockHeld(
                f"The lock {self.name} exists but holds no lock this pipe wrote ({error}), so it counts as held",
                f"if no deploy of this service and environment is running, {self._delete_hint()}",
            ) from None

    def _held(self, holder: LockRecord) -> LockHeld:
        renewed = f", last renewed at {when(holder.renewed_at)}" if holder.renewed_at != holder.acquired_at else ""
        return LockHeld(
            f"Another deploy holds the lock {self.name}: {holder.describe()}, since {when(holder.acquired_at)}"
            f"{renewed}; it expires at {when(holder.expires_at)} unless that deploy renews it",
            "wait for that deploy to end and run this step again (a killed build's lock expires by itself "
            f"{self.request.expiry_seconds // 60} min after its last renewal); if that build is known to have "
            f"stopped, {self._delete_hint()}",
        )

    def _delete_hint(self) -> str:
        return f"free the lock with: {delete_command(self.ssm, self.name)}"

    # --- Parameter Store -----------------------------------------------------------------------

    def _create(self, name: str, value: str, description: str) -> bool:
        """PutParameter without overwrite: True if this call created ``name``."""
        try:
            self.ssm.put_parameter(
                Name=name, Value=value, Type="String", Tier="Standard", Overwrite=False, Description=description
            )
        except ClientError as error:
            if error_code(error) == ALREADY_EXISTS:
                return False
            raise self._refused(error, name) from None
        except BotoCoreError as error:
            raise self._unreachable(error) from None
        return True

    def _write(self, name: str, value: str, ssm: SSMClient) -> int:
        """PutParameter with overwrite, through ``ssm``; the new version."""
        try:
            response = ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)
        except ClientError as error:
            raise self._refused(error, name) from None
        except BotoCoreError as error:
            raise self._unreachable(error) from None
        return int(response["Version"])

    def _read(self, name: str, ssm: SSMClient | None = None) -> tuple[int, str] | None:
        """GetParameter through ``ssm`` (default: the deploy's client, which a stop cuts short)."""
        try:
            return _read(ssm or self.ssm, name)
        except ClientError as error:
            raise self._refused(error, name.split(":")[0]) from None
        except BotoCoreError as error:
            raise self._unreachable(error) from None

    def _quietly_delete(self, name: str) -> None:
        try:
            _delete(self.cleanup, name)
        except (ClientError, BotoCoreError) as error:
            log.warning(f"Could not delete {name}: {error}. To delete it: {delete_command(self.ssm, name)}")

    def _refused(self, error: ClientError, name: str) -> NothingSent:
        action = permission_for(error.operation_name)
        code, message = error_code(error), error_message(error)
        if is_access_denied(error):
            return NothingSent(
                SUBJECT,
                f"The deploy role may not use {action} on {parameter_arn(self.ssm, self.request.holder, name)} "
                f"({code}: {message})",
                f"allow {', '.join(ACTIONS)} on {parameter_arn(self.ssm, self.request.holder, LOCK_ROOT)}/*",
            )
        return NothingSent(
            SUBJECT, f"Parameter Store refused {error.operation_name} on {name} ({code}: {message})", "run again"
        )

    def _unreachable(self, error: BotoCoreError) -> NothingSent:
        return NothingSent(SUBJECT, f"Parameter Store could not be reached to take the lock {self.name} ({error})")


def _lock_or_none(text: str) -> LockRecord | None:
    try:
        return LockRecord.from_json(text)
    except ValueError:
        return None


def _abandon(ssm: SSMClient, name: str, lock_id: str) -> None:
    """After a failed acquisition: delete the lock if a retried create made it ours. Quiet."""
    with suppress(Exception):
        current = _read(ssm, name)
        if current is not None and LockRecord.from_json(current[1]).lock_id == lock_id:
            _delete(ssm, name)


def _read(ssm: SSMClient, name: str) -> tuple[int, str] | None:
    """(version, value) of ``name`` (which may carry a ``:version`` selector), or None if absent."""
    try:
        parameter = ssm.get_parameter(Name=name)["Parameter"]
    except ClientError as error:
        if error_code(error) in NOT_FOUND:
            return None
        raise
    return int(parameter.get("Version", 0)), str(parameter.get("Value", ""))


def _delete(ssm: SSMClient, name: str) -> None:
    try:
        ssm.delete_parameter(Name=name)
    except ClientError as error:
        if error_code(error) not in NOT_FOUND:
            raise


# --- formatting ------------------------------------------------------------------------------------


def timestamp(moment: datetime.datetime) -> str:
    """UTC ISO 8601 to the second, e.g. 2026-12-01T21:50:33Z: the lock's value."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def when(moment: datetime.datetime) -> str:
    """``2026-12-06 13:56:40 UTC``: every time in a message, with its date."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def delete_command(ssm: Any, name: str) -> str:
    region = getattr(getattr(ssm, "meta", None), "region_name", None)
    return f"aws ssm delete-parameter --name {name}" + (f" --region {region}" if region else "")


def parameter_arn(ssm: Any, holder: str, name: str) -> str:
    """``arn:<partition>:ssm:<region>:<account>:parameter/<name>``: partition and account from the
    holder's ARN (``arn:aws:sts::<account>:assumed-role/...``), ``*`` where unknown."""
    parts = holder.split(":")
    partition, account = (parts[1], parts[4]) if len(parts) > 5 and parts[0] == "arn" else ("aws", "*")
    region = getattr(getattr(ssm, "meta", None), "region_name", None) or "*"
    return f"arn:{partition}:ssm:{region}:{account or '*'}:parameter/{name.lstrip('/')}"


def _capped(text: str, field: str) -> str:
    ascii_text = text.encode("ascii", "replace").decode("ascii")
    return cut(ascii_text, FIELD_CAPS[field]).replace("…", "~")


def _parse_time(text: object) -> datetime.datetime:
    if not isinstance(text, str):
        raise ValueError("a time is not a string")
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no time zone")
    return moment
