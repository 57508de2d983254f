"""pipe.aws.authenticate: sessions renewed while they can be, and said up front when they cannot last."""

from __future__ import annotations

import base64
import datetime
import json
import logging
import re
from collections import Counter
from typing import Any
from urllib.parse import parse_qs

import boto3
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.endpoint import Endpoint
from botocore.exceptions import ClientError
from botocore.loaders import JSONFileLoader

from pipe.aws import authenticate as auth
from pipe.aws.authenticate import (
    DEFAULT_WEB_IDENTITY_SECONDS,
    FOREVER,
    MANDATORY_REFRESH_SECONDS,
    MAX_SESSION_SECONDS,
    RETRY_RENEWAL_SECONDS,
    CredentialsExpired,
    SessionLife,
    session_ended,
    token_expiry,
)
from pipe.config.settings import StaticKeys
from pipe.errors import PipeError
from pipe.runtime.redaction import Redactor
from unit.unit_support import REGION, FakeClock, make_settings

EPOCH = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)
EXPIRED = ClientError(
    {"Error": {"Code": "ExpiredTokenException", "Message": "The security token included in the request is expired"}},
    "AssumeRole",
)


def jwt(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


def metadata(ends_in: float, clock: FakeClock, key: str = "ASIAFIRST") -> dict[str, str]:
    ends = datetime.datetime.fromtimestamp(clock() + ends_in, datetime.UTC)
    return {"access_key": key, "secret_key": "s", "token": "t", "expiry_time": ends.isoformat()}


# --- the step's OIDC token -----------------------------------------------------------------------


def test_token_expiry_reads_the_exp_claim() -> None:
    assert token_expiry(jwt({"sub": "step", "exp": int(EPOCH.timestamp())})) == EPOCH


@pytest.mark.parametrize(
    "token",
    [
        "eyJhbGciOiJSUzI1NiJ9.oidc-token-value.signature",  # not base64 JSON
        "no-dots-at-all",
        jwt({"sub": "step"}),  # no exp
        jwt({"exp": True}),
        jwt({"exp": "tomorrow"}),
        jwt({"exp": 10**20}),  # beyond any calendar
    ],
)
def test_a_token_without_a_readable_exp_has_no_known_expiry(token: str) -> None:
    assert token_expiry(token) is None


# --- how long a session must last ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("needed", "token_valid_for", "asked"),
    [
        (None, None, DEFAULT_WEB_IDENTITY_SECONDS),
        (1800, None, DEFAULT_WEB_IDENTITY_SECONDS),
        (7200, None, 7200),  # no known token lifetime: ask for the whole bound
        (7200, 8000, DEFAULT_WEB_IDENTITY_SECONDS),  # the token renews the session for that long
        (7200, 600, 7200),
        (100_000, None, MAX_SESSION_SECONDS),
    ],
)
def test_the_oidc_session_asked_for_covers_the_deploy_unless_the_token_can_renew_it(
    needed: int | None, token_valid_for: int | None, asked: int
) -> None:
    token_ends = None if token_valid_for is None else auth._now() + datetime.timedelta(seconds=token_valid_for)
    assert auth._web_identity_duration(needed, token_ends) == asked


def test_a_role_that_refuses_a_long_session_gets_the_default_one() -> None:
    asked: list[int] = []
    too_long = ClientError(
        {
            "Error": {
                "Code": "ValidationError",
                "Message": "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
            }
        },
        "AssumeRoleWithWebIdentity",
    )

    def exchange(duration: int) -> dict[str, str]:
        asked.append(duration)
        if duration > DEFAULT_WEB_IDENTITY_SECONDS:
            raise too_long
        return {"expiry_time": EPOCH.isoformat()}

    assert auth._first_exchange(exchange, 7200, "arn:aws:iam::1:role/oidc")[1] == DEFAULT_WEB_IDENTITY_SECONDS
    assert asked == [7200, DEFAULT_WEB_IDENTITY_SECONDS]


