"""The stand-in's ELBv2 target health, through boto3 against the real HTTP endpoint, as AWS documents it
(see test/standin/load_balancer.py for the sources), with ELB's clock sped up: real HTTP health checks
of real targets (loopback apps, see test_haproxy.py), and real requests through HAProxy.

Each test runs its own ``LoadBalancerModel`` in the session's stand-in (``model``): moto's API goes
to it, its targets' addresses are the loopback apps, its data plane a ``HaproxyDataPlane``. Tests
that need a check at a given moment force it (``force_checks``: ``check_due`` with a time far
ahead, which runs the due checks and returns when they are done); the others let the checks run
on their own and poll the state with generous deadlines.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from standin import StandIn, moto_bridge
from standin.haproxy import HaproxyDataPlane
from standin.instance_app import PORT
from standin.load_balancer import DRAIN, MAINT, READY, TIMEOUT_FLOOR, LoadBalancerModel, server_name
from standin.load_generator import CONNECTION, STATUS, LoadGenerator
from standin.tests.test_haproxy import DEADLINE, Targets, get, in_background, plane, targets, wait_for

__all__ = ["plane", "targets"]  # fixtures

SCALE = 0.05  # a 5-s health-check interval lasts 0.25 s; a 20-s deregistration delay 1 s
SLOW = 60  # HealthCheckIntervalSeconds of groups whose checks the test forces: the next one is 3 s away
FORCED = itertools.count(1)


@pytest.fixture
def model(standin: StandIn, targets: Targets, plane: HaproxyDataPlane) -> Iterator[LoadBalancerModel]:
    """This test's load balancer in the stand-in: checks of ``targets``, requests through ``plane``."""
    running = LoadBalancerModel(moto_bridge.target_group_settings, targets.address_of, SCALE, plane)
    saved = standin.load_balancer
    standin.load_balancer = running
    moto_bridge.install_load_balancer(running)
    running.start()
    try:
        yield running
    finally:
        running.stop()
        standin.load_balancer = saved
        moto_bridge.install_load_balancer(saved)
        assert running.data_plane_errors == []


@pytest.fixture
def elb(standin: StandIn, model: LoadBalancerModel) -> Any:
    return standin.client("elbv2")


def name() -> str:
    return f"tg-{uuid.uuid4().hex[:10]}"


def serving(standin: StandIn, targets: Targets, count: int, release: str = "v1", start: bool = True) -> list[str]:
    """``count`` running instances, each with its app on a loopback address (started unless told)."""
    ids = standin.launch(count)
    for instance_id in ids:
        targets.add(instance_id, release, start=start)
    return ids


def group(standin: StandIn, targets: Targets, ids: list[str], **options: Any) -> str:
    """A target group in use by a load balancer, on the apps' port, with ``ids`` registered."""
    return standin.create_target_group(name(), ids, port=targets.port, **options)


def health(elb: Any, arn: str, instance_id: str | None = None) -> dict[str, dict[str, Any]]:
    """Instance id -> TargetHealth, from DescribeTargetHealth (naming ``instance_id`` if given)."""
    extra = {"Targets": [{"Id": instance_id}]} if instance_id else {}
    rows = elb.describe_target_health(TargetGroupArn=arn, **extra)["TargetHealthDescriptions"]
    return {row["Target"]["Id"]: row["TargetHealth"] for row in rows}


def force_checks(model: LoadBalancerModel, times: int = 1) -> None:
    """Run every target's next health check now, ``times`` times (each waits until they are done)."""
    for _ in range(times):
        model.check_due(time.monotonic() + 1000 * next(FORCED))


def served(plane: HaproxyDataPlane, arn: str, ids: list[str]) -> dict[str, str]:
    """Instance id -> its server's mode in the group's HAProxy (its instance's only port)."""
    states = plane.states(arn)
    found = {i: [m for n, m in states.items() if n.startswith(f"{i}_")] for i in ids}
    return {i: modes[0] for i, modes in found.items() if modes}


