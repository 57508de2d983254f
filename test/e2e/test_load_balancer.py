"""Zero-downtime rolling deploys behind an ELBv2 target group, against the stand-in's load balancer:
each instance runs the users' Node.js app (``instance_app.py``), target health comes from real HTTP
health checks, and the traffic is real HTTP requests through HAProxy (``haproxy.py``), draining for
the deregistration delay."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from standin import StandIn
from standin.instance_app import APP_CTL, PORT, RESTART
from support import LivePipe, run_pipe, wait_until

ELB_TIME_SCALE = 0.05  # a 5-s health-check interval lasts 0.25 s, a 20-s deregistration delay 1 s
OUT_OF_SERVICE = {"draining", "unused", "gone"}


@dataclass
class Fleet:
    ids: list[str]
    group_arn: str
    group_name: str


@pytest.fixture
def fleet(standin: StandIn) -> Iterator[Fleet]:
    yield make_fleet(standin, 4)


def make_fleet(standin: StandIn, count: int, deregistration_delay: int = 20) -> Fleet:
    standin.elb_time_scale = ELB_TIME_SCALE
    ids = standin.launch(count)
    for instance_id in ids:
        standin.app_up(instance_id)
    name = f"web-{uuid.uuid4().hex[:8]}"
    arn = standin.create_target_group(name, ids, deregistration_delay=deregistration_delay)
    standin.wait_target_states(arn, ids, "healthy", timeout=30)
    return Fleet(ids, arn, name)


def rolling_env(standin: StandIn, fleet: Fleet, **variables: str) -> dict[str, str]:
    """The pipe's environment for a rollout of ``fleet`` behind its target group, with a lock of its own."""
    defaults = {"INSTANCE_IDS": " ".join(fleet.ids), "TARGET_GROUPS": fleet.group_name, "SERVICE": fleet.group_name}
    return standin.pipe_env(**{**defaults, **variables})


def every_target_in_service(standin: StandIn, fleet: Fleet) -> bool:
    states = standin.target_states(fleet.group_arn)
    return all(states.get(i, "gone") not in OUT_OF_SERVICE for i in fleet.ids)


@pytest.mark.slow
def test_a_rolling_deploy_behind_the_load_balancer_drops_no_request(standin: StandIn, tmp_path: Path) -> None:
    fleet = make_fleet(standin, 8)
    result = tmp_path / "result.json"
    env = rolling_env(
        standin,
        fleet,
        BATCH_SIZE="25%",
        MIN_HEALTHY="75%",
        COMMANDS=RESTART,
        RESULT_FILE=str(result),
    )
    with standin.traffic(fleet.group_arn) as traffic:
        run = run_pipe(env, timeout=300)

    assert run.returncode == 0, run.output
    summary = traffic.summary()
    assert summary.requests > 200
    assert traffic.failures == [], traffic.failures[:5]
    assert set(summary.served_by) == {standin.instance(i).address for i in fleet.ids}
    for number in range(1, 5):
        assert f"batch {number}/4 (2 instance(s)): draining from {fleet.group_name}" in run.output
        assert f"batch {number}/4 (2 instance(s)): healthy in the load balancer after" in run.output
    assert len(standin.sent_commands()[-4:]) == 4
    document = json.loads(result.read_text())
    assert [b["outcome"] for b in document["batches"]] == ["deployed"] * 4
    assert all(b["seconds"]["drain"] is not None and b["seconds"]["healthy"] is not None for b in document["batches"])
    assert sorted(i for b in document["batches"] for i in b["instances"]) == sorted(fleet.ids)
    assert "Batches:" in run.output
    assert every_target_in_service(standin, fleet)


def test_the_same_deploy_paced_by_max_concurrency_alone_drops_requests(standin: StandIn) -> None:
    fleet = make_fleet(standin, 8)
    env = standin.pipe_env(INSTANCE_IDS=" ".join(fleet.ids), MAX_CONCURRENCY="2", COMMANDS=RESTART)
    with standin.traffic(fleet.group_arn) as traffic:
        run = run_pipe(env, timeout=300)

    assert run.returncode == 0, run.output
    assert traffic.failures, "restarting registered instances must fail some requests"
    # the app was down: the load balancer's 503 for a refused connection, or a connection it closed
    assert {failure.kind for failure in traffic.failures} <= {"status", "connection"}, traffic.failures[:5]


