"""MIN_HEALTHY arithmetic over target groups, the batch table, and the rollout's time bound."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from pipe.errors import NothingSent
from pipe.model import Batch, BatchOutcome, BatchRecord
from pipe.report.batches import batch_table
from pipe.traffic.target_groups import hook, waits
from pipe.traffic.target_groups.capacity import below_floor, impossible_batch, largest_batch, shortfall
from pipe.traffic.target_groups.groups import TargetGroup, TargetState
from pipe.traffic.target_groups.plan import _refuse_below_min_healthy
from pipe.traffic.target_groups.waits import drained, healthy, register_command, wait_for

IDS = [f"i-{n:017x}" for n in range(1, 9)]


def group(states: dict[str, str], name: str = "web") -> TargetGroup:
    return TargetGroup(f"arn:{name}", name, targets=[TargetState(i, 3000, s) for i, s in states.items()])


def test_a_batch_may_not_leave_fewer_healthy_targets_than_min_healthy() -> None:
    web = group({i: "healthy" for i in IDS[:4]})
    assert shortfall([web], IDS[:1], "75%") is None
    problem = shortfall([web], IDS[:2], "75%")
    assert problem == (
        "web has 4 healthy of 4 registered target(s); taking 2 out would leave 2, fewer than MIN_HEALTHY 75% (3)"
    )


def test_targets_already_unhealthy_count_against_min_healthy() -> None:
    web = group({IDS[0]: "unhealthy", IDS[1]: "healthy", IDS[2]: "healthy", IDS[3]: "healthy"})
    assert shortfall([web], IDS[1:2], "75%") is not None  # 3 healthy - 1 = 2 < 3
    assert shortfall([web], IDS[0:1], "75%") is None  # taking out an unhealthy one costs nothing
    assert below_floor([web], "100%") is not None
    assert below_floor([web], "75%") is None


def test_draining_targets_do_not_count_as_registered() -> None:
    web = group({IDS[0]: "draining", IDS[1]: "healthy", IDS[2]: "healthy"})
    assert len(web.registered) == 2
    assert shortfall([web], IDS[1:2], "50%") is None  # 1 left of 2 registered


def test_every_group_is_checked_and_the_plan_names_the_largest_batch() -> None:
    web = group({i: "healthy" for i in IDS[:4]}, "web")
    api = group({i: "healthy" for i in IDS[:2]}, "api")  # the first two are also in a small group
    batches = [Batch(1, 2, tuple(IDS[:2])), Batch(2, 2, tuple(IDS[2:4]))]
    problem = impossible_batch([web, api], batches, "1")
    assert problem is not None
    assert problem.startswith("batch 1/2 (2 instance(s)) cannot start: api has 2 healthy")
    assert "at most 1 instance(s)" in problem
    assert impossible_batch([web, api], [Batch(n + 1, 4, (i,)) for n, i in enumerate(IDS[:4])], "1") is None


def test_targets_in_their_first_health_checks_do_not_refuse_the_plan_but_unhealthy_ones_do(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A target left 'initial' (a stopped deploy registered its batch again, an operator, a scale-out) will be
    healthy in a few checks: the plan lets each batch wait for its capacity instead of refusing with advice
    that cannot help (lower BATCH_SIZE: 'at most 0 instance(s)'). An unhealthy one still refuses it."""
    batches = [Batch(1, 2, (IDS[0],)), Batch(2, 2, (IDS[1],))]
    coming = group({IDS[0]: "healthy", IDS[1]: "initial"})
    with caplog.at_level("INFO"):
        _refuse_below_min_healthy([coming], batches, "1")
    assert f"still in their first health checks (initial): {IDS[1]} (web)" in caplog.text
    sick = group({IDS[0]: "healthy", IDS[1]: "unhealthy"})
    with pytest.raises(NothingSent) as refused:
        _refuse_below_min_healthy([sick], batches, "1")
    assert "web has 1 healthy of 2 registered target(s)" in str(refused.value)


def test_only_the_groups_a_batch_leaves_limit_it() -> None:
    web = group({i: "healthy" for i in IDS[:4]}, "web")
    other = group({IDS[6]: "healthy", IDS[7]: "unhealthy"}, "other")  # below 100% already, but not ours
    assert shortfall([web, other], IDS[:1], "75%") is None
    assert shortfall([web, other], IDS[7:8], "100%") is not None  # the batch leaves it