# --- target health ----------------------------------------------------------------------------------------
def test_a_registered_target_is_initial_then_healthy_after_one_passing_check(
    standin: StandIn, targets: Targets, model: LoadBalancerModel, elb: Any
) -> None:
    ids = serving(standin, targets, 2)
    arn = group(standin, targets, ids, interval=SLOW)

    first = elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    force_checks(model)

    assert {row["Target"]["Id"]: row["TargetHealth"]["State"] for row in first} == dict.fromkeys(ids, "initial")
    assert {row["TargetHealth"]["Reason"] for row in first} == {"Elb.RegistrationInProgress"}
    assert {row["HealthCheckPort"] for row in first} == {str(targets.port)}  # "traffic-port"
    assert health(elb, arn) == {i: {"State": "healthy"} for i in ids}  # no Reason when healthy
    for instance_id in ids:  # one real GET of the group's HealthCheckPath per target, as ELB's checker sends it
        assert [(path, agent) for _, path, agent in targets.apps[instance_id].checks()] == [
            ("/health", "ELB-HealthChecker/2.0")
        ]


def test_checks_run_on_their_own_every_interval(
    standin: StandIn, targets: Targets, model: LoadBalancerModel, elb: Any
) -> None:
    ids = serving(standin, targets, 2)
    arn = group(standin, targets, ids)

    standin.wait_target_states(arn, ids, "healthy", timeout=DEADLINE)
    wait_for(lambda: all(len(targets.apps[i].checks()) >= 3 for i in ids), "three checks each")

    for instance_id in ids:
        starts = [at for at, _, _ in targets.apps[instance_id].checks()]
        assert starts[-1] - starts[0] >= 5 * SCALE  # not back to back: at least one interval apart in all


def test_the_check_loop_sleeps_while_nothing_is_due(plane: HaproxyDataPlane) -> None:
    idle = LoadBalancerModel(lambda _: None, lambda _: None, SCALE, plane)  # no group, no target
    looks: list[float] = []
    looked = idle._start_due

    def counted(now: float) -> Any:
        looks.append(now)
        return looked(now)

    idle._start_due = counted  # type: ignore[method-assign]
    idle.start()
    try:
        time.sleep(0.5)  # an observation window, not a wait: the loop must not poll during it
    finally:
        idle.stop()

    assert len(looks) <= 2  # once at start, at most once more (IDLE_WAKE); a 10-ms tick looked ~50 times


def test_a_target_that_refuses_connections_fails_its_checks_then_is_unhealthy(
    standin: StandIn, targets: Targets, model: LoadBalancerModel, elb: Any
) -> None:
    (instance_id,) = serving(standin, targets, 1, start=False)
    arn = group(standin, targets, [instance_id], interval=SLOW, unhealthy_threshold=3)

    force_checks(model, 2)
    failing = health(elb, arn)[instance_id]
    force_checks(model)

    assert failing == {
        "State": "initial",
        "Reason": "Elb.InitialHealthChecking",
        "Description": "Initial health checks in progress",
    }
    assert health(elb, arn)[instance_id] == {
        "State": "unhealthy",
        "Reason": "Target.FailedHealthChecks",
        "Description": "Health checks failed",
    }


def test_a_target_answering_a_status_the_matcher_refuses_is_unhealthy_with_the_code(
    standin: StandIn, targets: Targets, model: LoadBalancerModel, elb: Any
) -> None:
    (instance_id,) = serving(standin, targets, 1)
    targets.apps[instance_id].status = 500
    arn = group(standin, targets, [instance_id], interval=SLOW)

    force_checks(model, 2)

    assert health(elb, arn)[instance_id] == {
        "State": "unhealthy",
        "Reason": "Target.ResponseCodeMismatch",
        "Description": "Health checks failed with these codes: [500]",
    }


