"""Every target group a batch is in, in process: the plan finds the groups the instances are registered
in (named in TARGET_GROUPS or not) by listing the Region's groups, each batch leaves and rejoins all of
them on the ports it was registered with, MIN_HEALTHY holds in each, and a role that may not read or
change one is refused naming the permission. A fake ELBv2 (``fake_elb.py``) and a fake SSM."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import boto3
import pytest
from unit.unit_support import INSTANCE_A, INSTANCE_B, INSTANCE_C, REGION, make_settings

from functional.fake_aws import FakeSSM
from functional.fake_elb import FakeELB, FakeGroup
from functional.fake_fleet import FakeFleet, FakeInstance
from functional.plans import applying, planned
from pipe.apply.rollout import roll_out
from pipe.apply.run import Run
from pipe.aws.clients import Clients
from pipe.config.rollout import RolloutSettings, TargetGroupChoice
from pipe.errors import DeployFailed, NothingSent
from pipe.plan.rollout import RolloutPlan, prepare_rollout
from pipe.traffic import around_each
from pipe.traffic.target_groups.waits import POLL_SECONDS, poll_seconds

IDS = [INSTANCE_A, INSTANCE_B, INSTANCE_C]
ADDRESSES = {i: f"10.0.1.{n}" for n, i in enumerate(IDS, 11)}  # their private IPv4 addresses, as EC2 gives them


def make_run(elb: FakeELB, ssm: FakeSSM, tmp_path: Path, target_groups: str = "web", **rollout: Any) -> Run:
    choice = TargetGroupChoice(auto=True) if target_groups == "auto" else TargetGroupChoice(refs=(target_groups,))
    settings = make_settings(
        instance_ids=IDS,
        stream_output=False,
        result_file=str(tmp_path / "result.json"),
        rollout=RolloutSettings(target_groups=choice, **rollout),
    )
    clients = Clients(boto3.Session(region_name=REGION), REGION)
    clients.ssm = ssm  # type: ignore[assignment]
    clients.elbv2 = elb  # type: ignore[assignment]
    fleet = FakeFleet(instances={i: FakeInstance(address=address) for i, address in ADDRESSES.items()})
    clients.ec2 = fleet.client("ec2")  # type: ignore[assignment]
    return applying(planned(settings), clients)


def web() -> FakeGroup:
    """The group TARGET_GROUPS names: every instance on the group's port."""
    return FakeGroup("web", targets={(i, 3000): "healthy" for i in IDS})


def admin() -> FakeGroup:
    """A group TARGET_GROUPS does not name: A on 8080, B on 8080 and 9090, and another service's target."""
    return FakeGroup(
        "admin",
        port=8080,
        targets={
            (INSTANCE_A, 8080): "healthy",
            (INSTANCE_B, 8080): "healthy",
            (INSTANCE_B, 9090): "healthy",
            ("i-0ffffffffffffffff", 8080): "healthy",
        },
    )


def plan(run: Run) -> RolloutPlan:
    return prepare_rollout(run.settings, run.clients, list(run.plan.batches))


