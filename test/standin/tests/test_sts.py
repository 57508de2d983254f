"""The stand-in's STS sessions end as AWS's do: expired session keys and web identity tokens are refused."""

from __future__ import annotations

import base64
import datetime
import json
import time
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from standin import StandIn

ROLE = "arn:aws:iam::123456789012:role/standin-sts"


def jwt(**claims: Any) -> str:
    """An unsigned JWT with ``claims`` (the stand-in, like moto, checks no signature)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'kid': 'standin'})}.{part(claims)}.c2ln"


def session_client(standin: StandIn, credentials: dict[str, Any], service: str = "sts") -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=standin.endpoint,
        region_name=standin.region,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        config=Config(retries={"total_max_attempts": 1}),
    )


def assume(standin: StandIn, duration: int = 3600) -> dict[str, Any]:
    credentials: dict[str, Any] = standin.client("sts").assume_role(
        RoleArn=ROLE, RoleSessionName="standin-sts", DurationSeconds=duration
    )["Credentials"]
    return credentials


def web_identity(standin: StandIn, token: str) -> dict[str, Any]:
    sts = boto3.client(
        "sts", endpoint_url=standin.endpoint, region_name=standin.region, config=Config(signature_version=UNSIGNED)
    )
    response = sts.assume_role_with_web_identity(RoleArn=ROLE, RoleSessionName="standin-oidc", WebIdentityToken=token)
    return dict(response["Credentials"])


def test_sessions_last_as_long_as_asked(standin: StandIn) -> None:
    credentials = assume(standin, duration=1800)
    left = credentials["Expiration"] - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(minutes=29) < left <= datetime.timedelta(minutes=30)
    assert session_client(standin, credentials).get_caller_identity()["Arn"].endswith("/standin-sts")


def test_short_sessions_end_and_then_every_service_refuses_their_keys(standin: StandIn) -> None:
    with standin.short_sessions(1):
        credentials = assume(standin)
    assert credentials["Expiration"] - datetime.datetime.now(datetime.UTC) <= datetime.timedelta(seconds=1)
    time.sleep(1.5)

    for service, call in (("sts", "get_caller_identity"), ("ssm", "describe_instance_information")):
        with pytest.raises(ClientError) as refused:
            getattr(session_client(standin, credentials, service), call)()
        assert refused.value.response["Error"]["Code"] == "ExpiredTokenException"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert refused.value.response["Error"]["Message"] == "The security token included in the request is expired"
    assert standin.client("sts").get_caller_identity()["Account"]  # long-term keys never expire


def test_an_expired_web_identity_token_is_refused(standin: StandIn) -> None:
    with pytest.raises(ClientError) as refused:
        web_identity(standin, jwt(sub="step", exp=int(time.time()) - 5))
    assert refused.value.response["Error"]["Code"] == "ExpiredTokenException"


def test_a_valid_web_identity_token_or_one_that_is_no_jwt_is_exchanged(standin: StandIn) -> None:
    assert web_identity(standin, jwt(sub="step", exp=int(time.time()) + 300))["AccessKeyId"].startswith("ASIA")
    assert web_identity(standin, "not-a-jwt")["AccessKeyId"].startswith("ASIA")


def test_an_expired_session_is_refused_at_once(standin: StandIn) -> None:
    keys = standin.temporary_keys()
    sts = boto3.client(
        "sts",
        endpoint_url=standin.endpoint,
        region_name=standin.region,
        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=keys["AWS_SESSION_TOKEN"],
    )
    assert sts.get_caller_identity()["Arn"].endswith("/ci-temporary")
    standin.expire_session(keys["AWS_ACCESS_KEY_ID"])
    with pytest.raises(ClientError, match="ExpiredTokenException"):
        sts.get_caller_identity()


def test_a_session_longer_than_the_roles_maximum_is_refused(standin: StandIn) -> None:
    role = standin.create_role("standin-max-session")  # IAM's default maximum: 1 h
    sts = standin.client("sts")
    with pytest.raises(ClientError) as refused:
        sts.assume_role(RoleArn=role, RoleSessionName="long", DurationSeconds=7200)
    assert refused.value.response["Error"]["Code"] == "ValidationError"
    assert "DurationSeconds exceeds the MaxSessionDuration" in refused.value.response["Error"]["Message"]
    assert sts.assume_role(RoleArn=role, RoleSessionName="hour", DurationSeconds=3600)["Credentials"]
