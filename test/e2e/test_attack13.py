"""The thirteenth outside attack on the verdict and the audit trail (issue #17, "Done when"), end to end
against the stand-in, on what earlier attacks left untried: the out-of-service record of a build killed
(SIGKILL) while a batch of two was out of its target group, one of which was terminated since (the next
deploy that takes the lock over must put back the other); a dry run after a killed build; two release
deploys of one service at once without TARGET_GROUPS (LOCK off). Each test asserts what should hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e.release_support import B, build
from e2e.test_attack12 import BUILDS, _age_the_lock, _kill_at
from e2e.test_attack_held import fleet_on_disk
from e2e.test_ledger import entries as ledger_entries
from e2e.test_load_balancer import Fleet, make_fleet, rolling_env
from e2e.test_releases import release_env
from standin import StandIn
from standin.instance_app import RESTART
from support import LivePipe, run_pipe, wait_until

SERVING = ("healthy", "initial")


def _kill_a_batch_of_two_out_of_service(standin: StandIn, env: dict[str, str]) -> None:
    _kill_at(env, "deploy-is-running")
    for command in standin.sent_commands():  # its command dies with the runner's session, as on AWS after a while
        standin.client("ssm").cancel_command(CommandId=command.command_id)


def _killed_with_a_batch_of_two_out_of_service(standin: StandIn) -> Fleet:
    """Three instances behind a group; a deploy in batches of two (build 41) killed while its first batch is
    deregistered and its COMMANDS run."""
    fleet = make_fleet(standin, 3)
    env = rolling_env(
        standin,
        fleet,
        COMMANDS="echo deploy-is-running\nsleep 600",
        BATCH_SIZE="2",
        MIN_HEALTHY="1",
        BITBUCKET_BUILD_NUMBER="41",
    )
    _kill_a_batch_of_two_out_of_service(standin, env)
    return fleet


@pytest.mark.slow
def test_a_killed_builds_batch_is_put_back_although_one_of_its_instances_was_terminated_since(
    standin: StandIn,
) -> None:
    """RegisterTargets is all or nothing: one target that is not running fails the call (InvalidTarget, API
    reference). The put-back must not leave the batch's running instance out of service with it."""
    fleet = _killed_with_a_batch_of_two_out_of_service(standin)
    states = standin.target_states(fleet.group_arn)
    out = sorted(i for i in fleet.ids if states.get(i) not in SERVING)
    assert len(out) == 2, states
    gone, survivor = out
    standin.client("ec2").terminate_instances(InstanceIds=[gone])
    _age_the_lock(standin, f"/deploy-lock/{fleet.group_name}/_")
    left = [i for i in fleet.ids if i != gone]

    run = run_pipe(
        rolling_env(
            standin,
            fleet,
            INSTANCE_IDS=" ".join(left),
            COMMANDS=RESTART,
            BITBUCKET_BUILD_NUMBER="42",
            HEALTHY_TIMEOUT="60",
        ),
        timeout=400,
    )

    assert "was stale" in run.output, run.output
    states = standin.target_states(fleet.group_arn)
    # what should hold: every running instance of the fleet serves again, the survivor of the killed batch too
    assert all(states.get(i) in SERVING for i in left), (states, run.output)
    assert f"Build {BUILDS}41 took" in run.output and survivor in run.output, run.output
    assert f"{gone} could not be registered again in {fleet.group_name}" in run.output, run.output
    assert "were not healthy after HEALTHY_TIMEOUT" not in run.output, run.output  # none waited for in vain
    assert run.returncode == 0, run.output


@pytest.mark.slow
def test_a_dry_run_after_a_killed_build_gives_the_verdict_the_deploy_then_gives(standin: StandIn) -> None:
    """DRY_RUN runs every check and exits 0 when it "found nothing to refuse" (README, Exit codes). After a
    killed build left two of three instances out of the group, the deploy that takes the lock over puts
    them back before it reads the fleet, and goes through; the dry run before it must not refuse it for a
    MIN_HEALTHY shortfall that the deploy would not meet, and says what the deploy would put back."""
    fleet = _killed_with_a_batch_of_two_out_of_service(standin)
    _age_the_lock(standin, f"/deploy-lock/{fleet.group_name}/_")
    variables = {"COMMANDS": RESTART, "BATCH_SIZE": "1", "BITBUCKET_BUILD_NUMBER": "42"}

    dry = run_pipe(rolling_env(standin, fleet, DRY_RUN="true", **variables), timeout=300)
    run = run_pipe(rolling_env(standin, fleet, **variables), timeout=300)

    assert run.returncode == 0, run.output
    assert dry.returncode == run.returncode, dry.output
    assert "out-of-service" in dry.output, dry.output


GATE = "/srv/hold-activation"  # on the instance: the activation of B waits while it exists


@pytest.mark.slow
def test_two_release_deploys_at_once_leave_a_ledger_that_names_what_runs(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """Two release deploys of the service at once, without TARGET_GROUPS: B's activation is held on the
    instance while C's deploy starts; C's activation would fail. Found by attack 13: with LOCK off (its
    default without TARGET_GROUPS then), C's rollback went back to A, the release live when C started,
    past B: the disk ran A, the ledger named B live. LOCK is now on by default in release mode: C hears
    that B's deploy holds the lock and sends nothing; the disk, the ledger and ACTION: status agree."""
    (instance,) = standin.launch(1)
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    activate = (
        'echo "activated $(cat version.txt)"\n'
        f'while [ "$(cat version.txt)" = B ] && [ -e {GATE} ]; do sleep 0.2; done\n'
        '[ "$(cat version.txt)" != C ]'
    )

    def env(clone: str, version: str, number: str) -> dict[str, str]:
        path = tmp_path / clone
        return release_env(
            standin,
            [instance],
            path,
            bucket,
            service,
            ARTIFACT=build(path, version),
            BITBUCKET_BUILD_NUMBER=number,
            ACTIVATE_COMMANDS=activate,
        )

    assert run_pipe(env("a", "A", "1"), timeout=300).returncode == 0
    gate = Path(standin.instance_path(instance, GATE))
    gate.parent.mkdir(parents=True, exist_ok=True)
    gate.write_text("")
    x = LivePipe(env("b", "B", "2"))
    try:
        wait_until(lambda: fleet_on_disk(standin, [instance])[instance] == B, "B switched", timeout=240)
        y = LivePipe(env("c", "C", "3"))
        try:
            wait_until(
                lambda: "Sent command" in y.output or y.process.poll() is not None, "C's first command", timeout=120
            )
        finally:
            gate.unlink()
            y_run = y.finish(timeout=300)
    finally:
        x_run = x.finish(timeout=300)

    disk = fleet_on_disk(standin, [instance])[instance]
    newest_live = next(e for e in reversed(ledger_entries(standin, service)) if e["status"] == "succeeded")
    status = run_pipe(release_env(standin, [instance], tmp_path / "a", bucket, service, ACTION="status"), timeout=300)
    assert y_run.returncode == 1 and "LOCK: nothing was sent. Another deploy holds the lock" in y_run.output
    assert "Sent command" not in y_run.output
    assert x_run.returncode == 0, x_run.output
    assert disk == B and newest_live["release"] == B, (disk, ledger_entries(standin, service))
    assert status.returncode == 0, status.output
