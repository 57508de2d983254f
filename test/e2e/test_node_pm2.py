"""Our users' stack, for real: a Node.js 20 service run by pm2 as a RUN_AS login user (node and pm2 on
its login PATH only, as nvm leaves them), shipped as releases with the README's recipe (its
ecosystem file, its ACTIVATE_COMMANDS, its health check), each instance a host of its own, behind a
real HTTP load balancer (HAProxy) with real health checks, under real HTTP traffic.

Failed requests are what the clients saw (``load_generator.py``); which release serves is what the
app answers (``X-Release``, its working directory, the hash of its DB_PASSWORD), asked through the
load balancer and of each instance directly."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from app_fixture import ACTIVATE, HEALTH_CHECK, INSTALL, pack_release
from standin import StandIn
from standin.users import APP_USER
from support import PipeRun, run_pipe

APP_DIR = "/srv/web-api"  # the ecosystem file's cwd is APP_DIR/current
ELB_TIME_SCALE = 0.05  # a 5-s health-check interval lasts 0.25 s, a 20-s deregistration delay 1 s


def sha16(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def answer(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        document: dict[str, Any] = json.loads(response.read())
    return document


@dataclass
class NodeFleet:
    standin: StandIn
    ids: list[str]
    group_arn: str
    group_name: str
    clone: Path
    bucket: str
    service: str
    secret: str  # the DB_PASSWORD parameter's name
    key_id: str

    def env(self, build: int, *, rolling: bool = True, **variables: str) -> dict[str, str]:
        """The pipe's environment for a release deploy of this fleet (README's Releases example),
        rolled out behind the target group unless ``rolling`` is False."""
        behind = {"TARGET_GROUPS": self.group_name, "BATCH_SIZE": "1", "MIN_HEALTHY": "1"} if rolling else {}
        return self.standin.pipe_env(
            **{
                "INSTANCE_IDS": " ".join(self.ids),
                "ENVIRONMENT": "prod",
                "SERVICE": self.service,
                "ARTIFACT_BUCKET": self.bucket,
                "APP_DIR": APP_DIR,
                "RUN_AS": APP_USER,
                "SECRETS": f"DB_PASSWORD={self.secret}",
                "COMMANDS": INSTALL,
                "ACTIVATE_COMMANDS": ACTIVATE,
                "HEALTHCHECK_COMMANDS": HEALTH_CHECK,
                "BITBUCKET_CLONE_DIR": str(self.clone),
                "BITBUCKET_BUILD_NUMBER": str(build),
                **behind,
                **variables,
            }
        )

    def ship(self, release: str, build: int, *, broken: bool = False, rolling: bool = True) -> PipeRun:
        """Pack the app as ``release`` (the build step) and deploy it."""
        artifact = pack_release(self.clone, release, broken=broken)
        relative = os.path.relpath(artifact, self.clone)
        return run_pipe(self.env(build, rolling=rolling, ARTIFACT=relative), timeout=300)

    def served(self) -> dict[str, dict[str, Any]]:
        """What each instance's app answers when asked directly: instance id -> GET / document."""
        return {i: answer(f"http://{self.standin.instance(i).address}:3000/") for i in self.ids}

    def live_release_dir(self, instance_id: str) -> str:
        current = self.standin.instance_path(instance_id, f"{APP_DIR}/current")
        return f"{APP_DIR}/{os.readlink(current)}"

    def through_the_load_balancer(self, count: int) -> set[str]:
        """The releases that answer ``count`` requests through the load balancer."""
        with self.standin.traffic(self.group_arn, max_requests=count, workers=2) as traffic:
            traffic.wait(60)
        assert traffic.failures == [], traffic.failures[:5]
        return set(traffic.summary().releases)


@pytest.fixture
def node_fleet(standin: StandIn, tmp_path: Path) -> Iterator[NodeFleet]:
    """Two instances in a target group, running release A (build 1) under pm2, all healthy."""
    standin.elb_time_scale = ELB_TIME_SCALE
    ids = standin.launch(2, name="web-api")
    name = f"web-{uuid.uuid4().hex[:8]}"
    arn = standin.create_target_group(name, ids, deregistration_delay=20)
    bucket = f"artifacts-{uuid.uuid4().hex[:8]}"
    standin.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": standin.region})
    service = f"svc{uuid.uuid4().hex[:8]}"
    secret = f"/deploy/prod/{service}/db_password"
    key_id = standin.create_key("prod")
    standin.put_secret(secret, "first-Pa55word", key_id)
    fleet = NodeFleet(standin, ids, arn, name, tmp_path, bucket, service, secret, key_id)
    # The very first deploy: nothing serves yet, so no target is healthy and the pipe cannot roll
    # out behind the group; it deploys every instance at once.
    first = fleet.ship("A", 1, rolling=False)
    assert first.returncode == 0, first.output
    standin.wait_target_states(arn, ids, "healthy", timeout=60)
    yield fleet


