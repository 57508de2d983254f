"""The deploy lock: one deploy at a time per service and environment, across repositories and runs.

Bitbucket's own concurrency control covers one repository's deployment environment; this lock is a
String parameter in Parameter Store, ``/deploy-lock/<service>/<environment>`` (``pipe.config.lock``),
that every deploy of that service and environment must create before it sends anything.

Acquire. ``PutParameter`` with ``Overwrite=False`` creates the parameter or fails with
``ParameterAlreadyExists`` ("The parameter already exists. You can't create duplicate parameters",
API Reference): of several deploys creating it at once, exactly one succeeds. The value is JSON naming
the holder (the deploy role's ARN, the repository, build, build URL and commit) and when the lock
expires; nothing secret. A deploy that finds a live lock fails at once, naming the holder's build.

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
UTC by NTP, and a TTL of minutes dwarfs any skew.

Release (a context manager, so it runs on every exit, errors and stops included): the lock is
deleted only if it still holds this deploy's id (GetParameter, then DeleteParameter); DeleteParameter
has no condition, so a takeover in between, possible only once this lock had expired, would be
deleted too. A release that fails is a warning naming the exact ``aws ssm delete-parameter`` command;
it never changes the deploy's verdict. Give ``deploy_lock`` a ``release_ssm`` client on which
``stop_between_attempts`` is not registered: on the deploy's own client a stop ends every call
before SendCommand, the release's included, and the lock would stay until it expires.
"""

from __future__ import annotations

import datetime
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from botocore.exceptions import BotoCoreError, ClientError

from pipe.aws.errors import error_code, error_message, explain, is_access_denied, permission_for
from pipe.config.build_context import BuildContext, cut
from pipe.config.lock import LOCK_ROOT
from pipe.errors import NothingSent
from pipe.limits import PARAMETER_VALUE_STANDARD_MAX

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

log = logging.getLogger("ssm-deploy")

SUBJECT = "LOCK"
SCHEMA = 1
LOCK_DESCRIPTION = "ssm-deploy deploy lock: one deploy at a time; delete it only if its build has stopped"
MARKER_DESCRIPTION = "ssm-deploy: a deploy is taking over the stale lock above"
# A takeover takes a few calls; a marker older than this was left by a taker that died mid-way.
MARKER_TTL_SECONDS = 300
ACTIONS = ("ssm:PutParameter", "ssm:GetParameter", "ssm:DeleteParameter")
# Caps on the free-text fields (ASCII), so a lock always fits a standard-tier value (4 KB).
FIELD_CAPS = {"holder": 600, "repo": 200, "build": 20, "build_url": 300, "commit": 64}
ALREADY_EXISTS = "ParameterAlreadyExists"
NOT_FOUND = {"ParameterNotFound", "ParameterVersionNotFound"}

Clock = Callable[[], datetime.datetime]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class LockRequest:
    """What to lock, and who asks: ``holder`` is the deploy role's ARN (the caller identity)."""

    name: str
    holder: str
    build: BuildContext
    ttl_seconds: int


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
            expires_at=now + datetime.timedelta(seconds=request.ttl_seconds),
        )

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
            return cls(
                lock_id=fields["id"],
                holder=fields["holder"],
                repo=fields["repo"],
                build_number=fields["build"],
                build_url=fields["build_url"],
                commit=fields["commit"],
                acquired_at=_parse_time(document["acquired_at"]),
                expires_at=_parse_time(document["expires_at"]),
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
    ssm: SSMClient, request: LockRequest, now: Clock = utc_now, release_ssm: SSMClient | None = None
) -> Iterator[LockHolding]:
    """Hold the lock ``request.name`` for the ``with`` block; released however the block ends.

    Raises ``LockHeld`` when another deploy holds it, and ``NothingSent`` when Parameter Store refuses
    or cannot be reached. ``release_ssm`` (default ``ssm``) makes the release calls: see the module
    docstring for why it should not honour stops."""
    releaser = release_ssm or ssm
    acquisition = _Acquisition(ssm, request, now)
    try:
        holding = acquisition.acquire()
    except LockHeld:
        raise
    except BaseException:
        # a retried PutParameter may have created the lock before the error: never leave it behind
        _abandon(releaser, request.name, acquisition.record.lock_id)
        raise
    log.info(f"Lock {holding.name} taken (until {clock_time(holding.record.expires_at)})")
    try:
        yield holding
    finally:
        release(releaser, holding)


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
                f"(this deploy's lock was due to expire at {timestamp(holding.record.expires_at)}): left in place"
            )
            return
        _delete(ssm, name)
        log.info(f"Lock {name} released")
    except Exception as error:  # a release never changes the deploy's verdict (a stop included)
        reason = explain(error) if isinstance(error, ClientError) else str(error)
        log.warning(
            f"Lock {name} could not be released: {reason} It expires at {timestamp(holding.record.expires_at)}; "
            f"to free it now: {delete_command(ssm, name)}"
        )