def test_a_small_group_bounds_the_largest_batch_only_when_it_holds_more_of_the_instances_than_it_can_spare() -> None:
    web = group({i: "healthy" for i in IDS[:3]}, "web")
    admin = group({IDS[0]: "healthy"}, "admin")  # one of the instances is also in a group of one
    assert largest_batch([web, admin], "0") == 1  # the group's own room, as the plan's message says
    assert largest_batch([web, admin], "0", IDS[:2]) == 2  # no batch of these takes 2 of admin's targets out
    assert largest_batch([web, admin], "1", IDS[:2]) == 0  # admin may lose none, and one of them is in it
    two = group({IDS[0]: "healthy", IDS[1]: "healthy"}, "two")
    assert largest_batch([web, two], "1", IDS[:3]) == 1  # both of its targets go: one at a time
    assert largest_batch([web, two], "1", IDS[1:3]) == 2  # only one of its targets goes


def test_min_healthy_zero_accepts_downtime() -> None:
    web = group({IDS[0]: "healthy"})
    assert shortfall([web], IDS[:1], "0") is None
    assert shortfall([web], IDS[:1], "1") is not None


def test_the_batch_table_shows_each_step() -> None:
    records = [
        BatchRecord(1, tuple(IDS[:1]), BatchOutcome.DEPLOYED, drain=30.2, deploy=9.0, healthy=12.4, bake=60.0),
        BatchRecord(2, tuple(IDS[1:3])),
    ]
    records[0].out_of_service_for(51.8)  # deregistered until healthy again
    lines = batch_table(records)
    header = ["Batch", "Instances", "Drain", "Deploy", "Healthy", "Out", "of", "service", "Bake", "Outcome"]
    assert lines[1].split() == header
    assert lines[2].split() == ["1/2", "1", "30", "s", "9", "s", "12", "s", "52", "s", "60", "s", "deployed"]
    assert lines[3].split() == ["2/2", "2", "-", "-", "-", "-", "-", "not", "started"]
    records[0].out_of_service_for(20.0)  # its rollback took it out again: the times add up
    assert records[0].out_of_service == 71.8
    assert batch_table([]) == []


def test_the_register_command_names_ports() -> None:
    targets = [TargetState(IDS[0], 3000, "unused"), TargetState(IDS[1], None, "unused")]
    assert register_command("arn:tg", targets) == (
        f"aws elbv2 register-targets --target-group-arn arn:tg --targets Id={IDS[0]},Port=3000 Id={IDS[1]}"
    )


class FakeELB:
    """DescribeTargetHealth answering with fixed states per (instance, port)."""

    def __init__(self, states: dict[tuple[str, int], str]) -> None:
        self.states = states

    def describe_target_health(self, TargetGroupArn: str, Targets: list[dict[str, Any]]) -> dict[str, object]:
        rows = [
            {"Target": {"Id": t["Id"], "Port": t["Port"]}, "TargetHealth": {"State": self.states[(t["Id"], t["Port"])]}}
            for t in Targets
        ]
        return {"TargetHealthDescriptions": rows}


def test_each_port_of_an_instance_is_waited_for_until_it_is_no_longer_registered() -> None:
    web = group({})
    targets = [TargetState(IDS[0], 80, "healthy"), TargetState(IDS[0], 8080, "healthy")]
    registrations = {web.arn: (web, targets)}
    still_draining = FakeELB({(IDS[0], 80): "draining", (IDS[0], 8080): "unused"})
    _, pending = wait_for(still_draining, registrations, drained, 0, lambda: None)
    assert [(state.port, state.state) for _, state in pending] == [(80, "draining")]
    still_healthy = FakeELB({(IDS[0], 80): "healthy", (IDS[0], 8080): "unused"})  # not yet deregistered
    assert wait_for(still_healthy, registrations, drained, 0, lambda: None)[1]
    gone = FakeELB({(IDS[0], 80): "unused", (IDS[0], 8080): "unused"})
    assert wait_for(gone, registrations, drained, 0, lambda: None)[1] == []


class TurningHealthy:
    """A fake clock and DescribeTargetHealth of one target that turns healthy ``at`` seconds in."""

    def __init__(self, at: float) -> None:
        self.at, self.now = at, 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def describe_target_health(self, TargetGroupArn: str, Targets: list[dict[str, Any]]) -> dict[str, object]:
        state = "healthy" if self.now >= self.at else "initial"
        rows = [{"Target": {"Id": t["Id"], "Port": t["Port"]}, "TargetHealth": {"State": state}} for t in Targets]
        return {"TargetHealthDescriptions": rows}


