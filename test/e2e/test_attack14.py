"""The fourteenth outside attack on the verdict and the audit trail (issue #17, "Done when"), end to end
against the stand-in, on the out-of-service record beside the lock (``pipe/traffic/left_out.py``) where
earlier attacks left it untried: a dry run after a killed build one of whose deregistered instances was
terminated since; a deploy with ``LOCK: 'false'`` after a killed build; the next lock holder killed while
it puts back, then a third deploy. Each test asserts what should hold."""

from __future__ import annotations

import signal

import pytest
from e2e.test_attack12 import BUILDS, _age_the_lock, _kill_at
from e2e.test_load_balancer import Fleet, make_fleet, rolling_env
from standin import StandIn
from standin.instance_app import RESTART
from support import LivePipe, run_pipe

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
