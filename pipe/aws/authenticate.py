"""Credentials: static keys or Bitbucket OIDC, then the per-environment deploy role.

Sessions renew themselves while they can: the OIDC session by exchanging the step's OIDC token again
(Bitbucket does not document how long the token lives; its ``exp`` claim says), the deploy role's
session (at most 1 h when chained from another role, AWS's limit) by assuming the role again with the
base credentials. Static temporary keys (AWS_SESSION_TOKEN) cannot be renewed. ``authenticate`` says
up front when the session may end before the deploy's bound. A renewal that fails once the session
ends raises ``CredentialsExpired`` from inside the AWS call; the follow loop reports it like lost
contact with AWS, since the command may still be running.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError
from botocore.session import Session as CoreSession
from botocore.session import get_session

from pipe.aws.clients import client_config
from pipe.aws.errors import error_code, error_message, is_access_denied
from pipe.config.settings import DeploySettings
from pipe.errors import PipeError
from pipe.limits import ROLE_DURATION_SECONDS
from pipe.runtime.redaction import Redactor

if TYPE_CHECKING:
    from mypy_boto3_sts import STSClient

DEFAULT_WEB_IDENTITY_SECONDS = 3600  # AssumeRoleWithWebIdentity's default DurationSeconds
MAX_SESSION_SECONDS = 43200  # the longest maximum session duration a role can have (12 h)
# botocore renews a session from 15 min before it ends; a failure then keeps the old session, until
# the mandatory point, where it raises. That point is 1 min before the end, not botocore's 10, so a
# session that cannot be renewed is used nearly to its end.
ADVISORY_REFRESH_SECONDS = 15 * 60
MANDATORY_REFRESH_SECONDS = 60
RETRY_RENEWAL_SECONDS = 30  # after a failed renewal, while the old session still works
EXPIRED_CODES = frozenset({"ExpiredToken", "ExpiredTokenException"})  # AWS's "security token ... is expired"
log = logging.getLogger("ssm-deploy")


@dataclass(frozen=True)
class Identity:
    arn: str
    account: str


class CredentialsExpired(BotoCoreError):
    """The AWS session ended and could not be renewed; the message says why and how to fix it."""

    fmt = "{reason}"


@dataclass(frozen=True)
class SessionLife:
    """How long the pipe's AWS session can last, as far as the pipe can tell."""

    ends: datetime.datetime | None  # None: it does not end, or (``known`` False) the pipe cannot tell
    why: str = ""  # what ends it, as a clause: "the OIDC session lasts until ..."
    fix: str = ""  # how to make it last
    known: bool = True


FOREVER = SessionLife(None)


def authenticate(
    settings: DeploySettings, env: Mapping[str, str], redactor: Redactor, needed_seconds: int | None = None
) -> tuple[boto3.Session, Identity]:
    """Return a session for the deploy (the environment's role when ROLE_ARN is set) and who it is.

    ``needed_seconds``: how long the deploy may need AWS; the log says up front if the session may not
    last that long."""
    base, life = _base_session(settings, env, redactor, needed_seconds)
    base_sts = _sts(base, settings.region)
    caller = _identity(base_sts, "the pipe's credentials")
    if settings.role_arn is None:
        log.info(f"Authenticated as {caller.arn} (account {caller.account})")
        _warn_if_too_short(life, needed_seconds)
        return base, caller
    log.info(f"Assuming deploy role {settings.role_arn} from {caller.arn}")
    session = _assumed_role_session(base, base_sts, settings, caller, redactor, life)
    identity = _identity(_sts(session, settings.region), "the deploy role")
    log.info(f"Deploying as {identity.arn} (account {identity.account})")
    _warn_if_too_short(life, needed_seconds)  # the role's session is renewed for as long as the base lasts
    return session, identity


def session_ended(error: ClientError) -> bool:
    """Whether AWS refused a call because the session's credentials have expired."""
    return error_code(error) in EXPIRED_CODES


# --- the base credentials -------------------------------------------------------------------------