def test_a_target_that_does_not_answer_in_time_is_unhealthy_with_timeouts_and_never_has_two_checks_at_once(
    standin: StandIn, targets: Targets, model: LoadBalancerModel, elb: Any
) -> None:
    (instance_id,) = serving(standin, targets, 1)
    app = targets.apps[instance_id]
    app.hang = True
    arn = group(standin, targets, [instance_id])  # interval 5 s (0.25 s), timeout 4 s (0.2 s, so 1 s)

    standin.wait_target_states(arn, [instance_id], "unhealthy", timeout=DEADLINE)
    wait_for(lambda: len(app.checks()) >= 3, "a third check")

    assert health(elb, arn)[instance_id] == {
        "State": "unhealthy",
        "Reason": "Target.Timeout",
        "Description": "Request timed out",
    }
    starts = [at for at, _, _ in app.checks()]
    assert app.overlapping == 0  # each check arrived after the previous one's connection was closed
    assert starts[2] - starts[0] >= TIMEOUT_FLOOR  # each check waited out the previous one's timeout


def test_a_slow_target_does_not_delay_the_checks_of_the_others(
    standin: StandIn, targets: Targets, model: LoadBalancerModel, elb: Any
) -> None:
    slow, quick = serving(standin, targets, 2)
    targets.apps[slow].hang = True
    arn = group(standin, targets, [], interval=SLOW)
    elb.modify_target_group(TargetGroupArn=arn, HealthCheckTimeoutSeconds=120, HealthCheckIntervalSeconds=300)
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": slow}, {"Id": quick}])

    forcing, done = in_background(lambda: force_checks(model))  # the slow one's check waits 6 s for its answer
    standin.wait_target_states(arn, [quick], "healthy", timeout=DEADLINE)
    still_waiting = health(elb, arn)[slow]
    targets.apps[slow].stop()  # ends the slow check: the connection is cut
    forcing.join(DEADLINE)

    assert still_waiting["Reason"] == "Elb.RegistrationInProgress"  # its first check had not ended
    assert done == [None]


@pytest.mark.parametrize(
    ("matcher", "status", "healthy"),
    [
        ("200", 200, True),
        ("200", 202, False),
        ("200,202", 202, True),
        ("200,202", 204, False),
        ("200-299", 204, True),
        ("200-299", 302, False),
        ("200,300-399", 302, True),
    ],
)
def test_the_matcher_takes_a_code_a_list_or_a_range(
    standin: StandIn, targets: Targets, model: LoadBalancerModel, elb: Any, matcher: str, status: int, healthy: bool
) -> None:
    (instance_id,) = serving(standin, targets, 1)
    targets.apps[instance_id].status = status
    arn = group(standin, targets, [], interval=SLOW)
    elb.modify_target_group(TargetGroupArn=arn, Matcher={"HttpCode": matcher})
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": instance_id}])

    force_checks(model, 2)

    expected = {"State": "healthy"}
    if not healthy:
        expected = {
            "State": "unhealthy",
            "Reason": "Target.ResponseCodeMismatch",
            "Description": f"Health checks failed with these codes: [{status}]",
        }
    assert health(elb, arn)[instance_id] == expected


def test_checks_go_to_the_health_check_port_and_path(
    standin: StandIn, targets: Targets, model: LoadBalancerModel, plane: HaproxyDataPlane, elb: Any
) -> None:
    (instance_id,) = serving(standin, targets, 1)
    arn = standin.create_target_group(name(), [], port=targets.port + 1, interval=SLOW)  # nothing on that port
    elb.modify_target_group(TargetGroupArn=arn, HealthCheckPort=str(targets.port), HealthCheckPath="/healthz?deep=1")
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": instance_id}])

    force_checks(model)
    row = elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"][0]

    assert row["TargetHealth"] == {"State": "healthy"}
    assert (row["Target"]["Port"], row["HealthCheckPort"]) == (targets.port + 1, str(targets.port))
    assert [path for _, path, _ in targets.apps[instance_id].checks()] == ["/healthz?deep=1"]
    assert get(plane.url(arn))[0] == 503  # requests go to the traffic port, where the instance refuses


def test_an_instance_without_an_address_fails_its_checks_and_has_no_server(
    standin: StandIn, targets: Targets, model: LoadBalancerModel, plane: HaproxyDataPlane, elb: Any
) -> None:
    (known,) = serving(standin, targets, 1)
    (unknown,) = standin.launch(1)  # no app: address_of answers None
    arn = group(standin, targets, [known, unknown], interval=SLOW)

    force_checks(model, 2)

    assert health(elb, arn)[unknown]["Reason"] == "Target.FailedHealthChecks"
    assert served(plane, arn, [known, unknown]) == {known: READY}


