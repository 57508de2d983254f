"""The stand-in's managed instances: what SSM reports about each and how its agent behaves."""

from __future__ import annotations

import datetime
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# How an instance's agent answers a command:
DELIVER = "deliver"  # picks the command up and runs it
UNDELIVERABLE = "undeliverable"  # the agent is gone: the invocation fails as Undeliverable
NEVER = "never"  # never picks it up: the invocation ends in DeliveryTimedOut (see InvocationRun)


@dataclass
class FakeInstance:
    instance_id: str
    name: str
    home: Path
    ping_status: str = "Online"
    delivery: str = DELIVER
    delivery_delay: float = 0.05
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
            "ResourceType": "EC2Instance",
            "ComputerName": self.name,
            "IPAddress": "127.0.0.1",
        }


class Fleet:
    """Thread-safe registry of instances, each with its own home folder."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._instances: dict[str, FakeInstance] = {}
        self._lock = threading.Lock()

    def add(self, instance_id: str, name: str = "", **behaviour: Any) -> FakeInstance:
        home = self._root / instance_id
        home.mkdir(parents=True, exist_ok=True)
        instance = FakeInstance(instance_id=instance_id, name=name or instance_id, home=home, **behaviour)
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

    def information(self, instance_ids: list[str] | None) -> list[dict[str, Any]]:
        with self._lock:
            chosen = [
                inst for inst in self._instances.values() if instance_ids is None or inst.instance_id in instance_ids
            ]
        return [inst.information() for inst in chosen]
