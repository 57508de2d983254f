"""The fourteenth outside attack on the verdict and the audit trail (issue #17, "Done when"), end to end
against the stand-in, on the out-of-service record beside the lock (``pipe/traffic/left_out.py``) where
earlier attacks left it untried: a dry run after a killed build one of whose deregistered instances was
terminated since; a deploy with ``LOCK: 'false'`` after a killed build; the next lock holder killed while
it puts back, then a third deploy. Each test asserts what should hold."""

from __future__ import annotations

import signal
import uuid

import pytest
from e2e.test_attack12 import BUILDS, _age_the_lock, _kill_at
from e2e.test_load_balancer import ELB_TIME_SCALE, Fleet, make_fleet, rolling_env
from standin import StandIn
from standin.instance_app import RESTART
from support import LivePipe, run_pipe, wait_until

SERVING = ("healthy", "initial")
SLUG_LOCK = "/deploy-lock/web-api/_"  # the lock without SERVICE: the repository's slug (acme/web-api)


def _killed_with_a_batch_of_two_out_of_service(
    standin: StandIn, default_service: bool = False
) -> tuple[Fleet, list[str]]:
    """Three instances behind a group; a deploy in batches of two (build 41, LOCK on) killed while its first
    batch is deregistered and its COMMANDS run; its commands die with it. Returns the fleet and the two out.
    ``default_service``: the build's SERVICE is the repository's slug (a team that never set it)."""
    fleet = make_fleet(standin, 3)
    env = rolling_env(
        standin,
        fleet,
        COMMANDS="echo deploy-is-running\nsleep 600",
        BATCH_SIZE="2",
        MIN_HEALTHY="1",
        LOCK="true",
        BITBUCKET_BUILD_NUMBER="41",
    )
    if default_service:
        del env["SERVICE"]
    _kill_at(env, "deploy-is-running")
    for command in standin.sent_commands():  # its command dies with the runner's session, as on AWS after a while
        standin.client("ssm").cancel_command(CommandId=command.command_id)
    states = standin.target_states(fleet.group_arn)
    out = sorted(i for i in fleet.ids if states.get(i) not in SERVING)
    assert len(out) == 2, states
    return fleet, out


def _lock(fleet: Fleet) -> str:
    return f"/deploy-lock/{fleet.group_name}/_"


@pytest.mark.slow
def test_a_dry_run_after_a_killed_build_whose_instance_was_terminated_gives_the_deploys_verdict(
    standin: StandIn,
) -> None:
    """DRY_RUN exits 0 when it "found nothing to refuse" and gives "the verdict the deploy then gives"
    (README, The deploy lock when a build dies). One of the two instances the killed build took out was
    terminated since: the deploy cannot register it again (InvalidTarget), so only two instances serve when
    it reads the fleet, and MIN_HEALTHY 2 with batches of one refuses. The dry run must not count the
    terminated instance as a healthy target it would put back."""
    fleet, (gone, _) = _killed_with_a_batch_of_two_out_of_service(standin)
    standin.client("ec2").terminate_instances(InstanceIds=[gone])
    _age_the_lock(standin, _lock(fleet))
    left = [i for i in fleet.ids if i != gone]
    variables = {
        "INSTANCE_IDS": " ".join(left),
        "COMMANDS": RESTART,
        "BATCH_SIZE": "1",
        "MIN_HEALTHY": "2",
        "LOCK": "true",
        "HEALTHY_TIMEOUT": "60",
        "BITBUCKET_BUILD_NUMBER": "42",
    }

    dry = run_pipe(rolling_env(standin, fleet, DRY_RUN="true", **variables), timeout=300)
    run = run_pipe(rolling_env(standin, fleet, **variables), timeout=400)

    # what should hold: the dry run's verdict is the deploy's
    assert dry.returncode == run.returncode, (dry.output, run.output)
    assert f"{gone} (" in dry.output and "no longer running" in dry.output, dry.output


@pytest.mark.slow
def test_a_deploy_with_the_lock_off_after_a_killed_build_says_what_the_killed_build_left_out(
    standin: StandIn,
) -> None:
    """LOCK 'false' after a build (LOCK on) killed with a batch of two out of the group: this deploy neither
    takes the lock nor reads the record. Whatever it does, it must not leave those two instances out of
    service while it exits 0 without naming what the killed build left out."""
    try:
        fleet, out = _killed_with_a_batch_of_two_out_of_service(standin, default_service=True)
        env = rolling_env(standin, fleet, COMMANDS=RESTART, LOCK="false", MIN_HEALTHY="0", BITBUCKET_BUILD_NUMBER="42")
        del env["SERVICE"]  # it names the lock and a release ledger: refused with neither

        run = run_pipe(env, timeout=400)
    finally:  # the slug's lock and record must not outlive this test (other tests may deploy without SERVICE)
        ssm = standin.client("ssm")
        ssm.delete_parameters(Names=[SLUG_LOCK, f"{SLUG_LOCK}/out-of-service"])

    states = standin.target_states(fleet.group_arn)
    back = all(states.get(i) in SERVING for i in fleet.ids)
    told = f"{BUILDS}41" in run.output and all(i in run.output for i in out) and "out-of-service" in run.output
    # what should hold: the fleet serves whole again, or the step says what the killed build left out
    assert back or told, (states, run.output)