def test_min_healthy_refuses_an_impossible_plan_before_anything_is_sent(standin: StandIn, fleet: Fleet) -> None:
    before = len(standin.sent_commands())
    env = rolling_env(
        standin,
        fleet,
        BATCH_SIZE="50%",
        MIN_HEALTHY="75%",
        COMMANDS=RESTART,
    )
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert "MIN_HEALTHY: nothing was sent" in run.output
    assert "would leave 2, fewer than MIN_HEALTHY 75% (3)" in run.output
    assert "at most 1 instance(s)" in run.output
    assert len(standin.sent_commands()) == before
    assert set(standin.target_states(fleet.group_arn).values()) == {"healthy"}


def test_a_fleet_already_below_min_healthy_is_refused(standin: StandIn, fleet: Fleet) -> None:
    standin.app_up(fleet.ids[0], up=False)
    standin.wait_target_states(fleet.group_arn, [fleet.ids[0]], "unhealthy", timeout=30)
    before = len(standin.sent_commands())
    env = rolling_env(
        standin,
        fleet,
        TARGET_GROUPS="auto",
        MIN_HEALTHY="100%",
        COMMANDS="true",
    )
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert "has only 3 healthy of 4 registered target(s)" in run.output
    assert f"{fleet.ids[0]}: unhealthy" in run.output
    assert len(standin.sent_commands()) == before


@pytest.mark.slow
def test_a_target_that_never_becomes_healthy_fails_the_rollout_and_rolls_back(standin: StandIn, fleet: Fleet) -> None:
    broken = fleet.ids[0]
    env = rolling_env(
        standin,
        fleet,
        BATCH_SIZE="1",
        COMMANDS=f'[ "$AWS_SSM_INSTANCE_ID" = "{broken}" ] && {APP_CTL} stop; true',
        ROLLBACK_COMMANDS=f"{APP_CTL} start && echo rolled-back",
        HEALTHY_TIMEOUT="5",
    )
    run = run_pipe(env, timeout=200)

    assert run.returncode == 1, run.output
    assert "batch 1/4 (1 instance(s)) was not healthy in the load balancer after HEALTHY_TIMEOUT 5 s" in run.output
    assert f"{broken} in {fleet.group_name}: unhealthy" in run.output
    assert f"{broken} | rolled-back" in run.output
    assert "Rollback succeeded on all 1 instance(s)" in run.output
    assert "Batch(es) 2, 3, 4 (3 instance(s)) were never started and still run the old version" in run.output
    wait_until(lambda: standin.target_states(fleet.group_arn).get(broken) == "healthy", "healthy again", 30)
    assert every_target_in_service(standin, fleet)


@pytest.mark.slow
def test_an_alarm_during_the_bake_of_batch_two_rolls_back_batches_one_and_two(standin: StandIn) -> None:
    fleet = make_fleet(standin, 3)
    alarm = f"web-5xx-{uuid.uuid4().hex[:6]}"
    standin.create_alarm(alarm)
    env = rolling_env(
        standin,
        fleet,
        BATCH_SIZE="1",
        BAKE_TIME="8",
        ALARMS=alarm,
        COMMANDS=RESTART,
        ROLLBACK_COMMANDS="echo rolled-back",
    )
    pipe = LivePipe(env)
    pipe.wait_for_line("batch 2/3 (1 instance(s)): baking 8 s", timeout=120)
    standin.set_alarm(alarm, "ALARM", "5xx above 1%")
    run = pipe.finish(timeout=120)

    assert run.returncode == 1, run.output
    assert f"Alarm {alarm}: ALARM (5xx above 1%) during the bake of batch 2/3" in run.output
    first, second, third = fleet.ids
    assert f"{first} | rolled-back" in run.output and f"{second} | rolled-back" in run.output
    assert f"{third} | rolled-back" not in run.output
    assert f"were never started and still run the old version: {third}" in run.output
    assert run.output.index(f"{second} | rolled-back") < run.output.index(f"{first} | rolled-back")  # last first
    deploys = [c for c in standin.sent_commands() if c.request.get("AlarmConfiguration")]
    assert deploys and deploys[-1].request["AlarmConfiguration"]["Alarms"] == [{"Name": alarm}]
    rollbacks = [c for c in standin.sent_commands()[-2:] if "rollback" in c.request["Comment"]]
    assert len(rollbacks) == 2 and not any(c.request.get("AlarmConfiguration") for c in rollbacks)
    assert every_target_in_service(standin, fleet)
    standin.set_alarm(alarm, "OK")