class _Acquisition:
    """One attempt to take the lock: create it, or take a stale one over."""

    def __init__(self, ssm: SSMClient, request: LockRequest, now: Clock) -> None:
        self.ssm = ssm
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

    def _take_over(self, stale: LockRecord) -> LockHolding:
        # a parameter may have parameters below it: AWS's own public parameters do, e.g.
        # /aws/service/ecs/optimized-ami/amazon-linux-2/recommended and its sub-parameter .../image_id
        # (Amazon ECS Developer Guide, "Retrieving Amazon ECS-optimized Linux AMI metadata")
        marker = f"{self.name}/takeover-{stale.lock_id}"
        if not self._claim(marker):
            raise LockHeld(
                f"The lock {self.name} held by {stale.describe()} expired at {timestamp(stale.expires_at)}, "
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
            version = self._write(self.name, self.value)
            # version 1: the stale lock was deleted meanwhile and nobody else created one
            replaced = self._read(f"{self.name}:{version - 1}") if version > 1 else None
            if replaced is not None and replaced[1] != current[1]:
                self._give_back(replaced[1])
        finally:
            self._quietly_delete(marker)
        log.warning(
            f"Lock {self.name} was stale: {stale.describe()} held it until {timestamp(stale.expires_at)} "
            "and never released it (its build stopped?). Taken over."
        )
        return LockHolding(self.name, self.record, took_over=stale)

    def _give_back(self, replaced: str) -> NoReturn:
        """The overwrite replaced a lock taken after the re-read: write it back and fail as held."""
        self._write(self.name, replaced)
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
        return LockHeld(
            f"Another deploy holds the lock {self.name}: {holder.describe()}, since "
            f"{timestamp(holder.acquired_at)} and until {timestamp(holder.expires_at)}",
            f"wait for that deploy to end and run this step again; if that build is known to have stopped, "
            f"{self._delete_hint()}",
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

    def _write(self, name: str, value: str) -> int:
        """PutParameter with overwrite; the new version."""
        try:
            response = self.ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)
        except ClientError as error:
            raise self._refused(error, name) from None
        except BotoCoreError as error:
            raise self._unreachable(error) from None
        return int(response["Version"])

    def _read(self, name: str) -> tuple[int, str] | None:
        try:
            return _read(self.ssm, name)
        except ClientError as error:
            raise self._refused(error, name.split(":")[0]) from None
        except BotoCoreError as error:
            raise self._unreachable(error) from None

    def _quietly_delete(self, name: str) -> None:
        try:
            _delete(self.ssm, name)
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
    """UTC ISO 8601 to the second, e.g. 2026-12-01T21:50:33Z."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clock_time(moment: datetime.datetime) -> str:
    """``12:34:56 UTC``, for the progress line."""
    return moment.astimezone(datetime.UTC).strftime("%H:%M:%S UTC")


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