def test_each_batch_leaves_and_rejoins_every_group_it_is_in_on_the_ports_it_was_registered_with(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    elb = FakeELB(
        web(),
        admin(),
        FakeGroup("by-ip", target_type="ip", targets={("10.0.0.1", 80): "healthy"}),  # no instance of ours
        FakeGroup("idle", load_balancers=0, targets={(INSTANCE_A, 3000): "unused"}),  # routes nothing
        FakeGroup("elsewhere", targets={("i-0eeeeeeeeeeeeeeee", 3000): "healthy"}),
    )
    before = {name: dict(elb.group(name).targets) for name in ("web", "admin")}
    ssm = FakeSSM()
    run = make_run(elb, ssm, tmp_path)

    rollout = plan(run)
    with caplog.at_level(logging.INFO, logger="ssm-deploy"):
        roll_out(run, rollout.batches, around_each(rollout.traffic))

    lines = "\n".join(rollout.lines)
    assert "target group web: 3 healthy of 3 registered, 3 of them deployed here" in lines
    assert (
        "target group admin: 4 healthy of 4 registered, 3 of them deployed here; deregistration delay 30 s "
        "(not in TARGET_GROUPS: the instances are registered in it, so each batch leaves it too)"
    ) in lines
    assert "idle" not in lines and "by-ip" not in lines and "elsewhere" not in lines
    assert "targets read in 4 of the Region's 5 target group(s)" in lines  # web, admin, by-ip, elsewhere
    assert elb.made("DeregisterTargets", "by-ip") == []
    assert [c.targets for c in elb.made("DeregisterTargets", "admin")] == [
        [(INSTANCE_A, 8080)],
        [(INSTANCE_B, 8080), (INSTANCE_B, 9090)],
    ]
    assert [c.targets for c in elb.made("RegisterTargets", "admin")] == [
        [(INSTANCE_A, 8080)],
        [(INSTANCE_B, 8080), (INSTANCE_B, 9090)],
    ]
    assert [c.targets for c in elb.made("RegisterTargets", "web")] == [[(i, 3000)] for i in IDS]
    assert elb.made("DeregisterTargets", "idle") == elb.made("DeregisterTargets", "elsewhere") == []
    assert {name: elb.group(name).targets for name in ("web", "admin")} == before
    # each batch was out of both groups while it was deployed
    order = [(c.operation, c.group) for c in elb.calls if c.operation in ("DeregisterTargets", "RegisterTargets")]
    assert order[:4] == [
        ("DeregisterTargets", "web"),
        ("DeregisterTargets", "admin"),
        ("RegisterTargets", "web"),
        ("RegisterTargets", "admin"),
    ]
    assert [len(s.instance_ids) for s in ssm.sent] == [1, 1, 1]
    assert "batch 2/3 (1 instance(s)): draining from web, admin" in caplog.text
    assert "batch 2/3 (1 instance(s)): registered again in web, admin" in caplog.text


def test_auto_finds_the_same_groups_without_naming_any(tmp_path: Path) -> None:
    elb = FakeELB(web(), admin(), FakeGroup("elsewhere", targets={("i-0eeeeeeeeeeeeeeee", 3000): "healthy"}))

    lines = "\n".join(plan(make_run(elb, FakeSSM(), tmp_path, "auto")).lines)

    assert "target group web: 3 healthy" in lines and "target group admin: 4 healthy" in lines
    assert "not in TARGET_GROUPS" not in lines  # auto names none
    assert "elsewhere" not in lines


def test_finding_the_groups_reads_pages_of_400_and_only_groups_that_can_send_an_instance_requests(
    tmp_path: Path,
) -> None:
    others = [FakeGroup(f"other-{n}", targets={(f"i-{n:017x}", 3000): "healthy"}) for n in range(898)]
    elb = FakeELB(web(), FakeGroup("by-ip", target_type="ip"), FakeGroup("idle", load_balancers=0), *others)

    plan(make_run(elb, FakeSSM(), tmp_path))

    assert [c.page_size for c in elb.made("DescribeTargetGroups")] == [400, 400, 400]  # 901 groups
    assert len(elb.made("DescribeTargetHealth")) == 900  # web, by-ip and the others, not idle
    assert [c.group for c in elb.made("DescribeTargetGroupAttributes")] == ["web"]
    assert elb.made("DeregisterTargets") == []  # planning changes nothing


@pytest.mark.parametrize(
    ("operation", "group", "why"),
    [
        ("DescribeTargetGroups", "*", "to list the Region's target groups and find every one the instances are"),
        ("DescribeTargetHealth", "admin", "to find which target groups the instances are registered in"),
        ("DescribeTargetHealth", "elsewhere", "to find which target groups the instances are registered in"),
    ],
)
def test_a_role_that_may_not_read_every_group_is_refused_naming_the_permission(
    tmp_path: Path, operation: str, group: str, why: str
) -> None:
    elb = FakeELB(web(), admin(), FakeGroup("elsewhere", targets={("i-0eeeeeeeeeeeeeeee", 3000): "healthy"}))
    elb.denied.add((operation, group))

    with pytest.raises(NothingSent) as refused:
        plan(make_run(elb, FakeSSM(), tmp_path))

    message = str(refused.value)
    assert message.startswith("TARGET_GROUPS: nothing was sent.")
    assert f"may not call {operation}, which the pipe needs {why}" in message
    assert f"allow elasticloadbalancing:{operation}" in message
    assert elb.made("DeregisterTargets") == []


def test_a_group_the_role_may_not_leave_fails_the_batch_and_the_groups_already_left_are_rejoined(
    tmp_path: Path,
) -> None:
    elb = FakeELB(web(), admin())
    elb.denied.add(("DeregisterTargets", "admin"))
    ssm = FakeSSM()
    run = make_run(elb, ssm, tmp_path)
    rollout = plan(run)

    with pytest.raises(DeployFailed) as failed:
        roll_out(run, rollout.batches, around_each(rollout.traffic))

    message = str(failed.value)
    assert "batch 1/3 (1 instance(s)) could not be taken out of the load balancer: admin:" in message
    assert "allow elasticloadbalancing:DeregisterTargets" in message
    assert [c.targets for c in elb.made("RegisterTargets", "web")] == [[(INSTANCE_A, 3000)]]
    assert elb.made("RegisterTargets", "admin") == []  # it never left admin
    assert elb.group("web").targets == web().targets
    assert ssm.sent == []  # nothing was deployed


def test_min_healthy_is_checked_in_every_group_a_batch_leaves(tmp_path: Path) -> None:
    lonely = FakeGroup("admin", targets={(INSTANCE_B, 3000): "healthy"})  # B is its only target
    elb = FakeELB(web(), lonely)

    with pytest.raises(NothingSent) as refused:
        plan(make_run(elb, FakeSSM(), tmp_path))

    message = str(refused.value)
    assert message.startswith("MIN_HEALTHY: nothing was sent.")
    assert "batch 2/3 (1 instance(s)) cannot start: admin has 1 healthy of 1 registered target(s)" in message


def test_the_polls_of_many_groups_stay_within_a_share_of_the_describe_refill_rate() -> None:
    assert poll_seconds(1) == POLL_SECONDS
    assert poll_seconds(40) * 10 / 2 >= 40  # 40 reads a poll: at most 5 a second (Describe* refills 10 a second)
