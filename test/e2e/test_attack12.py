"""The twelfth outside attack on the verdict and the audit trail (issue #17, "Done when"), end to end
against the stand-in, on what earlier attacks left untried: a build killed (SIGKILL: no cleanup at all)
while a batch is out of its target group and the Auto Scaling group's processes are held, then the next
deploy, which takes the stale lock over. Each test asserts what should hold."""

from __future__ import annotations

import datetime
import json
import signal

import pytest
from e2e.test_auto_scaling import HELD, group_env, make_group
from standin import StandIn
from standin.instance_app import RESTART
from support import LivePipe, run_pipe

from pipe.config.lock import LOCK_EXPIRY_SECONDS

BUILDS = "https://bitbucket.org/acme/web-api/pipelines/results/"


def _age_the_lock(standin: StandIn, name: str) -> None:
    """The lock as Parameter Store shows it once the killed build's last renewal is long past (as
    test_deploy_lock.py does: the test does not wait the 3 minutes)."""
    ssm = standin.client("ssm")
    left = json.loads(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    aged = datetime.timedelta(seconds=LOCK_EXPIRY_SECONDS + 60)
    times = {
        field: (datetime.datetime.fromisoformat(left[field]) - aged).strftime("%Y-%m-%dT%H:%M:%SZ")
        for field in left
        if field.endswith("_at")
    }
    ssm.put_parameter(Name=name, Value=json.dumps({**left, **times}), Type="String", Overwrite=True)


@pytest.mark.slow
def test_the_deploy_that_takes_over_a_killed_builds_lock_puts_back_what_the_killed_build_took_out(
    standin: StandIn,
) -> None:
    group = make_group(standin, 2)
    name = f"/deploy-lock/{group.name}/_"
    killed = LivePipe(
        group_env(standin, group, COMMANDS="echo deploy-is-running\nsleep 600", BITBUCKET_BUILD_NUMBER="41")
    )
    try:
        killed.wait_for_line("deploy-is-running", timeout=180)
    finally:
        killed.signal(signal.SIGKILL)  # the build is killed: nothing is cleaned up
    killed.finish(timeout=60)
    for command in standin.sent_commands():  # its command dies with the runner's session, as on AWS after a while
        standin.client("ssm").cancel_command(CommandId=command.command_id)
    serving = [i for i, state in standin.target_states(group.target_group_arn).items() if state == "healthy"]
    assert len(serving) == 1, standin.target_states(group.target_group_arn)  # the killed batch is out of service
    (out,) = set(group.ids) - set(serving)
    assert standin.suspended_processes(group.name) == HELD  # and scaling is held
    _age_the_lock(standin, name)

    run = run_pipe(group_env(standin, group, COMMANDS=RESTART, BITBUCKET_BUILD_NUMBER="42"), timeout=300)

    assert f"Lock {name} was stale" in run.output, run.output
    assert run.returncode == 0, run.output
    # what should hold: the fleet serves whole again and Auto Scaling is back as the team left it
    states = standin.target_states(group.target_group_arn)
    assert all(states.get(i) in ("healthy", "initial") for i in group.ids), (states, run.output)
    assert standin.suspended_processes(group.name) == set(), run.output
    # and the log says what the killed build had left out
    assert f"Build {BUILDS}41 took {out} out of {group.name} and never put them back" in run.output
    assert f"Build {BUILDS}41 suspended {', '.join(sorted(HELD))} of the Auto Scaling group {group.name}" in run.output
    assert standin.client("ssm").get_parameters(Names=[f"{name}/out-of-service"])["Parameters"] == []
