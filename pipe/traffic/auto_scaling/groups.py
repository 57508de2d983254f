"""Reading EC2 Auto Scaling groups: which groups the targeted instances belong to (DescribeAutoScalingInstances),
each group's instances with their lifecycle state, its suspended processes and target groups
(DescribeAutoScalingGroups). Reads only."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from pipe.aws.errors import error_code, error_message, is_access_denied
from pipe.config.rollout import AutoScalingChoice

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient

VARIABLE = "AUTO_SCALING_GROUPS"
# DescribeAutoScalingInstances: "InstanceIds ... Array Members: Maximum number of 50 items" (MaxRecords too)
INSTANCES_PER_CALL = 50
GROUPS_PER_CALL = 100  # DescribeAutoScalingGroups MaxRecords: at most 100
IN_SERVICE = "InService"
# Lifecycle states (Amazon EC2 Auto Scaling instance lifecycle) and what the deploy does with them:
# an instance still being launched or leaving the group is not deployed (it is not, or no longer, the
# fleet); one in Standby is running and goes back into service with ExitStandby, so it is deployed.
DEPLOYED_STATES = frozenset({IN_SERVICE, "Standby", "EnteringStandby"})
LAUNCHING_STATES = frozenset({"Pending", "Pending:Wait", "Pending:Proceed"})
LEAVING_STATES = frozenset(
    {"Terminating", "Terminating:Wait", "Terminating:Proceed", "Terminated", "Detaching", "Detached", "Quarantined"}
)


class AutoScalingError(Exception):
    """An Auto Scaling call failed: the message names the call and, for a denial, the permission."""


@dataclass(frozen=True)
class Group:
    name: str
    min_size: int
    max_size: int
    desired: int
    instances: dict[str, str]  # instance id -> lifecycle state
    suspended: frozenset[str]  # processes suspended now, by anyone
    target_group_arns: tuple[str, ...] = ()
    warm_pool: bool = False  # DescribeAutoScalingGroups' WarmPoolConfiguration: the group keeps a warm pool

    @property
    def in_service(self) -> list[str]:
        return [i for i, state in self.instances.items() if state == IN_SERVICE]


def memberships(autoscaling: AutoScalingClient, instance_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Instance id -> (its group, its lifecycle state), for those of ``instance_ids`` in a group."""
    found: dict[str, tuple[str, str]] = {}
    for start in range(0, len(instance_ids), INSTANCES_PER_CALL):
        chunk = list(instance_ids[start : start + INSTANCES_PER_CALL])
        answer = call("DescribeAutoScalingInstances", autoscaling.describe_auto_scaling_instances, InstanceIds=chunk)
        for row in answer.get("AutoScalingInstances", []):
            found[str(row["InstanceId"])] = (str(row["AutoScalingGroupName"]), str(row["LifecycleState"]))
    return found


def read_groups(autoscaling: AutoScalingClient, names: Sequence[str]) -> dict[str, Group]:
    """The named groups as they are now (a name that does not exist is missing from the answer)."""
    groups: dict[str, Group] = {}
    for start in range(0, len(names), GROUPS_PER_CALL):
        chunk = list(names[start : start + GROUPS_PER_CALL])
        for row in _pages(autoscaling, chunk):
            group = Group(
                name=str(row["AutoScalingGroupName"]),
                min_size=int(row["MinSize"]),
                max_size=int(row["MaxSize"]),
                desired=int(row["DesiredCapacity"]),
                instances={str(i["InstanceId"]): str(i["LifecycleState"]) for i in row.get("Instances", [])},
                suspended=frozenset(str(p["ProcessName"]) for p in row.get("SuspendedProcesses", [])),
                target_group_arns=tuple(str(arn) for arn in row.get("TargetGroupARNs", [])),
                warm_pool=row.get("WarmPoolConfiguration") is not None,
            )
            groups[group.name] = group
    return groups


def group_names(autoscaling: AutoScalingClient, choice: AutoScalingChoice, instance_ids: Sequence[str]) -> list[str]:
    """The groups of the rollout: those named, or (``auto``) those the instances belong to."""
    if not choice.auto:
        return list(choice.names)
    return list(dict.fromkeys(group for group, _ in memberships(autoscaling, instance_ids).values()))


def _pages(autoscaling: AutoScalingClient, names: list[str]) -> Iterator[dict[str, Any]]:
    token = ""
    while True:
        request: dict[str, object] = {"AutoScalingGroupNames": names, "MaxRecords": GROUPS_PER_CALL}
        if token:
            request["NextToken"] = token
        answer = call("DescribeAutoScalingGroups", autoscaling.describe_auto_scaling_groups, **request)
        yield from answer.get("AutoScalingGroups", [])
        token = str(answer.get("NextToken") or "")
        if not token:
            return


def call(operation: str, method: Any, **request: Any) -> dict[str, Any]:
    try:
        return dict(method(**request))
    except ClientError as error:
        raise AutoScalingError(explained(operation, error)) from None
    except BotoCoreError as error:
        raise AutoScalingError(f"{operation} failed: {error}") from None


def explained(operation: str, error: ClientError) -> str:
    if is_access_denied(error):
        return f"the deploy role may not call {operation}: allow autoscaling:{operation} ({error_message(error)})"
    return f"{operation} refused: {error_code(error)}: {error_message(error)}"