def _base_session(
    settings: DeploySettings, env: Mapping[str, str], redactor: Redactor, needed_seconds: int | None
) -> tuple[boto3.Session, SessionLife]:
    if settings.oidc_role_arn:
        token = env.get("BITBUCKET_STEP_OIDC_TOKEN", "").strip()
        if token:
            return _oidc_session(settings, token, redactor, needed_seconds)
        log.warning(
            "AWS_OIDC_ROLE_ARN is set but BITBUCKET_STEP_OIDC_TOKEN is missing: add `oidc: true` "
            "to the step to use OpenID Connect. Falling back to AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY."
        )
    keys = settings.static_keys
    if keys is not None:
        redactor.add(keys.secret_access_key)
        redactor.add(keys.session_token)
        session = boto3.Session(
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
            aws_session_token=keys.session_token,
            region_name=settings.region,
        )
        return session, (_TEMPORARY_KEYS if keys.session_token else FOREVER)
    session = boto3.Session(region_name=settings.region)
    if session.get_credentials() is None:
        raise PipeError(
            "No AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_OIDC_ROLE_ARN "
            "with `oidc: true` on the step."
        )
    return session, FOREVER  # botocore's own providers (container, instance role) renew themselves


_TEMPORARY_KEYS = SessionLife(
    None,
    why="AWS_SESSION_TOKEN is set: these temporary keys cannot be renewed, and the pipe cannot see when they expire",
    fix=(
        "issue the keys for longer than the deploy may take, or use OpenID Connect (AWS_OIDC_ROLE_ARN) "
        "or long-term keys, which the pipe renews sessions from"
    ),
    known=False,
)


def _oidc_session(
    settings: DeploySettings, token: str, redactor: Redactor, needed_seconds: int | None
) -> tuple[boto3.Session, SessionLife]:
    redactor.add(token)
    log.info("Authenticating with a OpenID Connect (OIDC) Web Identity Provider")
    exchange_session = boto3.Session()
    sts = exchange_session.client(
        "sts", region_name=settings.region, config=client_config().merge(Config(signature_version=UNSIGNED))
    )
    token_ends = token_expiry(token)
    wanted = _web_identity_duration(needed_seconds, token_ends)
    role = str(settings.oidc_role_arn)

    def exchange(duration: int) -> dict[str, str]:
        response = sts.assume_role_with_web_identity(
            RoleArn=role,
            RoleSessionName=settings.build.session_name(),
            WebIdentityToken=token,
            DurationSeconds=duration,
        )
        return _metadata(response["Credentials"], redactor)

    first, duration = _first_exchange(exchange, wanted, role)

    def explain(error: Exception) -> str:
        return (
            f"the step's OIDC token could not renew the session of AWS_OIDC_ROLE_ARN {role} ({_describe(error)}). "
            f"Fix: {_oidc_fix(role, needed_seconds)}"
        )

    session = _renewing_session(
        first, _Renewal(lambda: exchange(duration), explain, first), settings.region, exchange_session
    )
    ends = _expiry(first)
    why = f"the OIDC session lasts until {_clock(ends)}"
    if token_ends is None:
        why += " and the step's OIDC token, whose lifetime the pipe cannot read, may renew it"
    else:
        why += f"; the step's OIDC token, which renews it, is valid until {_clock(token_ends)}"
        ends = max(ends, token_ends)
    if duration < wanted:
        why += f" (AWS refused a {_length(wanted)} session: the role's maximum session duration is shorter)"
    return session, SessionLife(ends, why=why, fix=_oidc_fix(role, needed_seconds))


def _first_exchange(exchange: Callable[[int], dict[str, str]], wanted: int, role: str) -> tuple[dict[str, str], int]:
    """The first credentials and the session length they were given for: the deploy's bound when the
    role allows it, else AWS's default."""
    try:
        try:
            return exchange(wanted), wanted
        except ClientError as error:
            if wanted == DEFAULT_WEB_IDENTITY_SECONDS or "DurationSeconds" not in error_message(error):
                raise
            return exchange(DEFAULT_WEB_IDENTITY_SECONDS), DEFAULT_WEB_IDENTITY_SECONDS
    except ClientError as error:
        raise PipeError(
            f"AWS_OIDC_ROLE_ARN: could not assume {role} with the step's OIDC token "
            f"({error_code(error)}: {error_message(error)}). Check that the role trusts the Bitbucket "
            "OIDC identity provider of this workspace and that its audience and conditions match."
        ) from None
    except BotoCoreError as error:
        raise PipeError(f"Could not reach AWS STS for OIDC: {error}") from None