def test_a_healthy_target_whose_app_stops_turns_unhealthy_then_healthy_when_it_answers_again(
    standin: StandIn, targets: Targets, model: LoadBalancerModel, elb: Any
) -> None:
    (instance_id,) = serving(standin, targets, 1)
    arn = group(standin, targets, [instance_id], healthy_threshold=3)
    standin.wait_target_states(arn, [instance_id], "healthy", timeout=DEADLINE)

    targets.apps[instance_id].stop()
    standin.wait_target_states(arn, [instance_id], "unhealthy", timeout=DEADLINE)
    targets.apps[instance_id].start()
    back = time.monotonic()
    standin.wait_target_states(arn, [instance_id], "healthy", timeout=DEADLINE)

    # three consecutive passes, one per interval, bring an unhealthy target back (HealthyThresholdCount)
    assert time.monotonic() - back >= 2 * 5 * SCALE


def test_a_group_no_load_balancer_uses_checks_nothing(
    standin: StandIn, targets: Targets, model: LoadBalancerModel, plane: HaproxyDataPlane, elb: Any
) -> None:
    (instance_id,) = serving(standin, targets, 1)
    vpc = standin.client("ec2").describe_vpcs()["Vpcs"][0]["VpcId"]
    arn = elb.create_target_group(
        Name=name(), Protocol="HTTP", Port=targets.port, VpcId=vpc, HealthCheckIntervalSeconds=5
    )["TargetGroups"][0]["TargetGroupArn"]
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": instance_id}])
    force_checks(model, 3)

    assert health(elb, arn)[instance_id]["Reason"] == "Target.NotInUse"
    assert health(elb, arn)[instance_id]["State"] == "unused"
    assert targets.apps[instance_id].checks() == []
    assert served(plane, arn, [instance_id]) == {instance_id: MAINT}


# --- deregistration -----------------------------------------------------------------------------------------
def test_a_deregistered_target_drains_for_the_delay_then_is_gone(
    standin: StandIn, targets: Targets, model: LoadBalancerModel, plane: HaproxyDataPlane, elb: Any
) -> None:
    ids = serving(standin, targets, 2)
    arn = group(standin, targets, ids, deregistration_delay=20)
    standin.wait_target_states(arn, ids, "healthy", timeout=DEADLINE)

    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": ids[0]}])
    draining = health(elb, arn)
    modes = served(plane, arn, ids)
    standin.wait_target_states(arn, ids[:1], "gone", timeout=DEADLINE)

    assert draining[ids[0]] == {
        "State": "draining",
        "Reason": "Target.DeregistrationInProgress",
        "Description": "Target deregistration is in progress",
    }
    assert modes == {ids[0]: DRAIN, ids[1]: READY}
    assert list(health(elb, arn)) == [ids[1]]
    assert served(plane, arn, ids) == {ids[1]: READY}  # its server is deleted
    assert health(elb, arn, ids[0])[ids[0]]["State"] == "unused"
    assert health(elb, arn, ids[0])[ids[0]]["Reason"] == "Target.NotRegistered"
    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": ids[0]}])  # not registered: no error


def test_a_draining_target_gets_no_new_request_and_finishes_the_ones_in_flight(
    standin: StandIn, targets: Targets, model: LoadBalancerModel, plane: HaproxyDataPlane, elb: Any
) -> None:
    ids = serving(standin, targets, 2)
    first, second = (targets.apps[i] for i in ids)
    arn = group(standin, targets, ids, deregistration_delay=300)  # 15 s: longer than the test
    standin.wait_target_states(arn, ids, "healthy", timeout=DEADLINE)
    slow = [in_background(lambda: get(plane.url(arn), "/slow?seconds=1")) for _ in range(2)]  # round robin
    wait_for(lambda: all(any(r[1].startswith("/slow") for r in app.requests) for app in (first, second)), "both")

    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": ids[0]}])
    answers = [get(plane.url(arn)) for _ in range(10)]
    for thread, _ in slow:
        thread.join(DEADLINE)

    assert {served_by for _, _, served_by in answers} == {second.address}
    assert sorted(result[0] for _, result in slow) == sorted([(200, "v1", first.address), (200, "v1", second.address)])
    assert standin.target_states(arn) == {ids[0]: "draining", ids[1]: "healthy"}