@pytest.mark.slow
def test_the_next_holder_killed_while_it_puts_back_leaves_it_to_the_third_deploy(standin: StandIn) -> None:
    """The deploy that takes over the killed build's lock is itself killed (SIGKILL) while it puts back: it
    registered the killed build's batch again and waits for it to be healthy (its app is down meanwhile, so
    the record is still there when it dies); a third deploy takes its lock over. At the end the whole fleet
    serves, the record is gone and the third deploy succeeds."""
    fleet, out = _killed_with_a_batch_of_two_out_of_service(standin)
    for instance in out:
        standin.app_up(instance, up=False)
    _age_the_lock(standin, _lock(fleet))
    second = LivePipe(rolling_env(standin, fleet, COMMANDS=RESTART, LOCK="true", BITBUCKET_BUILD_NUMBER="42"))
    try:
        second.wait_for_line("never put them back", timeout=240)
    finally:
        second.signal(signal.SIGKILL)
    second.finish(timeout=60)
    record = standin.client("ssm").get_parameters(Names=[f"{_lock(fleet)}/out-of-service"])["Parameters"]
    assert record, second.output  # killed before the put-back ended
    for instance in out:
        standin.app_up(instance)
    _age_the_lock(standin, _lock(fleet))

    run = run_pipe(rolling_env(standin, fleet, COMMANDS=RESTART, LOCK="true", BITBUCKET_BUILD_NUMBER="43"), timeout=400)

    states = standin.target_states(fleet.group_arn)
    assert run.returncode == 0, run.output
    assert f"Build {BUILDS}41 took" in run.output, run.output
    assert all(states.get(i) in SERVING for i in fleet.ids), (states, run.output)
    assert standin.client("ssm").get_parameters(Names=[f"{_lock(fleet)}/out-of-service"])["Parameters"] == []


def _fleet_on_two_ports(standin: StandIn) -> tuple[Fleet, list[tuple[str, int]]]:
    """Two instances each registered twice in one group, on ports 3000 and 3001 (health checked on 3000, where
    the app listens): every (instance, port) target."""
    standin.elb_time_scale = ELB_TIME_SCALE
    ids = standin.launch(2)
    for instance in ids:
        standin.app_up(instance)
    name = f"web-{uuid.uuid4().hex[:8]}"
    arn = standin.create_target_group(name, ids, deregistration_delay=20, health_check_port=3000)
    standin.client("elbv2").register_targets(TargetGroupArn=arn, Targets=[{"Id": i, "Port": 3001} for i in ids])
    targets = [(i, port) for i in ids for port in (3000, 3001)]
    wait_until(lambda: all(standin.port_states(arn).get(t) == "healthy" for t in targets), "healthy", timeout=60)
    return Fleet(ids, arn, name), targets


@pytest.mark.slow
def test_a_killed_builds_instance_registered_on_two_ports_is_put_back_on_both(standin: StandIn) -> None:
    """A build killed while its first instance, registered twice in the group (two ports), is out: the record
    names both registrations, and the deploy that takes the lock over registers both again; at the end every
    (instance, port) target serves."""
    fleet, targets = _fleet_on_two_ports(standin)
    _kill_at(
        rolling_env(
            standin, fleet, COMMANDS="echo deploy-is-running\nsleep 600", LOCK="true", BITBUCKET_BUILD_NUMBER="41"
        ),
        "deploy-is-running",
    )
    for command in standin.sent_commands():
        standin.client("ssm").cancel_command(CommandId=command.command_id)
    ports = standin.port_states(fleet.group_arn)
    out = [t for t in targets if ports.get(t) not in SERVING]
    assert len(out) == 2 and out[0][0] == out[1][0], ports  # one instance, both its ports
    _age_the_lock(standin, _lock(fleet))

    run = run_pipe(rolling_env(standin, fleet, COMMANDS=RESTART, LOCK="true", BITBUCKET_BUILD_NUMBER="42"), timeout=400)

    ports = standin.port_states(fleet.group_arn)
    assert run.returncode == 0, run.output
    assert all(ports.get(t) in SERVING for t in targets), (ports, run.output)
    assert f"Build {BUILDS}41 took {out[0][0]}" in run.output, run.output


@pytest.mark.slow
def test_a_record_left_by_another_service_is_not_touched(standin: StandIn) -> None:
    """A killed build of one SERVICE left its record; a deploy of another SERVICE (its own lock) to a fleet of
    its own neither reads nor changes it: the record is the first service's to put back."""
    fleet, _ = _killed_with_a_batch_of_two_out_of_service(standin)
    record = f"{_lock(fleet)}/out-of-service"
    before = standin.client("ssm").get_parameter(Name=record)["Parameter"]
    other = make_fleet(standin, 1)

    run = run_pipe(rolling_env(standin, other, COMMANDS=RESTART, LOCK="true", MIN_HEALTHY="0"), timeout=300)

    after = standin.client("ssm").get_parameter(Name=record)["Parameter"]
    assert run.returncode == 0, run.output
    assert (after["Value"], after["Version"]) == (before["Value"], before["Version"])
    assert "never put them back" not in run.output, run.output
