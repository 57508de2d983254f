"""The deploy's boto3 clients and their retry settings: typed, built on first use."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_elbv2 import ElasticLoadBalancingv2Client
    from mypy_boto3_logs import CloudWatchLogsClient
    from mypy_boto3_resource_groups import ResourceGroupsClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_ssm import SSMClient


DEFAULT_MAX_ATTEMPTS = 10


def client_config() -> Config:
    """Adaptive retries back off on throttling (Rate exceeded) and on connection errors.

    boto3's standard AWS_MAX_ATTEMPTS (attempts in all, the first included) and AWS_RETRY_MODE
    environment variables tune them. SendCommand is retried only when it cannot have run: see
    ``pipe.apply.send.forbid_unsafe_retries``.
    """
    attempts_text = os.environ.get("AWS_MAX_ATTEMPTS", "").strip()
    attempts = DEFAULT_MAX_ATTEMPTS
    if re.fullmatch(r"[0-9]{1,3}", attempts_text) and int(attempts_text) > 0:
        attempts = int(attempts_text)
    mode: Literal["legacy", "standard", "adaptive"] = "adaptive"
    if os.environ.get("AWS_RETRY_MODE") in ("legacy", "standard"):
        mode = "standard" if os.environ.get("AWS_RETRY_MODE") == "standard" else "legacy"
    return Config(
        # total_max_attempts counts the first attempt, as AWS_MAX_ATTEMPTS does; Config's max_attempts
        # counts retries only, so it made AWS_MAX_ATTEMPTS=1 two attempts
        retries={"mode": mode, "total_max_attempts": attempts},
        connect_timeout=10,
        read_timeout=30,
        user_agent_extra="ssm-deploy",
    )


class Clients:
    """One client per service for the deploy role's session. ``prepare`` runs on each new client
    (e.g. to honour a stop between retry attempts). A client's service model costs memory (EC2's is
    ~17 MB), so none is built before it is first used."""

    def __init__(self, session: boto3.Session, region: str, prepare: Callable[[Any], None] = lambda _: None) -> None:
        self.session = session
        self.region = region
        self._prepare = prepare

    def _make(self, service: str) -> Any:
        client = self.session.client(service, region_name=self.region, config=client_config())  # type: ignore[call-overload]
        self._prepare(client)
        return client

    @cached_property
    def ssm(self) -> SSMClient:
        return self._make("ssm")  # type: ignore[no-any-return]

    @cached_property
    def ec2(self) -> EC2Client:
        return self._make("ec2")  # type: ignore[no-any-return]

    @cached_property
    def logs(self) -> CloudWatchLogsClient:
        return self._make("logs")  # type: ignore[no-any-return]

    @cached_property
    def elbv2(self) -> ElasticLoadBalancingv2Client:
        return self._make("elbv2")  # type: ignore[no-any-return]

    @cached_property
    def autoscaling(self) -> AutoScalingClient:
        return self._make("autoscaling")  # type: ignore[no-any-return]

    @cached_property
    def cloudwatch(self) -> CloudWatchClient:
        return self._make("cloudwatch")  # type: ignore[no-any-return]

    @cached_property
    def live_tail(self) -> CloudWatchLogsClient:
        """CloudWatch Logs for StartLiveTail, asked once per attempt: the SDKs retry LimitExceededException
        (every Live Tail session of the account in use) as throttling, which only burns StartLiveTail's
        5 TPS and delays the fallback; the pipe decides itself when to try again."""
        config = client_config().merge(Config(retries={"mode": "standard", "total_max_attempts": 1}))
        client = self.session.client("logs", region_name=self.region, config=config)
        self._prepare(client)
        return client

    @cached_property
    def s3(self) -> S3Client:
        return self._make("s3")  # type: ignore[no-any-return]

    @cached_property
    def resource_groups(self) -> ResourceGroupsClient:
        return self._make("resource-groups")  # type: ignore[no-any-return]
