"""The stand-in's managed instances: what SSM reports about each and how its agent behaves."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from standin import isolation
from standin.hosts import PrivateNetwork

# How an instance's agent answers a command:
DELIVER = "deliver"  # picks the command up and runs it
UNDELIVERABLE = "undeliverable"  # the agent is gone: the invocation fails as Undeliverable
NEVER = "never"  # never picks it up: the invocation ends in DeliveryTimedOut (see InvocationRun)


@dataclass
class FakeInstance:
    instance_id: str
    name: str
    home: Path
    address: str  # its private IP: PrivateIpAddress in EC2, eth0 in its network namespace (hosts.py)
    network: PrivateNetwork
    ping_status: str = "Online"
    delivery: str = DELIVER
    delivery_delay: float = 0.05
    # seconds the instance's clock is off: the agent stamps CloudWatch events with it
    clock_skew: float = 0.0
    # False: the instance role may not write CloudWatch Logs (logs:CreateLogStream/PutLogEvents are
    # refused), so the agent streams nothing; the command itself runs as usual
    cloudwatch_writes: bool = True
    # "EC2Instance" (tags from EC2), or "ManagedInstance": a hybrid (on-premises) node, mi-..., whose
    # tags SSM itself keeps (AddTagsToResource with ResourceType ManagedInstance, or the activation's)
    resource_type: str = "EC2Instance"
    ssm_tags: dict[str, str] = field(default_factory=dict)
    # True while EC2 has it stopped (StopInstances, until StartInstances; ``power.py``): its agent is off,
    # and SSM reports a command sent to it Delayed until it starts again or the command expires
    stopped: bool = False

    @property
    def hybrid(self) -> bool:
        return self.resource_type == "ManagedInstance"

    def path(self, path: str) -> Path:
        """Where this instance's absolute ``path`` under a mapped root is on this machine (see
        ``isolation.py``): ``path("/srv/web-api/current")`` is ``<home>/root/srv/web-api/current``."""
        return isolation.host_path(self.home, path)

    def launch_command(self, script: Path, cwd: str) -> list[str]:
        """argv that runs ``bash script`` in ``cwd`` on this instance (its network, processes and file
        system)."""
        network = self.network.namespace(self.instance_id, self.address)
        held = self.network.processes(self.instance_id, self.address, isolation.mount_setup(self.home))
        return isolation.launch_command(network, held.path, held.mount_path, script, cwd)

    @property
    def network_up(self) -> bool:
        """Whether the instance's network exists yet (it is made when its first command runs)."""
        return self.network.is_up(self.instance_id)

    # How fast AWS's delivery clock runs for a NEVER instance: 0.01 reports a 31-s total timeout as
    # DeliveryTimedOut after 0.31 s. The status is AWS's; only the wait is shortened, for tests.
    delivery_time_scale: float = 1.0

    def information(self) -> dict[str, Any]:
        """A DescribeInstanceInformation row."""
        return {
            "InstanceId": self.instance_id,
            "PingStatus": self.ping_status,
            "LastPingDateTime": datetime.datetime.now(datetime.UTC),
            "AgentVersion": "3.3.1142.0",
            "IsLatestVersion": True,
            "PlatformType": "Linux",
            "PlatformName": "Amazon Linux",
            "PlatformVersion": "2023",
            "ResourceType": self.resource_type,
            "ComputerName": self.name,
            "IPAddress": self.address,
        }


class Fleet:
    """Thread-safe registry of instances, each with its own folder (its /home, /root, /tmp, /srv and
    /opt inside it) and its own address in ``network``; ``provision`` (e.g. the app user's home)
    runs on each new instance's folder, as an AMI brings its files."""

    def __init__(self, root: Path, network: PrivateNetwork, provision: Callable[[Path], None]) -> None:
        isolation.check_root(root)
        self._root = root
        self._network = network
        self._provision = provision
        self._instances: dict[str, FakeInstance] = {}
        self._lock = threading.Lock()

    def add(self, instance_id: str, address: str, name: str = "", **behaviour: Any) -> FakeInstance:
        home = self._root / instance_id
        home.mkdir(parents=True, exist_ok=True)
        isolation.prepare(home)
        self._provision(isolation.instance_root(home))
        instance = FakeInstance(
            instance_id=instance_id,
            name=name or instance_id,
            home=home,
            address=address,
            network=self._network,
            **behaviour,
        )
        with self._lock:
            self._instances[instance_id] = instance
        return instance

    def ids(self) -> list[str]:
        """Every registered (managed) instance, in registration order."""
        with self._lock:
            return list(self._instances)

    def get(self, instance_id: str) -> FakeInstance | None:
        with self._lock:
            return self._instances.get(instance_id)

    def by_address(self, address: str) -> FakeInstance | None:
        """The instance whose private IP is ``address`` (a target of an ``ip`` target group), if any."""
        with self._lock:
            return next((inst for inst in self._instances.values() if inst.address == address), None)

    def information(self, filters: list[dict[str, Any]], ec2_tags: TagReader) -> list[dict[str, Any]]:
        """DescribeInstanceInformation rows matching every filter (values OR'ed within one)."""
        with self._lock:
            instances = list(self._instances.values())
        return [inst.information() for inst in instances if all(_matches(inst, f, ec2_tags) for f in filters)]

    def tags_of(self, instance_id: str, ec2_tags: TagReader) -> Mapping[str, str]:
        """A managed node's tags: SSM's own for a hybrid node, EC2's for an instance."""
        instance = self.get(instance_id)
        return instance.ssm_tags if instance is not None and instance.hybrid else ec2_tags(instance_id)


TagReader = Callable[[str], Mapping[str, str]]
TAG_FILTER_TYPES = ("tag:", "tag-key")


class FilterError(Exception):
    """A DescribeInstanceInformation filter the API refuses; ``code`` is the AWS error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def check_filters(filters: list[dict[str, Any]]) -> None:
    """ "Tag filters can't be combined with other filter types" (DescribeInstanceInformation, Filters);
    AWS documents the rule, not its error code: InvalidFilterKey here."""
    keys = [str(f.get("Key") or "") for f in filters]
    tags = [key.startswith(TAG_FILTER_TYPES) for key in keys]
    if any(tags) and not all(tags):
        raise FilterError("InvalidFilterKey", "Tag filters can't be combined with other filter types.")
    unknown = [key for key in keys if not key.startswith(TAG_FILTER_TYPES) and key not in _FIELDS]
    if unknown:
        raise FilterError("InvalidFilterKey", f"The filter key {unknown[0]} is not valid.")


_FIELDS = {"InstanceIds": "InstanceId", "ResourceType": "ResourceType", "PingStatus": "PingStatus"}


def _matches(instance: FakeInstance, entry: dict[str, Any], ec2_tags: TagReader) -> bool:
    key, values = str(entry.get("Key") or ""), {str(v) for v in entry.get("Values") or []}
    if key.startswith("tag:"):
        tags = instance.ssm_tags if instance.hybrid else ec2_tags(instance.instance_id)
        return tags.get(key[4:]) in values
    if key == "tag-key":
        tags = instance.ssm_tags if instance.hybrid else ec2_tags(instance.instance_id)
        return not values.isdisjoint(tags)
    return str(instance.information()[_FIELDS[key]]) in values
