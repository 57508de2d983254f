"""Look-ups about managed instances that several stages share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pipe.limits import DESCRIBE_FILTER_BATCH

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient


def ping_statuses(ssm: SSMClient, instance_ids: Sequence[str]) -> dict[str, str]:
    """The SSM Agent's PingStatus per managed instance; an id that is absent is not managed by SSM."""
    statuses: dict[str, str] = {}
    for start in range(0, len(instance_ids), DESCRIBE_FILTER_BATCH):
        batch = list(instance_ids[start : start + DESCRIBE_FILTER_BATCH])
        pages = ssm.get_paginator("describe_instance_information").paginate(
            Filters=[{"Key": "InstanceIds", "Values": batch}]
        )
        for page in pages:
            for info in page.get("InstanceInformationList", []):
                statuses[info["InstanceId"]] = info.get("PingStatus", "Unknown")
    return statuses