def test_the_group_reports_the_delay_aws_would_while_the_stand_in_waits_less(
    standin: StandIn, targets: Targets, elb: Any
) -> None:
    (instance_id,) = serving(standin, targets, 1)
    arn = group(standin, targets, [instance_id], deregistration_delay=300, interval=10)

    attributes = {a["Key"]: a["Value"] for a in elb.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]}
    described = elb.describe_target_groups(TargetGroupArns=[arn])["TargetGroups"][0]

    assert attributes["deregistration_delay.timeout_seconds"] == "300"
    assert described["HealthCheckIntervalSeconds"] == 10


def test_registering_a_draining_target_again_puts_it_back_in_service(
    standin: StandIn, targets: Targets, model: LoadBalancerModel, plane: HaproxyDataPlane, elb: Any
) -> None:
    (instance_id,) = serving(standin, targets, 1)
    arn = group(standin, targets, [instance_id], deregistration_delay=300)
    standin.wait_target_states(arn, [instance_id], "healthy", timeout=DEADLINE)
    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": instance_id}])
    assert standin.target_states(arn) == {instance_id: "draining"}
    assert get(plane.url(arn))[0] == 503  # its only target drains: no new request for it

    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": instance_id}])

    assert health(elb, arn) == {instance_id: {"State": "healthy"}}
    assert get(plane.url(arn)) == (200, "v1", targets.apps[instance_id].address)


def test_when_no_target_is_healthy_the_load_balancer_fails_open(
    standin: StandIn, targets: Targets, model: LoadBalancerModel, plane: HaproxyDataPlane, elb: Any
) -> None:
    ids = serving(standin, targets, 3)
    arn = group(standin, targets, ids, deregistration_delay=300)
    standin.wait_target_states(arn, ids, "healthy", timeout=DEADLINE)
    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": ids[2]}])
    for instance_id in ids:
        targets.apps[instance_id].status = 500
    standin.wait_target_states(arn, ids[:2], "unhealthy", timeout=DEADLINE)

    generator = LoadGenerator(plane.url(arn), workers=2, max_requests=40)
    with generator:
        generator.wait(DEADLINE)
    summary = generator.summary()

    assert sorted(model.in_service(arn)) == sorted(ids[:2])  # every registered one, not draining
    assert served(plane, arn, ids) == {ids[0]: READY, ids[1]: READY, ids[2]: DRAIN}
    assert set(summary.served_by) == {targets.apps[i].address for i in ids[:2]}
    assert summary.statuses == {500: 40}  # the unhealthy targets' own answers
    assert {f.kind for f in generator.failures} == {STATUS}
    assert [agent for _, _, agent in targets.apps[ids[2]].requests if agent != "ELB-HealthChecker/2.0"] == []


# --- traffic ----------------------------------------------------------------------------------------------
def test_traffic_fails_when_a_healthy_instance_stops_answering(
    standin: StandIn, targets: Targets, model: LoadBalancerModel, plane: HaproxyDataPlane, elb: Any
) -> None:
    ids = serving(standin, targets, 2)
    arn = group(standin, targets, ids)
    standin.wait_target_states(arn, ids, "healthy", timeout=DEADLINE)

    generator = LoadGenerator(plane.url(arn), duration=DEADLINE)
    with generator:
        wait_for(lambda: generator.summary().ok >= 20, "answers")
        targets.apps[ids[0]].stop()  # a restart without draining first
        standin.wait_target_states(arn, ids[:1], "unhealthy", timeout=DEADLINE)
        targets.apps[ids[0]].start()
        standin.wait_target_states(arn, ids[:1], "healthy", timeout=DEADLINE)
        after = generator.summary().requests
        wait_for(lambda: generator.summary().requests >= after + 20, "more answers")
    summary = generator.summary()

    assert generator.failures
    # a connection failure by its exception's name: IncompleteRead's byte counts vary
    assert {(f.kind, f.detail if f.kind == STATUS else f.detail.split(":")[0]) for f in generator.failures} <= {
        (STATUS, "503 Service Unavailable"),  # HAProxy: the connection to the stopped app was refused
        (STATUS, "502 Bad Gateway"),  # HAProxy: the app went away during the first request of a connection
        # ... or during a later request of a keep-alive connection: HAProxy closes it without an answer
        (CONNECTION, "RemoteDisconnected"),
        # ... or after its headers went through and before its body did (killed while answering)
        (CONNECTION, "IncompleteRead"),
    }
    assert summary.timeouts == 0
    assert summary.ok > len(generator.failures)
    assert set(summary.served_by) == {targets.apps[i].address for i in ids}