@pytest.mark.slow
def test_release_a_then_b_behind_the_load_balancer_drops_no_request_and_b_serves_everywhere(
    node_fleet: NodeFleet,
) -> None:
    assert node_fleet.through_the_load_balancer(40) == {"A"}
    with node_fleet.standin.traffic(node_fleet.group_arn) as traffic:
        run = node_fleet.ship("B", 2)

    assert run.returncode == 0, run.output
    summary = traffic.summary()
    assert summary.requests > 100
    assert traffic.failures == [], traffic.failures[:5]
    assert set(summary.releases) == {"A", "B"}
    assert node_fleet.through_the_load_balancer(40) == {"B"}
    for instance_id, document in node_fleet.served().items():
        assert document["release"] == "B"
        # pm2 runs the code of the release `current` points at, not the one it first started
        assert document["cwd"] == node_fleet.live_release_dir(instance_id) == f"{APP_DIR}/releases/000002-0123456"


@pytest.mark.slow
def test_a_release_drops_no_request_through_a_target_group_that_target_groups_does_not_name(
    node_fleet: NodeFleet,
) -> None:
    """The instances also serve a second load balancer, through a group TARGET_GROUPS does not name:
    each batch leaves both groups before pm2 reloads the app, and comes back to both."""
    standin = node_fleet.standin
    other = f"admin-{uuid.uuid4().hex[:8]}"
    other_arn = standin.create_target_group(other, node_fleet.ids, deregistration_delay=20)
    standin.wait_target_states(other_arn, node_fleet.ids, "healthy", timeout=60)
    with standin.traffic(node_fleet.group_arn) as named, standin.traffic(other_arn) as unnamed:
        run = node_fleet.ship("B", 2)

    assert run.returncode == 0, run.output
    for traffic in (named, unnamed):
        assert traffic.summary().requests > 100
        assert traffic.failures == [], traffic.failures[:5]
        assert set(traffic.summary().releases) == {"A", "B"}
    assert f"target group {other}: 2 healthy of 2 registered, 2 of them deployed here" in run.output
    assert "not in TARGET_GROUPS: the instances are registered in it, so each batch leaves it too" in run.output
    for number in (1, 2):
        assert f"batch {number}/2 (1 instance(s)): draining from {node_fleet.group_name}, {other}" in run.output
        assert f"batch {number}/2 (1 instance(s)): registered again in {node_fleet.group_name}, {other}" in run.output
    for arn in (node_fleet.group_arn, other_arn):
        standin.wait_target_states(arn, node_fleet.ids, "healthy", timeout=60)
    assert {d["release"] for d in node_fleet.served().values()} == {"B"}


@pytest.mark.slow
def test_a_secret_rotated_between_two_deploys_reaches_the_app(node_fleet: NodeFleet) -> None:
    assert {d["db_password_sha256"] for d in node_fleet.served().values()} == {sha16("first-Pa55word")}
    node_fleet.standin.put_secret(node_fleet.secret, "rotated-Pa55word", node_fleet.key_id)
    with node_fleet.standin.traffic(node_fleet.group_arn) as traffic:
        run = node_fleet.ship("B", 2)

    assert run.returncode == 0, run.output
    assert traffic.failures == [], traffic.failures[:5]
    assert "rotated-Pa55word" not in run.output and "first-Pa55word" not in run.output
    for document in node_fleet.served().values():
        assert (document["release"], document["db_password_sha256"]) == ("B", sha16("rotated-Pa55word"))


@pytest.mark.slow
def test_a_broken_release_is_switched_back_with_no_failed_request(node_fleet: NodeFleet) -> None:
    with node_fleet.standin.traffic(node_fleet.group_arn) as traffic:
        run = node_fleet.ship("B", 2, broken=True)

    assert run.returncode == 1, run.output
    assert "switched back" in run.output or "Rollback succeeded" in run.output, run.output
    assert traffic.failures == [], traffic.failures[:5]
    assert set(traffic.summary().releases) == {"A"}  # B never took a request
    for instance_id, document in node_fleet.served().items():
        assert document["release"] == "A"
        assert document["cwd"] == node_fleet.live_release_dir(instance_id) == f"{APP_DIR}/releases/000001-0123456"
    node_fleet.standin.wait_target_states(node_fleet.group_arn, node_fleet.ids, "healthy", timeout=60)


@pytest.mark.slow
def test_release_previous_goes_back_to_a_under_traffic(node_fleet: NodeFleet) -> None:
    second = node_fleet.ship("B", 2)
    assert second.returncode == 0, second.output
    env = node_fleet.env(3, RELEASE="previous")
    with node_fleet.standin.traffic(node_fleet.group_arn) as traffic:
        run = run_pipe(env, timeout=300)

    assert run.returncode == 0, run.output
    assert traffic.failures == [], traffic.failures[:5]
    assert node_fleet.through_the_load_balancer(40) == {"A"}
    assert {d["release"] for d in node_fleet.served().values()} == {"A"}
