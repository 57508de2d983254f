"""Shared builders for the unit tests: DeploySettings, stubbed SSM clients, fake clocks."""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from typing import Any

import boto3
from mypy_boto3_ssm.client import SSMClient

from pipe.config.build_context import BuildContext
from pipe.config.settings import DeploySettings
from pipe.model import CommandSpec

REGION = "eu-west-1"
COMMAND_ID = "0b7a4a1e-5c2f-4d8e-9a3b-1c2d3e4f5a6b"  # SSM command ids are 36-character UUIDs
INSTANCE_A = "i-0123456789abcdef0"
INSTANCE_B = "i-0fedcba9876543210"
INSTANCE_C = "i-0aaaaaaaaaaaaaaaa"

BUILD = BuildContext(
    repo="team/app",
    build_number="42",
    commit="0123456789abcdef0123",
    branch="main",
    triggerer="{11111111-2222-3333-4444-555555555555}",
    deployment_environment="production",
)


def make_settings(**overrides: Any) -> DeploySettings:
    """A valid DeploySettings; pass field=value to change any field."""
    base = DeploySettings(
        region=REGION,
        environment="production",
        static_keys=None,
        oidc_role_arn=None,
        role_arn=None,
        external_id=None,
        instance_ids=[INSTANCE_A, INSTANCE_B],
        commands="echo deploying\n./deploy.sh",
        working_directory=None,
        execution_timeout=900,
        delivery_timeout=120,
        comment="ssm-deploy team/app#42 0123456",
        secrets=[],
        variables=[],
        debug=False,
        build=BUILD,
    )
    return dataclasses.replace(base, **overrides)


def spec_for(settings: DeploySettings, script: list[str]) -> CommandSpec:
    """The deploy's CommandSpec as the phases build it from ``settings``, with ``script`` to run."""
    return CommandSpec(
        label="deploy",
        script=tuple(script),
        instance_ids=tuple(settings.instance_ids) if not settings.targets else (),
        targets=tuple(settings.targets),
        execution_timeout=settings.execution_timeout,
        delivery_timeout=settings.delivery_timeout,
        max_concurrency=settings.max_concurrency,
        max_errors=settings.max_errors,
        comment=settings.comment,
    )


@lru_cache(maxsize=1)
def _session() -> boto3.session.Session:
    # one session: its loader caches the SSM service model, so each test's client is cheap
    return boto3.session.Session(
        aws_access_key_id="AKIAUNITTESTEXAMPLE",
        aws_secret_access_key="unit-test-secret-key",
        region_name=REGION,
    )


def ssm_client() -> SSMClient:
    """A real boto3 SSM client with dummy credentials; wrap it in a botocore Stubber."""
    return _session().client("ssm", region_name=REGION)


class FakeClock:
    """A monotonic clock that only moves when ``sleep`` is called; records every sleep."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