def test_traffic_has_no_failures_when_the_instance_is_drained_first(
    standin: StandIn, targets: Targets, model: LoadBalancerModel, plane: HaproxyDataPlane, elb: Any
) -> None:
    ids = serving(standin, targets, 2)
    arn = group(standin, targets, ids, deregistration_delay=10)
    standin.wait_target_states(arn, ids, "healthy", timeout=DEADLINE)

    generator = LoadGenerator(plane.url(arn), duration=DEADLINE)
    with generator:
        wait_for(lambda: generator.summary().ok >= 20, "answers")
        elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": ids[0]}])
        standin.wait_target_states(arn, ids[:1], "gone", timeout=DEADLINE)
        targets.apps[ids[0]].stop()
        targets.apps[ids[0]].release = "v2"
        targets.apps[ids[0]].start()
        elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": ids[0]}])
        standin.wait_target_states(arn, ids, "healthy", timeout=DEADLINE)
        wait_for(lambda: generator.summary().releases.get("v2", 0) >= 10, "answers from the new release")
    summary = generator.summary()

    assert generator.failures == []
    assert summary.requests == summary.ok == summary.statuses[200]
    assert set(summary.served_by) == {targets.apps[i].address for i in ids}
    assert set(summary.releases) == {"v1", "v2"}


# --- a target is an instance and a port; an instance may be in several groups -----------------------------
def test_an_instance_in_two_groups_drained_from_one_still_takes_requests_through_the_other(
    standin: StandIn, targets: Targets, model: LoadBalancerModel, plane: HaproxyDataPlane, elb: Any
) -> None:
    ids = serving(standin, targets, 2)
    first = group(standin, targets, ids, deregistration_delay=300)
    second = group(standin, targets, ids, deregistration_delay=300)
    standin.wait_target_states(first, ids, "healthy", timeout=DEADLINE)
    standin.wait_target_states(second, ids, "healthy", timeout=DEADLINE)

    elb.deregister_targets(TargetGroupArn=first, Targets=[{"Id": ids[0]}])
    through_first = {get(plane.url(first))[2] for _ in range(6)}
    through_second = {get(plane.url(second))[2] for _ in range(6)}

    assert standin.target_states(first) == {ids[0]: "draining", ids[1]: "healthy"}
    assert standin.target_states(second) == dict.fromkeys(ids, "healthy")
    assert through_first == {targets.apps[ids[1]].address}
    assert through_second == {targets.apps[i].address for i in ids}  # round robin over both
    assert sorted(model.groups_of(ids[0])) == sorted([first, second])


def test_an_instance_registered_twice_in_a_group_is_two_targets_each_named_by_its_port(
    standin: StandIn, targets: Targets, model: LoadBalancerModel, elb: Any
) -> None:
    (instance_id,) = serving(standin, targets, 1)
    other = targets.port + 1  # checked on the app's port: both registrations are healthy
    arn = group(standin, targets, [instance_id], deregistration_delay=300, health_check_port=targets.port)
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": instance_id, "Port": other}])
    both = {(instance_id, targets.port): "healthy", (instance_id, other): "healthy"}
    wait_for(lambda: standin.port_states(arn) == both, "both registrations healthy")

    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": instance_id, "Port": other}])
    after_port = standin.port_states(arn)
    named = elb.describe_target_health(TargetGroupArn=arn, Targets=[{"Id": instance_id, "Port": other}])
    by_id = elb.describe_target_health(TargetGroupArn=arn, Targets=[{"Id": instance_id}])  # the group's port
    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": instance_id}])  # no Port: the group's port

    assert after_port == {(instance_id, targets.port): "healthy", (instance_id, other): "draining"}
    assert [(r["Target"]["Port"], r["TargetHealth"]["State"]) for r in named["TargetHealthDescriptions"]] == [
        (other, "draining")
    ]
    assert [(r["Target"]["Port"], r["TargetHealth"]["State"]) for r in by_id["TargetHealthDescriptions"]] == [
        (targets.port, "healthy")
    ]
    assert standin.port_states(arn) == {(instance_id, targets.port): "draining", (instance_id, other): "draining"}
    assert model.changes(arn)[-2:] == [
        ("deregister", [(instance_id, other)]),
        ("deregister", [(instance_id, targets.port)]),
    ]


