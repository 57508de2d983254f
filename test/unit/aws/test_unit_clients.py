"""pipe.aws.clients.client_config: AWS_MAX_ATTEMPTS counts attempts, the first one included."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError

from pipe.aws.clients import DEFAULT_MAX_ATTEMPTS, client_config

URL = "https://ssm.eu-west-1.amazonaws.com/"


def attempts_against_a_dead_endpoint() -> int:
    """How many times a client made with client_config() tries a call whose connection never opens."""
    session = boto3.Session(aws_access_key_id="AKIAUNITTESTEXAMPLE", aws_secret_access_key="unit-test-secret-key")
    client = session.client("ssm", region_name="eu-west-1", config=client_config())
    attempts: list[str] = []

    def refuse(**_: Any) -> None:
        attempts.append("attempt")
        raise EndpointConnectionError(endpoint_url=URL)

    client.meta.events.register("before-send.ssm", refuse)
    with pytest.raises(EndpointConnectionError):
        client.describe_instance_information()
    return len(attempts)


@pytest.mark.parametrize("attempts", ["1", "2"])
def test_aws_max_attempts_is_the_number_of_attempts(monkeypatch: pytest.MonkeyPatch, attempts: str) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", attempts)
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    assert attempts_against_a_dead_endpoint() == int(attempts)


def test_the_default_is_ten_attempts_in_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    retries: Any = getattr(client_config(), "retries")  # noqa: B009 # not in botocore-stubs' Config
    assert retries == {"mode": "adaptive", "total_max_attempts": DEFAULT_MAX_ATTEMPTS}