def test_an_alarm_already_in_alarm_refuses_the_deploy(standin: StandIn, fleet: Fleet) -> None:
    alarm = f"web-5xx-{uuid.uuid4().hex[:6]}"
    standin.create_alarm(alarm)
    standin.set_alarm(alarm, "ALARM", "burning")
    before = len(standin.sent_commands())
    env = rolling_env(
        standin,
        fleet,
        TARGET_GROUPS="auto",
        ALARMS=alarm,
        COMMANDS="true",
    )
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert f"ALARMS: nothing was sent. {alarm}: ALARM (burning)" in run.output
    assert len(standin.sent_commands()) == before
    assert set(standin.target_states(fleet.group_arn).values()) == {"healthy"}


def test_sigterm_while_a_batch_is_drained_leaves_every_instance_registered(standin: StandIn) -> None:
    fleet = make_fleet(standin, 2, deregistration_delay=600)  # 30 s of draining at the stand-in's scale
    before = len(standin.sent_commands())
    env = rolling_env(
        standin,
        fleet,
        COMMANDS="true",
    )
    pipe = LivePipe(env)
    pipe.wait_for_line("batch 1/2 (1 instance(s)): draining from", timeout=60)
    wait_until(lambda: "draining" in standin.target_states(fleet.group_arn).values(), "draining", 10)
    pipe.signal(signal.SIGTERM)
    run = pipe.finish(timeout=60)

    assert run.returncode != 0, run.output
    assert "SIGTERM" in run.output and "registered again" in run.output
    assert every_target_in_service(standin, fleet)
    assert len(standin.sent_commands()) == before  # stopped while draining: nothing was deployed


def test_auto_finds_the_target_groups_and_the_dry_run_prints_the_plan(standin: StandIn, fleet: Fleet) -> None:
    before = len(standin.sent_commands())
    env = rolling_env(
        standin,
        fleet,
        TARGET_GROUPS="auto",
        BATCH_SIZE="2",
        CANARY="1",
        MIN_HEALTHY="50%",
        BAKE_TIME="10",
        COMMANDS="true",
        DRY_RUN="true",
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert "batches:   3, one command each" in run.output
    assert f"batch 1/3 (1 instance(s)): {fleet.ids[0]}" in run.output
    assert f"batch 2/3 (2 instance(s)): {fleet.ids[1]}, {fleet.ids[2]}" in run.output
    assert f"target group {fleet.group_name}: 4 healthy of 4 registered, 4 of them deployed here" in run.output
    assert "bounds:    drain 50 s, healthy 300 s, MIN_HEALTHY 50%, bake 10 s" in run.output
    assert len(standin.sent_commands()) == before
    assert set(standin.target_states(fleet.group_arn).values()) == {"healthy"}


def test_each_batch_leaves_and_rejoins_a_group_target_groups_does_not_name_on_every_port(standin: StandIn) -> None:
    """The fleet is also in a second group, the first instance twice (the app's port and 8080, both
    checked on the app's port): the plan names it, and each batch leaves it and comes back on the
    ports it was registered with."""
    fleet = make_fleet(standin, 2)
    other = f"admin-{uuid.uuid4().hex[:8]}"
    other_arn = standin.create_target_group(other, fleet.ids, deregistration_delay=20, health_check_port=PORT)
    standin.client("elbv2").register_targets(TargetGroupArn=other_arn, Targets=[{"Id": fleet.ids[0], "Port": 8080}])
    registered = {(i, PORT): "healthy" for i in fleet.ids} | {(fleet.ids[0], 8080): "healthy"}
    wait_until(lambda: standin.port_states(other_arn) == registered, "every registration healthy", 30)
    journal = len(standin.load_balancer.changes(other_arn))
    dry = run_pipe(rolling_env(standin, fleet, COMMANDS="true", DRY_RUN="true"))

    assert dry.returncode == 0, dry.output
    assert f"target group {fleet.group_name}: 2 healthy of 2 registered, 2 of them deployed here" in dry.output
    assert (
        f"target group {other}: 3 healthy of 3 registered, 3 of them deployed here; deregistration delay 20 s "
        "(not in TARGET_GROUPS: the instances are registered in it, so each batch leaves it too)"
    ) in dry.output
    assert len(standin.load_balancer.changes(other_arn)) == journal  # a dry run changes nothing

    run = run_pipe(rolling_env(standin, fleet, COMMANDS="true"), timeout=200)

    assert run.returncode == 0, run.output
    first, second = fleet.ids
    assert standin.load_balancer.changes(other_arn)[journal:] == [
        ("deregister", [(first, PORT), (first, 8080)]),
        ("register", [(first, PORT), (first, 8080)]),
        ("deregister", [(second, PORT)]),
        ("register", [(second, PORT)]),
    ]
    assert f"batch 1/2 (1 instance(s)): draining from {fleet.group_name}, {other}" in run.output
    wait_until(lambda: standin.port_states(other_arn) == registered, "every registration healthy again", 30)
    assert every_target_in_service(standin, fleet)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TARGET_GROUPS", "no-such-group-x1", "there is no target group 'no-such-group-x1'"),
        ("TARGET_GROUPS", "web_api", "is not a target group name"),
        ("BATCH_SIZE", "0", "BATCH_SIZE"),
        ("CANARY", "few", "CANARY"),
        ("MIN_HEALTHY", "101%", "MIN_HEALTHY"),
        ("DRAIN_TIMEOUT", "0", "DRAIN_TIMEOUT"),
        ("HEALTHY_TIMEOUT", "soon", "HEALTHY_TIMEOUT"),
        ("BAKE_TIME", "1h", "BAKE_TIME"),
        ("ALARMS", "no-such-alarm-x1", "there is no CloudWatch alarm 'no-such-alarm-x1'"),
        ("LOCK", "maybe", "must be auto, true or false"),
    ],
)
def test_bad_rollout_input_is_named_and_nothing_is_sent_or_deregistered(
    standin: StandIn, fleet: Fleet, variable: str, value: str, expected: str
) -> None:
    before = len(standin.sent_commands())
    variables = {
        "INSTANCE_IDS": " ".join(fleet.ids),
        "TARGET_GROUPS": fleet.group_name,
        "COMMANDS": "true",
        "SERVICE": fleet.group_name,
    }
    env = standin.pipe_env(**{**variables, variable: value})
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert variable in run.output and expected in run.output
    assert "Traceback" not in run.output
    assert len(standin.sent_commands()) == before
    assert set(standin.target_states(fleet.group_arn).values()) == {"healthy"}