# --- the API around it ------------------------------------------------------------------------------------
def test_unknown_and_stopped_instances_are_invalid_targets(standin: StandIn, targets: Targets, elb: Any) -> None:
    (instance_id,) = serving(standin, targets, 1)
    arn = group(standin, targets, [])
    standin.client("ec2").stop_instances(InstanceIds=[instance_id])

    with pytest.raises(ClientError) as unknown:
        elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": "i-0123456789abcdef0"}])
    with pytest.raises(ClientError) as stopped:
        elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": instance_id}])
    with pytest.raises(ClientError) as unknown_deregistered:
        elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": "i-0123456789abcdef0"}])

    assert unknown.value.response["Error"]["Code"] == "InvalidTarget"
    assert stopped.value.response["Error"]["Code"] == "InvalidTarget"
    assert "not in a running state" in stopped.value.response["Error"]["Message"]
    assert unknown_deregistered.value.response["Error"]["Code"] == "InvalidTarget"


def test_target_groups_are_found_by_name_arn_or_load_balancer_and_page(standin: StandIn, elb: Any) -> None:
    balancer = f"lb-{uuid.uuid4().hex[:8]}"
    names = sorted(name() for _ in range(3))
    arns = [standin.create_target_group(n, [], load_balancer=balancer) for n in names]
    balancer_arn = elb.describe_load_balancers(Names=[balancer])["LoadBalancers"][0]["LoadBalancerArn"]

    pages = list(elb.get_paginator("describe_target_groups").paginate(LoadBalancerArn=balancer_arn, PageSize=2))
    by_name = elb.describe_target_groups(Names=[names[1]])["TargetGroups"]
    by_arn = elb.describe_target_groups(TargetGroupArns=[arns[2]])["TargetGroups"]

    assert [len(page["TargetGroups"]) for page in pages] == [2, 1]
    assert [g["TargetGroupArn"] for page in pages for g in page["TargetGroups"]] == arns
    assert [g["TargetGroupArn"] for g in by_name] == [arns[1]]
    assert [g["TargetGroupName"] for g in by_arn] == [names[2]]


def test_describe_target_groups_pages_hold_at_most_400(standin: StandIn, elb: Any) -> None:
    arn = standin.create_target_group(name(), [])  # at least one group in the Region

    with pytest.raises(ClientError) as too_large:
        elb.describe_target_groups(PageSize=401)
    first = elb.describe_target_groups(PageSize=1)
    every = elb.describe_target_groups(PageSize=400)
    (mine,) = [g for g in every["TargetGroups"] if g["TargetGroupArn"] == arn]

    assert too_large.value.response["Error"]["Code"] == "ValidationError"
    assert "less than or equal to 400" in too_large.value.response["Error"]["Message"]
    assert len(first["TargetGroups"]) == 1
    assert ("NextMarker" in first) == (len(every["TargetGroups"]) > 1)
    assert "NextMarker" not in every  # a stand-in session holds fewer than 400 groups
    # what finding an instance's groups reads of each: its target type and the load balancers using it
    assert (mine["TargetType"], len(mine["LoadBalancerArns"])) == ("instance", 1)