def test_an_untrusted_token_is_still_a_trust_policy_problem() -> None:
    refused = ClientError({"Error": {"Code": "AccessDenied", "Message": "Not authorized"}}, "AssumeRoleWithWebIdentity")

    def exchange(duration: int) -> dict[str, str]:
        raise refused

    with pytest.raises(PipeError, match=r"AWS_OIDC_ROLE_ARN: could not assume .* trusts the Bitbucket"):
        auth._first_exchange(exchange, DEFAULT_WEB_IDENTITY_SECONDS, "arn:aws:iam::1:role/oidc")


# --- the up-front warning ------------------------------------------------------------------------


def test_a_session_that_may_end_first_is_said_up_front(caplog: pytest.LogCaptureFixture) -> None:
    life = SessionLife(auth._now() + datetime.timedelta(minutes=50), why="the OIDC session lasts until X", fix="do Y")
    with caplog.at_level(logging.WARNING, logger="ssm-deploy"):
        auth._warn_if_too_short(life, 2 * 3600)
    assert "The AWS session may end before this deploy does: the OIDC session lasts until X" in caplog.text
    assert "this deploy may take up to 2 h 0 min" in caplog.text
    assert "the pipe stops following and the command keeps running. Fix: do Y." in caplog.text


def test_nothing_is_said_when_the_session_lasts(caplog: pytest.LogCaptureFixture) -> None:
    lasting = SessionLife(auth._now() + datetime.timedelta(hours=3), why="w", fix="f")
    with caplog.at_level(logging.WARNING, logger="ssm-deploy"):
        auth._warn_if_too_short(lasting, 2 * 3600)
        auth._warn_if_too_short(FOREVER, 10 * 3600)  # long-term keys renew the role's session forever
    assert caplog.text == ""


def test_temporary_keys_are_always_said_to_be_unrenewable(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ssm-deploy"):
        auth._warn_if_too_short(auth._TEMPORARY_KEYS, 600)
    assert "AWS_SESSION_TOKEN is set: these temporary keys cannot be renewed" in caplog.text


# --- renewing a session --------------------------------------------------------------------------


class Fetches:
    """A renewal's fetch: hands out ``outcomes`` in turn (metadata, or an error to raise)."""

    def __init__(self, *outcomes: dict[str, str] | Exception) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self) -> dict[str, str]:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def renewal(fetch: Fetches, clock: FakeClock, current: dict[str, str]) -> auth._Renewal:
    return auth._Renewal(fetch, lambda error: f"could not renew ({auth._describe(error)})", current, clock)


def test_a_renewal_replaces_the_session() -> None:
    clock = FakeClock(EPOCH.timestamp())
    fresh = metadata(3600, clock, "ASIAFRESH")
    renew = renewal(Fetches(fresh), clock, metadata(600, clock))
    assert renew() == fresh


def test_a_failed_renewal_keeps_the_working_session_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(EPOCH.timestamp())
    current = metadata(600, clock)
    fetch = Fetches(EXPIRED, EXPIRED)
    renew = renewal(fetch, clock, current)
    with caplog.at_level(logging.WARNING, logger="ssm-deploy"):
        assert renew() == current
        assert renew() == current  # within RETRY_RENEWAL_SECONDS: STS is not asked again
        clock.sleep(RETRY_RENEWAL_SECONDS)
        assert renew() == current

    assert fetch.calls == 2
    assert caplog.text.count("Cannot renew the AWS session: could not renew (ExpiredTokenException") == 1
    assert "It still works until 12:10:00 UTC" in caplog.text


def test_a_session_about_to_end_that_cannot_be_renewed_raises_credentials_expired() -> None:
    clock = FakeClock(EPOCH.timestamp())
    renew = renewal(Fetches(EXPIRED), clock, metadata(MANDATORY_REFRESH_SECONDS - 1, clock))
    with pytest.raises(CredentialsExpired) as ended:
        renew()
    assert (
        str(ended.value)
        == "could not renew (ExpiredTokenException: The security token included in the request is expired)"
    )