@pytest.mark.parametrize("at", [0.6, 10.1, 30.05])  # a scaled check, 2 checks 5 s apart, a 30-s delay
def test_a_wait_ends_within_half_a_second_of_the_change(monkeypatch: pytest.MonkeyPatch, at: float) -> None:
    """Each batch is out of service until the pipe sees its targets healthy again (and waits for
    the drain before it): every second the poll comes after the change is a second out of service."""
    elb = TurningHealthy(at)
    monkeypatch.setattr(waits, "time", elb)  # the fake clock: no real time passes
    web = group({})
    waited, pending = wait_for(
        elb, {web.arn: (web, [TargetState(IDS[0], 3000, "initial")])}, healthy, 300, lambda: None
    )
    assert pending == []
    assert at <= waited <= at + 0.5


def test_a_target_whose_instance_left_the_fleet_is_no_longer_waited_for_and_asked_about_only_when_leaving() -> None:
    """A batch coming back into service: the group terminated one instance (ELBv2 reports it draining, then
    unused), the other turns healthy. The wait asks who left only about targets in those states, stops waiting
    for the one that left, and ends without waiting out its bound (300 s here: a real wait would show)."""
    web = group({})
    targets = [TargetState(IDS[0], 3000, "initial"), TargetState(IDS[1], 3000, "initial")]
    elb = FakeELB({(IDS[0], 3000): "draining", (IDS[1], 3000): "healthy"})
    asked: list[list[str]] = []

    def left_the_fleet(instance_ids: Sequence[str]) -> dict[str, str]:
        asked.append(list(instance_ids))
        return {IDS[0]: "terminated by its group"}

    waited, pending = wait_for(elb, {web.arn: (web, targets)}, healthy, 300, lambda: None, left_the_fleet)

    assert pending == [] and waited < 60
    assert asked == [[IDS[0]]]
    # an instance still in the fleet stays pending at the bound, asked about once more there
    stuck = FakeELB({(IDS[0], 3000): "unhealthy", (IDS[1], 3000): "healthy"})
    _, pending = wait_for(stuck, {web.arn: (web, targets)}, healthy, 0, lambda: None, lambda ids: {})
    assert [state.instance_id for _, state in pending] == [IDS[0]]


def test_only_targets_already_unhealthy_in_a_group_not_named_go_unawaited_after_the_switch() -> None:
    """A release is waited for in every group it left, except where a target was unhealthy before it, in a group
    TARGET_GROUPS does not name, while the instance is waited for elsewhere (attack 16b): in a named group an
    unhealthy target is always waited for."""
    sick, well = TargetState("i-1", 3000, "unhealthy"), TargetState("i-1", 8080, "healthy")
    named = TargetGroup("arn:named", "web", targets=[sick], named=True)
    other = TargetGroup("arn:other", "admin", targets=[sick, well], named=False)
    registrations = {"arn:named": (named, [sick]), "arn:other": (other, [sick, well])}

    unawaited = hook._unhealthy_in_groups_not_named(registrations)

    assert unawaited == [(other, sick)]
    assert hook._without_targets(registrations, unawaited) == {
        "arn:named": (named, [sick]),
        "arn:other": (other, [well]),
    }
    # TARGET_GROUPS: auto (no group named), unhealthy in its only group: still waited for, it proves itself there
    alone = TargetGroup("arn:auto", "web", targets=[sick], named=False)
    assert hook._unhealthy_in_groups_not_named({"arn:auto": (alone, [sick])}) == []


def test_a_target_found_unhealthy_in_a_group_not_named_stays_unawaited_while_initial_after_the_pipe_put_it_back() -> (
    None
):
    """Registered again by the pipe, a target found unhealthy before the deploy is ``initial`` until its checks fail
    again: the switch back of its batch (deployed before a failed one) does not wait for it either (attack 22);
    a target never found unhealthy, or healthy now, is waited for."""
    app = TargetState("i-1", 3000, "healthy")
    initial, fresh = TargetState("i-1", 3999, "initial"), TargetState("i-1", 4000, "initial")
    named = TargetGroup("arn:named", "web", targets=[app], named=True)
    other = TargetGroup("arn:other", "admin", targets=[initial, fresh], named=False)
    registrations = {"arn:named": (named, [app]), "arn:other": (other, [initial, fresh])}

    assert hook._unhealthy_in_groups_not_named(registrations) == []
    assert hook._unhealthy_in_groups_not_named(registrations, {("arn:other", ("i-1", 3999))}) == [(other, initial)]
    back = TargetState("i-1", 3999, "healthy")
    healed = {"arn:named": (named, [app]), "arn:other": (other, [back])}
    assert hook._unhealthy_in_groups_not_named(healed, {("arn:other", ("i-1", 3999))}) == []