def test_elb_and_cloudwatch_calls_are_counted_and_checked_against_iam(
    standin: StandIn, targets: Targets, elb: Any
) -> None:
    (instance_id,) = serving(standin, targets, 1)
    arn = group(standin, targets, [instance_id])
    standin.create_alarm(f"alarm-{uuid.uuid4().hex[:6]}")
    actions = [
        "elasticloadbalancing:DescribeTargetGroups",
        "elasticloadbalancing:DescribeTargetGroupAttributes",
        "elasticloadbalancing:DescribeTargetHealth",
        "elasticloadbalancing:RegisterTargets",
        "elasticloadbalancing:DeregisterTargets",
        "cloudwatch:DescribeAlarms",
    ]
    suffix = uuid.uuid4().hex[:6]
    before = standin.calls_snapshot()
    with standin.iam_enforced():
        allowed = clients(standin, f"deployer-{suffix}", actions)
        denied = clients(standin, f"reader-{suffix}", ["elasticloadbalancing:DescribeTargetGroups"])
        allowed["elbv2"].describe_target_groups(TargetGroupArns=[arn])
        allowed["elbv2"].describe_target_group_attributes(TargetGroupArn=arn)
        allowed["elbv2"].describe_target_health(TargetGroupArn=arn)
        allowed["elbv2"].deregister_targets(TargetGroupArn=arn, Targets=[{"Id": instance_id}])
        allowed["elbv2"].register_targets(TargetGroupArn=arn, Targets=[{"Id": instance_id}])
        allowed["cloudwatch"].describe_alarms()
        with pytest.raises(ClientError) as refused_health:
            denied["elbv2"].describe_target_health(TargetGroupArn=arn)
        with pytest.raises(ClientError) as refused_alarms:
            denied["cloudwatch"].describe_alarms()
    calls = standin.calls_snapshot() - before

    assert refused_health.value.response["Error"]["Code"] == "AccessDenied"
    assert "cloudwatch:DescribeAlarms" in refused_alarms.value.response["Error"]["Message"]
    assert calls["elbv2:DescribeTargetHealth"] == 2
    assert calls["elbv2:RegisterTargets"] == 1
    assert calls["cloudwatch:DescribeAlarms"] == 2


def clients(standin: StandIn, user: str, actions: list[str]) -> dict[str, Any]:
    keys = standin.create_user(
        user, {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
    )
    return {
        service: boto3.client(service, endpoint_url=standin.endpoint, region_name=standin.region, **keys)  # type: ignore[call-overload]
        for service in ("elbv2", "cloudwatch")
    }


def test_server_names_are_the_instance_and_its_port() -> None:
    assert server_name("i-0123456789abcdef0", 3000) == "i-0123456789abcdef0_3000"


def test_an_ip_target_group_checks_and_drains_an_instance_registered_by_its_private_address(standin: StandIn) -> None:
    """TargetType ``ip``: a target's Id is an IP address (RegisterTargets: "If the target type is ip,
    specify an IP address"), checked and routed at that address, with no EC2 instance check."""
    scale, standin.elb_time_scale = standin.elb_time_scale, SCALE
    try:
        (instance_id,) = standin.launch(1)
        standin.app_up(instance_id)
        arn = standin.create_target_group(name(), [instance_id], deregistration_delay=300, target_type="ip")
        address = standin.address_of(instance_id)
        assert address is not None
        wait_for(lambda: standin.port_states(arn) == {(address, PORT): "healthy"}, "the ip target healthy")

        standin.client("elbv2").deregister_targets(TargetGroupArn=arn, Targets=[{"Id": address}])

        assert standin.port_states(arn) == {(address, PORT): "draining"}
        # the group's VPC and the instance's (and its interface's), which the pipe matches addresses within
        (group,) = standin.client("elbv2").describe_target_groups(TargetGroupArns=[arn])["TargetGroups"]
        (reservation,) = standin.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"]
        (instance,) = reservation["Instances"]
        assert group["VpcId"] and group["VpcId"] == instance["VpcId"]
        assert [i["VpcId"] for i in instance["NetworkInterfaces"]] == [group["VpcId"]]
        assert address in [
            a["PrivateIpAddress"] for i in instance["NetworkInterfaces"] for a in i["PrivateIpAddresses"]
        ]
    finally:
        standin.elb_time_scale = scale