def test_botocore_raises_the_renewal_failure_without_a_traceback_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(EPOCH.timestamp())
    first = metadata(-5, FakeClock())  # already over: botocore must renew before signing
    session = auth._renewing_session(first, renewal(Fetches(EXPIRED), clock, first), REGION, boto3.Session())
    sts = session.client("sts", region_name=REGION)
    with caplog.at_level(logging.DEBUG), pytest.raises(CredentialsExpired):
        sts.get_caller_identity()
    assert "Traceback" not in caplog.text
    assert not [record for record in caplog.records if record.exc_info]


def test_an_expired_token_error_is_a_session_that_ended() -> None:
    assert session_ended(EXPIRED)
    assert not session_ended(ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "X"))


def test_the_renewed_credentials_are_masked() -> None:
    redactor = Redactor()
    auth._metadata(
        {
            "AccessKeyId": "ASIA1",
            "SecretAccessKey": "renewed-secret",
            "SessionToken": "renewed-token",
            "Expiration": EPOCH,
        },
        redactor,
    )
    assert redactor.redact("renewed-secret renewed-token") == "**** ****"


# --- the deploy role's session -------------------------------------------------------------------

STS_XML = 'xmlns="https://sts.amazonaws.com/doc/2011-06-15/"'
CI_KEY, ROLE_KEY = "AKIACIUSER", "ASIADEPLOYROLE"
WHO = {CI_KEY: "arn:aws:iam::123456789012:user/ci", ROLE_KEY: "arn:aws:sts::123456789012:assumed-role/deploy/b42"}


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body


class FakeSts:
    """STS over HTTP: answers AssumeRole with the role's keys and GetCallerIdentity with whoever's key
    signed the request, so a session that signs with the wrong credentials shows in its identity."""

    def __init__(self) -> None:
        self.signed_by: list[tuple[str, str]] = []

    def send(self, request: Any) -> AWSResponse:
        action = parse_qs(request.body.decode() if isinstance(request.body, bytes) else request.body)["Action"][0]
        key = re.search(r"Credential=([A-Z0-9]+)/", request.headers["Authorization"].decode())
        assert key is not None
        self.signed_by.append((action, key.group(1)))
        if action == "AssumeRole":
            result = (
                f"<Credentials><AccessKeyId>{ROLE_KEY}</AccessKeyId><SecretAccessKey>role-secret</SecretAccessKey>"
                "<SessionToken>role-token</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>"
                f"<AssumedRoleUser><Arn>{WHO[ROLE_KEY]}</Arn><AssumedRoleId>AROA:b42</AssumedRoleId></AssumedRoleUser>"
            )
        else:
            result = f"<Arn>{WHO[key.group(1)]}</Arn><UserId>u</UserId><Account>123456789012</Account>"
        body = f"<{action}Response {STS_XML}><{action}Result>{result}</{action}Result></{action}Response>"
        return AWSResponse(request.url, 200, HTTPHeaders(), _Raw(body.encode()))


def test_the_role_session_signs_with_the_role_and_shares_the_base_sessions_model_files(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sts = FakeSts()
    monkeypatch.setattr(Endpoint, "_send", lambda _endpoint, request: sts.send(request))
    read: list[str] = []
    load_file = JSONFileLoader.load_file

    def counted(loader: JSONFileLoader, path: str) -> Any:
        read.append(path)
        return load_file(loader, path)

    monkeypatch.setattr(JSONFileLoader, "load_file", counted)
    settings = make_settings(
        static_keys=StaticKeys(CI_KEY, "ci-secret"), role_arn="arn:aws:iam::123456789012:role/deploy"
    )

    session, identity = auth.authenticate(settings, {}, Redactor())

    assert identity.arn == WHO[ROLE_KEY]
    assert sts.signed_by == [("GetCallerIdentity", CI_KEY), ("AssumeRole", CI_KEY), ("GetCallerIdentity", ROLE_KEY)]
    assert session.get_credentials().get_frozen_credentials().access_key == ROLE_KEY  # type: ignore[union-attr]
    twice = sorted(path for path, times in Counter(read).items() if times > 1)
    assert twice == []  # the STS model and endpoints.json are read once, for both sessions
    assert any("/sts/" in path for path in read)
