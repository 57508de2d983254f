"""The deploy's boto3 clients: typed, built on first use, all with the pipe's retry settings."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

import boto3

from pipe.aws.errors import client_config

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_logs import CloudWatchLogsClient
    from mypy_boto3_resource_groups import ResourceGroupsClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_ssm import SSMClient


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
    def s3(self) -> S3Client:
        return self._make("s3")  # type: ignore[no-any-return]

    @cached_property
    def resource_groups(self) -> ResourceGroupsClient:
        return self._make("resource-groups")  # type: ignore[no-any-return]