def test_a_held_lock_fails_fast_naming_the_holders_build(standin: StandIn, fleet: Fleet) -> None:
    env = standin.pipe_env(
        INSTANCE_IDS=fleet.ids[0],
        COMMANDS="sleep 20",
        LOCK="true",
        SERVICE=fleet.group_name,
        ENVIRONMENT="prod",
        BITBUCKET_BUILD_NUMBER="41",
    )
    holder = LivePipe(env)
    holder.wait_for_line(f"Lock /deploy-lock/{fleet.group_name}/prod taken", timeout=60)
    before = len(standin.sent_commands())
    second = rolling_env(
        standin,
        fleet,
        COMMANDS="true",
        ENVIRONMENT="prod",
        BITBUCKET_BUILD_NUMBER="42",
    )
    run = run_pipe(second, timeout=60)
    holder.signal(signal.SIGTERM)
    first = holder.finish(timeout=60)

    assert run.returncode == 1, run.output
    assert "LOCK: nothing was sent." in run.output
    assert "https://bitbucket.org/acme/web-api/pipelines/results/41" in run.output
    assert f"aws ssm delete-parameter --name /deploy-lock/{fleet.group_name}/prod" in run.output
    assert all(fleet.ids[1] not in c.request.get("InstanceIds", []) for c in standin.sent_commands()[before:])
    assert set(standin.target_states(fleet.group_arn).values()) == {"healthy"}
    assert f"Lock /deploy-lock/{fleet.group_name}/prod released" in first.output
    parameters = standin.client("ssm").get_parameters(Names=[f"/deploy-lock/{fleet.group_name}/prod"])
    assert parameters["Parameters"] == []  # released on SIGTERM too


@pytest.mark.slow
def test_a_stale_lock_is_taken_over_with_a_warning(standin: StandIn, fleet: Fleet) -> None:
    name = f"/deploy-lock/{fleet.group_name}/prod"
    stale = {
        "v": 1,
        "id": str(uuid.uuid4()),
        "holder": "arn:aws:sts::123456789012:assumed-role/deploy/dead",
        "repo": "acme/other",
        "build": "7",
        "build_url": "https://bitbucket.org/acme/other/pipelines/results/7",
        "commit": "fedcba9",
        "acquired_at": "2026-01-01T00:00:00Z",
        "expires_at": "2026-01-01T01:00:00Z",
    }
    standin.client("ssm").put_parameter(Name=name, Value=json.dumps(stale), Type="String")
    env = rolling_env(
        standin,
        fleet,
        BATCH_SIZE="2",
        MIN_HEALTHY="50%",
        COMMANDS="true",
        ENVIRONMENT="prod",
    )
    run = run_pipe(env, timeout=200)

    assert run.returncode == 0, run.output
    assert "https://bitbucket.org/acme/other/pipelines/results/7" in run.output  # the warning names it
    assert f"Lock {name} taken" in run.output and f"Lock {name} released" in run.output
    assert standin.client("ssm").get_parameters(Names=[name])["Parameters"] == []
