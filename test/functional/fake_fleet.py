"""Fake EC2, SSM, Resource Groups and CloudWatch clients for in-process tests of the plan step: a fleet
of instances with tags and agents, Parameter Store parameters (the release ledger's history too) and
alarms. Every call is recorded by its API name, so a test can check that the plan step only reads;
any operation can be refused as a denial. Only the calls the pipe makes are implemented, with the
answers the API reference documents (GetParametersByPath without Recursive: the parameters directly
under the path; GetParameterHistory of a missing parameter: ParameterNotFound)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

ACCOUNT = "123456789012"
READS = ("Describe", "Get", "List")  # the API's read-only verbs


@dataclass
class FakeInstance:
    tags: dict[str, str] = field(default_factory=dict)
    ping: str | None = "Online"  # the SSM Agent's PingStatus; None: not managed by SSM
    state: str = "running"
    address: str | None = None  # its private IPv4 address (None: none given)
    vpc: str = "vpc-0123456789abcdef0"


@dataclass
class FakeFleet:
    instances: dict[str, FakeInstance] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)  # name -> value
    history: dict[str, list[str]] = field(default_factory=dict)  # parameter name -> values, oldest first
    alarms: dict[str, str] = field(default_factory=dict)  # name -> StateValue
    groups: dict[str, list[str]] = field(default_factory=dict)  # resource group name -> instance ids
    denied: set[str] = field(default_factory=set)  # API names refused as AccessDenied
    calls: list[str] = field(default_factory=list)

    def client(self, service: str) -> FakeClient:
        return FakeClient(self, service)

    def changes(self) -> list[str]:
        """Every call made that is not a read."""
        return [call for call in self.calls if not call.startswith(READS)]

    # --- the calls, by API name ------------------------------------------------------------------------
    def call(self, service: str, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(operation)
        if operation in self.denied:
            message = f"User: deployer is not authorized to perform: {service}:{operation}"
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": message}}, operation)
        answer: Callable[[dict[str, Any]], dict[str, Any]] = getattr(self, f"_{operation}")
        return answer(request)

    def _DescribeInstances(self, request: dict[str, Any]) -> dict[str, Any]:
        found = [
            _described(i, instance)
            for i, instance in self.instances.items()
            if all(_matches(i, instance, f["Name"], f["Values"]) for f in request.get("Filters", []))
        ]
        return {"Reservations": [{"Instances": found}] if found else []}

    def _ListGroupResources(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["Group"]
        if name not in self.groups:
            raise ClientError({"Error": {"Code": "NotFoundException", "Message": name}}, "ListGroupResources")
        arns = [f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/{i}" for i in self.groups[name]]
        return {"ResourceIdentifiers": [{"ResourceArn": arn} for arn in arns]}

    def _DescribeInstanceInformation(self, request: dict[str, Any]) -> dict[str, Any]:
        filters = {f["Key"]: f["Values"] for f in request.get("Filters", [])}
        rows = [
            {"InstanceId": i, "PingStatus": instance.ping, "ResourceType": "EC2Instance"}
            for i, instance in self.instances.items()
            if instance.ping is not None and i in filters.get("InstanceIds", [i])
        ]
        if "ResourceType" in filters:  # hybrid nodes only: this fleet has none
            rows = []
        return {"InstanceInformationList": rows}

    def _ListCommands(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"Commands": []}

    def _ListCommandInvocations(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"CommandInvocations": []}

    def _GetCommandInvocation(self, request: dict[str, Any]) -> dict[str, Any]:
        raise ClientError({"Error": {"Code": "InvocationDoesNotExist", "Message": ""}}, "GetCommandInvocation")

    def _GetParameters(self, request: dict[str, Any]) -> dict[str, Any]:
        names = request["Names"]
        return {
            "Parameters": [{"Name": n, "Value": self.parameters[n]} for n in names if n in self.parameters],
            "InvalidParameters": [n for n in names if n not in self.parameters],
        }

    def _GetParametersByPath(self, request: dict[str, Any]) -> dict[str, Any]:
        path = request["Path"].rstrip("/") + "/"
        under = {n: v for n, v in self.parameters.items() if n.startswith(path) and "/" not in n[len(path) :]}
        return {"Parameters": [{"Name": n, "Value": v} for n, v in under.items()]}

    def _GetParameterHistory(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["Name"]
        if name not in self.history:
            raise ClientError({"Error": {"Code": "ParameterNotFound", "Message": name}}, "GetParameterHistory")
        versions = [{"Version": n, "Value": v} for n, v in enumerate(self.history[name], 1)]
        return {"Parameters": versions}

    def _DescribeAlarms(self, request: dict[str, Any]) -> dict[str, Any]:
        rows = [{"AlarmName": n, "StateValue": self.alarms[n]} for n in request["AlarmNames"] if n in self.alarms]
        return {"MetricAlarms": rows, "CompositeAlarms": []}


class FakeClient:
    """One service's client: ``describe_instances(...)`` and ``get_paginator("describe_instances")``
    both answer from the fleet, in one page."""

    def __init__(self, fleet: FakeFleet, service: str) -> None:
        self.fleet = fleet
        self.service = service

    def get_paginator(self, operation: str) -> _Paginator:
        return _Paginator(self, operation)

    def __getattr__(self, operation: str) -> Callable[..., dict[str, Any]]:
        api_name = "".join(part.capitalize() for part in operation.split("_"))
        return lambda **request: self.fleet.call(self.service, api_name, request)


@dataclass
class _Paginator:
    client: FakeClient
    operation: str

    def paginate(self, **request: Any) -> Iterator[dict[str, Any]]:
        request.pop("PaginationConfig", None)
        yield getattr(self.client, self.operation)(**request)


def _described(instance_id: str, instance: FakeInstance) -> dict[str, Any]:
    """A DescribeInstances row: its tags, state, VPC and address (on its one network interface)."""
    row: dict[str, Any] = {
        "InstanceId": instance_id,
        "Tags": [{"Key": k, "Value": v} for k, v in instance.tags.items()],
        "State": {"Name": instance.state},
        "VpcId": instance.vpc,
    }
    if instance.address:
        row["PrivateIpAddress"] = instance.address
        addresses = [{"PrivateIpAddress": instance.address, "Primary": True}]
        row["NetworkInterfaces"] = [{"VpcId": instance.vpc, "PrivateIpAddresses": addresses}]
    return row


def _matches(instance_id: str, instance: FakeInstance, name: str, values: list[str]) -> bool:
    """DescribeInstances' filters the pipe uses."""
    if name == "instance-state-name":
        return instance.state in values
    if name == "instance-id":
        return instance_id in values
    if name == "tag-key":
        return any(key in values for key in instance.tags)
    if name.startswith("tag:"):
        return instance.tags.get(name[4:]) in values
    raise AssertionError(f"filter {name} is not faked")