def _web_identity_duration(needed_seconds: int | None, token_ends: datetime.datetime | None) -> int:
    """A session as long as the deploy may need (up to AWS's 12 h), unless the step's token can renew
    it for that long; asking more than the role allows is refused, then the default is used."""
    if needed_seconds is None or needed_seconds <= DEFAULT_WEB_IDENTITY_SECONDS:
        return DEFAULT_WEB_IDENTITY_SECONDS
    if token_ends is not None and token_ends >= _now() + datetime.timedelta(seconds=needed_seconds):
        return DEFAULT_WEB_IDENTITY_SECONDS
    return min(MAX_SESSION_SECONDS, needed_seconds)


def _oidc_fix(role: str, needed_seconds: int | None) -> str:
    hours = -(-(needed_seconds or DEFAULT_WEB_IDENTITY_SECONDS) // 3600)
    return (
        f"raise the maximum session duration of {role} (IAM role settings) to at least {min(hours, 12)} h: the "
        "pipe asks AssumeRoleWithWebIdentity for a session as long as the deploy may take (DurationSeconds)"
    )


def token_expiry(token: str) -> datetime.datetime | None:
    """When a JWT's ``exp`` claim says it expires; None if it is not a JWT with one. The token is only
    read here (AWS verifies it), never logged."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    expires = claims.get("exp") if isinstance(claims, dict) else None
    if not isinstance(expires, int | float) or isinstance(expires, bool):
        return None
    try:
        return datetime.datetime.fromtimestamp(expires, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return None


# --- the deploy role ------------------------------------------------------------------------------


def _assumed_role_session(
    base: boto3.Session,
    sts: STSClient,
    settings: DeploySettings,
    caller: Identity,
    redactor: Redactor,
    base_life: SessionLife,
) -> boto3.Session:
    """The deploy role's session, renewed with ``sts``, the base session's STS client."""
    request: dict[str, Any] = {
        "RoleArn": settings.role_arn,
        "RoleSessionName": settings.build.session_name(),
        "DurationSeconds": ROLE_DURATION_SECONDS,
    }
    if settings.external_id:
        request["ExternalId"] = settings.external_id

    def assume() -> dict[str, str]:
        return _metadata(sts.assume_role(**request)["Credentials"], redactor)

    try:
        first = assume()
    except ClientError as error:
        fix = (
            f"the trust policy of {settings.role_arn} must allow sts:AssumeRole for {caller.arn}"
            + (" with this EXTERNAL_ID" if settings.external_id else "")
            + f", and {caller.arn} needs sts:AssumeRole on that role"
        )
        raise PipeError(
            f"ROLE_ARN: could not assume {settings.role_arn} ({error_code(error)}: {error_message(error)}). Fix: {fix}."
        ) from None

    def explain(error: Exception) -> str:
        reason = f"could not renew the session of the deploy role {settings.role_arn}"
        if isinstance(error, CredentialsExpired):  # the base session ended first
            return f"{reason}: {error}"
        if isinstance(error, ClientError) and session_ended(error):
            reason += f": the base credentials it is renewed with have expired ({_describe(error)})"
            return reason + (f". Fix: {base_life.fix}" if base_life.fix else "")
        return f"{reason} ({_describe(error)})"

    return _renewing_session(first, _Renewal(assume, explain, first), settings.region, base)


# --- renewing sessions ----------------------------------------------------------------------------


class _Renewal:
    """``refresh_using`` for botocore's RefreshableCredentials.

    While the session still works, a failed renewal keeps it, with one warning, and is tried again
    every RETRY_RENEWAL_SECONDS rather than at every call; once the session is about to end, the
    failure raises CredentialsExpired, whose message explains it."""

    def __init__(
        self,
        fetch: Callable[[], dict[str, str]],
        explain: Callable[[Exception], str],
        current: dict[str, str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch, self._explain, self._current, self._clock = fetch, explain, current, clock
        self._failed_at: float | None = None
        self._warned = False

    def __call__(self) -> dict[str, str]:
        now = self._clock()
        left = _expiry(self._current).timestamp() - now
        recently_failed = self._failed_at is not None and now - self._failed_at < RETRY_RENEWAL_SECONDS
        if recently_failed and left > MANDATORY_REFRESH_SECONDS:
            return self._current
        try:
            self._current, self._failed_at = self._fetch(), None
            return self._current
        except (ClientError, BotoCoreError) as error:
            reason = self._explain(error)
        if left <= MANDATORY_REFRESH_SECONDS:
            raise CredentialsExpired(reason=reason)
        self._failed_at = now
        if not self._warned:
            self._warned = True
            log.warning(
                f"Cannot renew the AWS session: {reason}. It still works until {_clock(_expiry(self._current))}; "
                "the pipe tries again until then."
            )
        return self._current


def _renewing_session(first: dict[str, str], renewal: _Renewal, region: str, source: boto3.Session) -> boto3.Session:
    """A session with credentials renewed by ``renewal``. It reads service models and endpoints.json
    through ``source``'s loader, which keeps what it has read: the STS model and endpoints.json are
    parsed once per run, not once per session. Only files are shared; credentials, config and clients
    are the new session's own."""
    _quiet_botocore_refresh_failures()
    credentials = RefreshableCredentials.create_from_metadata(
        metadata=first,
        refresh_using=renewal,
        method="sts-assume-role",
        advisory_timeout=ADVISORY_REFRESH_SECONDS,
        mandatory_timeout=MANDATORY_REFRESH_SECONDS,
    )
    core = get_session()
    core.register_component("data_loader", _data_loader(source))
    # botocore has no public setter for a session's credentials: this is what get_credentials() returns
    core._credentials = credentials  # type: ignore[attr-defined]
    return boto3.Session(botocore_session=core, region_name=region)


def _data_loader(session: boto3.Session) -> Any:
    """The botocore loader a boto3 session reads its service models with."""
    core: CoreSession = session._session  # boto3 has no public accessor for its botocore session
    return core.get_component("data_loader")


def _drop_refresh_failure(record: logging.LogRecord) -> bool:
    # botocore logs each failed renewal with its traceback; _Renewal says it once, in a sentence
    return not str(record.msg).startswith("Refreshing temporary credentials failed")


def _quiet_botocore_refresh_failures() -> None:
    logging.getLogger("botocore.credentials").addFilter(_drop_refresh_failure)  # once: filters are a set


def _metadata(credentials: Mapping[str, Any], redactor: Redactor) -> dict[str, str]:
    redactor.add(str(credentials["SecretAccessKey"]))
    redactor.add(str(credentials["SessionToken"]))
    return {
        "access_key": str(credentials["AccessKeyId"]),
        "secret_key": str(credentials["SecretAccessKey"]),
        "token": str(credentials["SessionToken"]),
        "expiry_time": credentials["Expiration"].isoformat(),
    }


# --- the up-front check ---------------------------------------------------------------------------


def _warn_if_too_short(life: SessionLife, needed_seconds: int | None) -> None:
    if needed_seconds is None or (life.known and life.ends is None):
        return
    bound = (
        f"this deploy may take up to {_length(needed_seconds)} (for each command it sends, the delivery "
        "timeout + the execution timeout + a margin)"
    )
    outcome = "If the session ends first, the pipe stops following and the command keeps running"
    if not life.known:
        log.warning(f"{life.why}; {bound}. {outcome}. Fix: {life.fix}.")
        return
    ends = life.ends
    if ends is not None and ends < _now() + datetime.timedelta(seconds=needed_seconds):
        log.warning(
            f"The AWS session may end before this deploy does: {life.why}, but {bound}. {outcome}. Fix: {life.fix}."
        )


# --- who we are -----------------------------------------------------------------------------------


def _sts(session: boto3.Session, region: str) -> STSClient:
    return session.client("sts", region_name=region, config=client_config())


def _identity(sts: STSClient, whose: str) -> Identity:
    try:
        response = sts.get_caller_identity()
    except ClientError as error:
        if error_code(error) in {"InvalidClientTokenId", "SignatureDoesNotMatch", *EXPIRED_CODES} or (
            is_access_denied(error)
        ):
            raise PipeError(
                f"AWS rejected {whose} ({error_code(error)}: {error_message(error)}). Check "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the OIDC role) and that they are active."
            ) from None
        raise
    except BotoCoreError as error:
        raise PipeError(f"Could not reach AWS STS to check {whose}: {error}") from None
    return Identity(arn=response["Arn"], account=response["Account"])


# --- wording --------------------------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _expiry(metadata: Mapping[str, str]) -> datetime.datetime:
    ends = datetime.datetime.fromisoformat(metadata["expiry_time"])
    return ends if ends.tzinfo else ends.replace(tzinfo=datetime.UTC)


def _clock(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%H:%M:%S UTC")


def _length(seconds: int) -> str:
    hours, minutes = divmod(-(-seconds // 60), 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def _describe(error: Exception) -> str:
    if isinstance(error, ClientError):
        return f"{error_code(error)}: {error_message(error)}"
    return str(error).rstrip(".")
