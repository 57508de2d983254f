"""New instances of an Auto Scaling group install the live release before they enter service (issue #20
item 3): release deploys with AUTO_SCALING_GROUPS against the stand-in's groups, with a launch lifecycle
hook, real pm2 and Node.js, and the State Manager association the pipe writes after each success
(pipe/traffic/auto_scaling/new_instances.py)."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from app_fixture import pack_release
from e2e.test_node_pm2 import APP_DIR, ELB_TIME_SCALE, NodeFleet, answer
from standin import StandIn
from support import PipeRun, run_pipe

from pipe.traffic.auto_scaling.new_instances import association_name, hook_command

HELD_ORDER = ["AZRebalance", "HealthCheck", "ReplaceUnhealthy", "InstanceRefresh"]  # as the pipe names them
HELD = set(HELD_ORDER)
HOOK = "app-ready"
HEARTBEAT = 4200  # EXECUTION_TIMEOUT 3600 + HEALTHCHECK_TIMEOUT 300 + the 300 s margin for the agent
DEADLINE = 180.0
ARTIFACT_KEY = re.compile(r"[0-9a-f]{64}\.")  # ARTIFACT_PREFIX<sha256>.<format>


class GroupFleet(NodeFleet):
    def ship_to_group(self, release: str, build: int, *, broken: bool = False, rolling: bool = False) -> PipeRun:
        """Deploy ``release`` to the group's instances: at once, or (``rolling``) one at a time behind its
        target group."""
        artifact = pack_release(self.clone, release, broken=broken)
        env = self.env(
            build,
            rolling=rolling,
            ARTIFACT=os.path.relpath(artifact, self.clone),
            INSTANCE_IDS="",
            TARGETS=f"tag:aws:autoscaling:groupName={self.group_name}",
            AUTO_SCALING_GROUPS="auto",
        )
        env.pop("INSTANCE_IDS", None)
        return run_pipe(env, timeout=300)

    def association(self) -> dict[str, object]:
        ssm = self.standin.client("ssm")
        name = association_name(self.service, "prod")
        (row,) = ssm.list_associations(AssociationFilterList=[{"key": "AssociationName", "value": name}])[
            "Associations"
        ]
        return dict(ssm.describe_association(AssociationId=row["AssociationId"])["AssociationDescription"])


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {DEADLINE} s: {what}")
        time.sleep(0.5)


def _states(standin: StandIn, name: str) -> dict[str, str]:
    group = standin.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    return {i["InstanceId"]: i["LifecycleState"] for i in group["AutoScalingGroups"][0]["Instances"]}


@pytest.fixture
def group_fleet(standin: StandIn, tmp_path: Path) -> Iterator[Callable[..., GroupFleet]]:
    """An Auto Scaling group (of 2 unless ``size`` says) in a target group, a secret, a bucket; with or
    without a launch hook."""

    def make(with_hook: bool, size: int = 2) -> GroupFleet:
        standin.elb_time_scale = ELB_TIME_SCALE
        name = f"asg-{uuid.uuid4().hex[:8]}"
        arn = standin.create_target_group(name, [], deregistration_delay=20)
        ids = standin.create_auto_scaling_group(name, size, target_group_arns=[arn])
        if with_hook:
            standin.client("autoscaling").put_lifecycle_hook(
                AutoScalingGroupName=name,
                LifecycleHookName=HOOK,
                LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
                HeartbeatTimeout=HEARTBEAT,
                DefaultResult="ABANDON",
            )
        bucket = f"artifacts-{uuid.uuid4().hex[:8]}"
        standin.client("s3").create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": standin.region}
        )
        service = f"svc{uuid.uuid4().hex[:8]}"
        secret = f"/deploy/prod/{service}/db_password"
        key_id = standin.create_key("prod")
        standin.put_secret(secret, "first-Pa55word", key_id)
        return GroupFleet(standin, ids, arn, name, tmp_path, bucket, service, secret, key_id)

    yield make


def test_a_group_without_a_launch_hook_is_refused_with_the_command_that_adds_it(
    group_fleet: Callable[..., GroupFleet],
) -> None:
    fleet = group_fleet(False)
    run = fleet.ship_to_group("A", 1)
    assert run.returncode != 0, run.output
    assert hook_command(fleet.group_name, HEARTBEAT) in run.output
    assert not any(fleet.standin.instance_path(i, f"{APP_DIR}/current").exists() for i in fleet.ids)  # nothing sent


def test_a_group_with_a_warm_pool_is_refused_in_release_mode_with_what_to_do(
    group_fleet: Callable[..., GroupFleet],
) -> None:
    # a warm instance is held by the launch hook again when it moves into the group, and nothing the
    # pipe sets up runs then: the group would abandon it, so the deploy is refused before anything is sent
    fleet = group_fleet(True)
    fleet.standin.client("autoscaling").put_warm_pool(AutoScalingGroupName=fleet.group_name, MinSize=1)
    run = fleet.ship_to_group("A", 1)
    assert run.returncode != 0, run.output
    assert f"the Auto Scaling group {fleet.group_name} keeps a warm pool" in run.output
    assert f"aws autoscaling delete-warm-pool --auto-scaling-group-name {fleet.group_name}" in run.output
    assert "Traceback" not in run.output
    assert not any(fleet.standin.instance_path(i, f"{APP_DIR}/current").exists() for i in fleet.ids)  # nothing sent


def test_a_new_instance_installs_the_live_release_before_it_enters_service_and_a_failed_deploy_changes_nothing(
    group_fleet: Callable[..., GroupFleet],
) -> None:
    fleet = group_fleet(True)
    standin = fleet.standin
    first = fleet.ship_to_group("A", 1)
    assert first.returncode == 0, first.output
    assert f"New instances of {fleet.group_name} (hook {HOOK})" in first.output
    live = fleet.association()

    broken = fleet.ship_to_group("B", 2, broken=True)  # a failed deploy: the association is left as it was
    assert broken.returncode != 0, broken.output
    after = fleet.association()
    assert after["AssociationVersion"] == live["AssociationVersion"]
    assert after["Parameters"] == live["Parameters"]

    standin.client("autoscaling").set_desired_capacity(AutoScalingGroupName=fleet.group_name, DesiredCapacity=3)
    (new,) = set(_states(standin, fleet.group_name)) - set(fleet.ids)
    assert _states(standin, fleet.group_name)[new] == "Pending:Wait"
    assert new not in standin.target_states(fleet.group_arn)  # out of the load balancer while it installs
    _until(lambda: _states(standin, fleet.group_name).get(new) == "InService", "the hook continued")
    current = standin.instance_path(new, f"{APP_DIR}/current")
    assert os.readlink(current).startswith("releases/000001-")  # the live release (A), not the failed B
    document = answer(f"http://{standin.instance(new).address}:3000/")
    assert document["release"] == "A"
    assert new in standin.target_states(fleet.group_arn)  # registered once InService


def test_an_instance_launched_during_the_rollout_is_brought_to_the_new_release_before_success(
    group_fleet: Callable[..., GroupFleet],
) -> None:
    """Issue #20 item 5: the group scales out once the first batch runs B; the new instance installs A (the
    live release: the association is updated only after a success), enters service, and the pipe deploys B
    to it, drained like the others, before it declares success. No request fails meanwhile."""
    fleet = group_fleet(True)
    standin = fleet.standin
    first = fleet.ship_to_group("A", 1)
    assert first.returncode == 0, first.output
    standin.wait_target_states(fleet.group_arn, fleet.ids, "healthy", timeout=60)
    on_b = standin.instance_path(fleet.ids[0], f"{APP_DIR}/current")

    def scale_out_once_the_first_batch_runs_b() -> None:
        _until(lambda: os.readlink(on_b).startswith("releases/000002-"), "the first batch switched to B")
        standin.client("autoscaling").set_desired_capacity(AutoScalingGroupName=fleet.group_name, DesiredCapacity=3)

    scaler = threading.Thread(target=scale_out_once_the_first_batch_runs_b, daemon=True)
    scaler.start()
    with standin.traffic(fleet.group_arn) as traffic:
        run = fleet.ship_to_group("B", 2, rolling=True)
    scaler.join(DEADLINE)

    assert run.returncode == 0, run.output
    states = _states(standin, fleet.group_name)
    (new,) = set(states) - set(fleet.ids)
    assert set(states.values()) == {"InService"}
    assert f"{new} joined the fleet, launched by the Auto Scaling group {fleet.group_name} during the rollout" in (
        run.output
    )
    assert f"Deployed to 3 instance(s) ({new} launched during the rollout)" in run.output
    for instance_id in states:  # the verdict covers every instance in service at the end
        current = standin.instance_path(instance_id, f"{APP_DIR}/current")
        assert os.readlink(current).startswith("releases/000002-"), instance_id
        assert answer(f"http://{standin.instance(instance_id).address}:3000/")["release"] == "B", instance_id
    assert traffic.failures == [], traffic.failures[:5]  # the new instance too was drained before its switch
    assert standin.target_states(fleet.group_arn) == dict.fromkeys(states, "healthy")


def test_a_rolling_release_to_a_group_of_4_under_traffic_drops_nothing_and_holds_scaling_while_a_batch_is_out(
    group_fleet: Callable[..., GroupFleet],
) -> None:
    """A group of 4 behind its target group, release A then B one instance at a time under HTTP traffic:
    no request fails, every look at the group while an instance was out of service saw the processes held,
    and they are resumed at the end."""
    fleet = group_fleet(True, size=4)
    standin = fleet.standin
    first = fleet.ship_to_group("A", 1)
    assert first.returncode == 0, first.output
    standin.wait_target_states(fleet.group_arn, fleet.ids, "healthy", timeout=60)
    # (a target out of service, the processes suspended just before and just after that look), as they went:
    # the rollout cannot both begin after the first read and end before the second
    seen: list[tuple[bool, set[str], set[str]]] = []
    done = threading.Event()

    def watch_the_group() -> None:
        while not done.is_set():
            before = standin.suspended_processes(fleet.group_name)
            out = any(state != "healthy" for state in standin.target_states(fleet.group_arn).values())
            seen.append((out, before, standin.suspended_processes(fleet.group_name)))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch_the_group, daemon=True)
    watcher.start()
    with standin.traffic(fleet.group_arn) as traffic:
        run = fleet.ship_to_group("B", 2, rolling=True)
    done.set()
    watcher.join(DEADLINE)

    assert run.returncode == 0, run.output
    assert traffic.failures == [], traffic.failures[:5]
    assert set(traffic.summary().releases) == {"A", "B"}
    while_out = [(before, after) for out, before, after in seen if out]
    assert while_out, "no look at the group while an instance was out of service"
    assert all(HELD in (before, after) for before, after in while_out), while_out
    assert standin.suspended_processes(fleet.group_name) == set()  # resumed
    assert f"Auto Scaling group {fleet.group_name}: {', '.join(HELD_ORDER)} resumed" in (run.output)
    assert {answer(f"http://{standin.instance(i).address}:3000/")["release"] for i in fleet.ids} == {"B"}


def test_a_new_instance_whose_install_fails_is_abandoned_and_replaced_and_never_serves(
    group_fleet: Callable[..., GroupFleet],
) -> None:
    """The live release's artifact no longer matches its checksum while the group scales out: the new
    instance's install fails, its launch hook is completed ABANDON, the group terminates it (never
    registered) and launches another, which installs the release once the artifact is whole again."""
    fleet = group_fleet(True)
    standin = fleet.standin
    first = fleet.ship_to_group("A", 1)
    assert first.returncode == 0, first.output
    s3 = standin.client("s3")
    (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket=fleet.bucket)["Contents"] if ARTIFACT_KEY.search(o["Key"])]
    whole = s3.get_object(Bucket=fleet.bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=fleet.bucket, Key=key, Body=b"not the release that was shipped")

    standin.client("autoscaling").set_desired_capacity(AutoScalingGroupName=fleet.group_name, DesiredCapacity=3)
    (doomed,) = set(_states(standin, fleet.group_name)) - set(fleet.ids)
    _until(lambda: doomed not in _states(standin, fleet.group_name), "the failed install abandoned the instance")
    s3.put_object(Bucket=fleet.bucket, Key=key, Body=whole)

    assert any(run.instance_id == doomed for run in standin.associations.runs)  # its install ran, and failed
    assert doomed not in standin.target_states(fleet.group_arn)  # it never served
    _until(
        lambda: sorted(_states(standin, fleet.group_name).values()) == ["InService"] * 3,
        "a replacement entered service",
    )
    (replacement,) = set(_states(standin, fleet.group_name)) - set(fleet.ids) - {doomed}
    assert os.readlink(standin.instance_path(replacement, f"{APP_DIR}/current")).startswith("releases/000001-")
    assert answer(f"http://{standin.instance(replacement).address}:3000/")["release"] == "A"
