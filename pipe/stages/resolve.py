"""What the pipe learns about the target instances from EC2: which ones TARGETS match, and their names."""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipe.aws.errors import error_code, error_message, is_access_denied
from pipe.errors import PipeError
from pipe.model import Target

log = logging.getLogger("ssm-deploy")


def resolve_targets(ec2: Any, resource_groups: Any, targets: list[Target]) -> list[str] | None:
    """Running instances matched by ``targets`` (SSM's rules: keys AND'ed, values OR'ed).

    None when they cannot be resolved here (no permission, or a key EC2 cannot filter on): SSM
    still resolves them when the command is sent, and the agent check is then skipped.
    """
    filters: list[dict[str, Any]] = [{"Name": "instance-state-name", "Values": ["running"]}]
    instance_ids: set[str] | None = None
    try:
        for target in targets:
            if target.key.startswith("tag:") or target.key == "tag-key":
                filters.append({"Name": target.key, "Values": list(target.values)})
            elif target.key == "InstanceIds":
                instance_ids = _intersect(instance_ids, set(target.values))
            elif target.key == "resource-groups:Name":
                instance_ids = _intersect(instance_ids, _group_instances(resource_groups, target.values))
        if instance_ids is not None and not instance_ids:
            return []
        request: dict[str, Any] = {"Filters": filters}
        if instance_ids is not None:
            filters.append({"Name": "instance-id", "Values": sorted(instance_ids)})
        found = []
        for page in ec2.get_paginator("describe_instances").paginate(**request):
            for reservation in page.get("Reservations", []):
                found += [instance["InstanceId"] for instance in reservation.get("Instances", [])]
        return sorted(set(found))
    except ClientError as error:
        reason = error_message(error) if is_access_denied(error) else str(error)
        log.warning(f"Could not resolve TARGETS before sending ({reason}); the agent check is skipped.")
        return None
    except BotoCoreError as error:
        log.warning(f"Could not resolve TARGETS before sending ({error}); the agent check is skipped.")
        return None


def instance_names(ec2: Any, instance_ids: list[str]) -> dict[str, str]:
    """Name tags, used to label output lines when every name is unique; {} when unavailable."""
    names: dict[str, str] = {}
    try:
        for start in range(0, len(instance_ids), 200):
            batch = instance_ids[start : start + 200]
            pages = ec2.get_paginator("describe_instances").paginate(Filters=[{"Name": "instance-id", "Values": batch}])
            for page in pages:
                for reservation in page.get("Reservations", []):
                    for instance in reservation.get("Instances", []):
                        tags = {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}
                        if tags.get("Name"):
                            names[instance["InstanceId"]] = tags["Name"]
    except ClientError as error:
        if is_access_denied(error):
            log.warning("Output is labelled with instance ids: the deploy role lacks ec2:DescribeInstances.")
            return {}
        raise
    unique = len(set(names.values())) == len(names) == len(instance_ids)
    return names if unique else {}


def _intersect(current: set[str] | None, new: set[str]) -> set[str]:
    return new if current is None else current & new


def _group_instances(resource_groups: Any, names: tuple[str, ...]) -> set[str]:
    found: set[str] = set()
    for name in names:
        pages = resource_groups.get_paginator("list_group_resources").paginate(Group=name)
        try:
            listed = list(pages)
        except ClientError as error:
            if "NotFound" in error_code(error):
                raise PipeError(
                    f"TARGETS: nothing was sent. There is no resource group {name!r} here: check its name and region."
                ) from None
            raise
        for page in listed:
            for item in page.get("ResourceIdentifiers", []):
                arn = str(item.get("ResourceArn", ""))
                if ":instance/" in arn:
                    found.add(arn.rsplit("/", 1)[-1])
    return found
