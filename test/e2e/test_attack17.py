"""The seventeenth outside attack on the verdict and the audit trail (issue #17, "Done when"), end to end
against the stand-in, on what changed last and what attack 16 left untried: a stop while a baked batch
drains for its rollback (before any rollback command), two SERVICEs sharing one APP_DIR, RELEASE:
previous with TARGETS by tag after a killed build. Each test ends with the three truths compared: what
the instances run, what the ledger says, what the step said, and ACTION: status."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e.release_support import A, B, build
from e2e.test_attack9 import rolling
from e2e.test_attack10 import a_then_b_env, ship
from e2e.test_attack12 import _age_the_lock, _kill_at
from e2e.test_attack_held import fleet_on_disk, ledger_fleet, result
from e2e.test_ledger import entries as ledger_entries
from e2e.test_load_balancer import Fleet, every_target_in_service, make_fleet
from e2e.test_proof_of_serving import README_ECOSYSTEM, RELEASE_A, RELEASE_B, RecipeFleet
from e2e.test_proof_of_serving import fleet_with as fleet_with
from e2e.test_releases import APP_DIR, release_env
from standin import StandIn
from support import LivePipe, run_pipe, wait_until

LONG_DRAIN = "2000"  # deregistration_delay.timeout_seconds: 100 s at the stand-in's ELB time scale


def _status(standin: StandIn, ids: list[str], clone: Path, bucket: str, service: str, **extra: str) -> tuple[int, str]:
    env = release_env(standin, ids, clone, bucket, service, ACTION="status", BITBUCKET_BUILD_NUMBER="99", **extra)
    done = run_pipe(env, timeout=300)
    return done.returncode, done.output


@pytest.mark.slow
def test_a_stop_while_a_baked_batch_drains_for_its_rollback_records_the_rollback_as_interrupted(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on two instances behind a group, one per batch. An alarm fires while batch 1 (on B) bakes: its
    rollback begins by draining it again, and the pipeline is stopped during that drain, before any rollback
    command. The first instance still runs B, the second A. The README: SSM_DEPLOY_ROLLBACK is `interrupted`
    when a rollback had begun (never `not run`); the ledger and the result file name the fleet as on disk;
    ACTION: status names the drift. Before the fix the result said rollback 'not run', interrupted_phase
    None, while its message said the pipeline was stopped during the rollback."""
    fleet = make_fleet(standin, 2)
    first, second = fleet.ids
    alarm = f"web-5xx-{uuid.uuid4().hex[:6]}"
    standin.create_alarm(alarm)
    env = a_then_b_env(standin, fleet, tmp_path, bucket, service, BAKE_TIME="600", ALARMS=alarm)
    pipe = LivePipe(env)
    pipe.wait_for_line("batch 1/2 (1 instance(s)): baking", timeout=240)
    standin.client("elbv2").modify_target_group_attributes(
        TargetGroupArn=fleet.group_arn,
        Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": LONG_DRAIN}],
    )
    standin.set_alarm(alarm, "ALARM", "5xx above 1%")
    draining = "batch 1/2 (1 instance(s)): draining from"
    wait_until(lambda: pipe.output.count(draining) == 2, "batch 1 draining for its rollback", 240)
    pipe.signal(signal.SIGTERM)
    stopped = pipe.finish(timeout=300)

    assert stopped.returncode == 1, stopped.output
    assert "Traceback" not in stopped.output
    disk = fleet_on_disk(standin, fleet.ids)
    assert disk == {first: B, second: A}, stopped.output
    entry = ledger_entries(standin, service)[-1]
    assert entry["release"] == B and entry["status"] != "succeeded", entry
    assert ledger_fleet(entry) == disk, (entry, stopped.output)
    document = result(tmp_path)
    assert document["fleet"] == disk, stopped.output
    dotenv = (tmp_path / "ssm-deploy-result.json.env").read_text()
    rollback = (document["rollback"], document["interrupted_phase"], "SSM_DEPLOY_ROLLBACK='interrupted'" in dotenv)
    assert rollback == ("interrupted", "rollback", True), (rollback, stopped.output)
    wait_until(lambda: every_target_in_service(standin, fleet), "every target back in service", 240)
    code, output = _status(standin, fleet.ids, tmp_path, bucket, service)
    assert code != 0, output
    assert first in output and B in output, output


@pytest.mark.slow
def test_two_services_sharing_one_app_dir_leave_no_ledger_calling_a_release_live_that_no_instance_runs(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """SERVICE api ships A to APP_DIR on one instance; SERVICE worker (another ledger, another lock) then ships
    B to the same APP_DIR on the same instance. api's ledger still calls A live; the instance runs B. Either
    the second service is refused (the directory holds another service's releases) or api's ACTION: status
    names the drift: never exit 0 with 'No drift' while the instance runs another service's release."""
    (instance,) = ids = standin.launch(1)
    worker = f"{service}-worker"
    ship(
        release_env(standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "A"), BITBUCKET_BUILD_NUMBER="1")
    )
    other = release_env(
        standin, ids, tmp_path, bucket, worker, ARTIFACT=build(tmp_path, "B"), BITBUCKET_BUILD_NUMBER="2"
    )
    second = run_pipe(other, timeout=300)
    assert "Traceback" not in second.output
    disk = fleet_on_disk(standin, ids)
    api = ledger_entries(standin, service)[-1]
    if second.returncode == 0:
        assert disk == {instance: B}, second.output
        code, output = _status(standin, ids, tmp_path, bucket, service)
        assert code != 0, output
        assert "No drift" not in output, output
    else:  # refused: api's release untouched
        assert disk == {instance: A}, second.output
        assert (api["release"], ledger_fleet(api)) == (A, disk), api


Z = "000000-0123456"


def killed_build_on_a_tagged_fleet(standin: StandIn, tmp_path: Path, bucket: str, service: str) -> tuple[Fleet, str]:
    """Z, then A live on 2 instances tagged Service=<the tag returned>; the build of B is killed while its
    first batch bakes: the first instance runs B, the second A, and the killed build's lock has expired."""
    fleet = make_fleet(standin, 2)
    tag = f"svc-{uuid.uuid4().hex[:8]}"
    standin.client("ec2").create_tags(Resources=fleet.ids, Tags=[{"Key": "Service", "Value": tag}])
    ship(rolling(standin, fleet, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "Z"), BITBUCKET_BUILD_NUMBER="0"))
    _kill_at(a_then_b_env(standin, fleet, tmp_path, bucket, service, BAKE_TIME="600"), "baking 600 s")
    for command in standin.sent_commands():
        standin.client("ssm").cancel_command(CommandId=command.command_id)
    assert fleet_on_disk(standin, fleet.ids) == dict(zip(fleet.ids, (B, A), strict=True))
    _age_the_lock(standin, f"/deploy-lock/{service}/prod")
    return fleet, tag


@pytest.mark.slow
def test_release_previous_with_targets_by_tag_after_a_killed_deploy_is_refused_before_switching(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """Z, then A live on 2 instances; the build of B is killed while its first batch bakes (first on B, second
    on A). RELEASE: previous without a rollout, the instances named by TARGETS (a tag) rather than INSTANCE_IDS:
    it must read each instance's current first, as the README says, and be refused before switching anything
    (not take the fleet to Z). Before the fix the one command to the TARGETS named no instance, the read was
    skipped, and both went to Z."""
    fleet, tag = killed_build_on_a_tagged_fleet(standin, tmp_path, bucket, service)
    first, second = fleet.ids

    back = release_env(standin, fleet.ids, tmp_path, bucket, service, RELEASE="previous", BITBUCKET_BUILD_NUMBER="3")
    back.pop("INSTANCE_IDS")
    back["TARGETS"] = f"tag:Service={tag}"
    run = run_pipe(back, timeout=300)

    assert "Traceback" not in run.output
    assert fleet_on_disk(standin, fleet.ids) == {first: B, second: A}, run.output  # nothing switched, none to Z
    assert run.returncode == 1, run.output
    assert f"{first} runs {B}: a deploy the release ledger does not record" in run.output
    newest = ledger_entries(standin, service)[-1]
    assert newest["release"] != Z or newest["status"] != "succeeded", newest


@pytest.mark.slow
def test_release_previous_while_a_killed_builds_command_still_runs_does_not_go_past_the_live_release(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """Z, then A live on one instance, no rollout. The build of B is killed while B's activation runs on the
    instance (its `current` already on B); its SSM command goes on, as on AWS, holding the instance's release
    lock past the read's 30 s. RELEASE: previous must not take the instance to Z, past A (what served before
    the killed build): staging would wait for the lock and find B; the read gives up after 30 s, and before
    the fix that was taken for 'cannot say': ✔ Rollback to Z. Now refused, naming the instance."""
    (instance,) = ids = standin.launch(1)
    for version, number in (("Z", "0"), ("A", "1")):
        ship(
            release_env(
                standin,
                ids,
                tmp_path,
                bucket,
                service,
                ARTIFACT=build(tmp_path, version),
                BITBUCKET_BUILD_NUMBER=number,
            )
        )
    activate = 'echo "activated $(cat version.txt)"\nif [ "$(cat version.txt)" = B ]; then echo holding-b; sleep 75; fi'
    killed = release_env(
        standin,
        ids,
        tmp_path,
        bucket,
        service,
        ARTIFACT=build(tmp_path, "B"),
        BITBUCKET_BUILD_NUMBER="2",
        ACTIVATE_COMMANDS=activate,
    )
    _kill_at(killed, f"{instance} | holding-b")
    assert fleet_on_disk(standin, ids) == {instance: B}
    _age_the_lock(standin, f"/deploy-lock/{service}/prod")

    back = release_env(standin, ids, tmp_path, bucket, service, RELEASE="previous", BITBUCKET_BUILD_NUMBER="3")
    run = run_pipe(back, timeout=400)

    assert "Traceback" not in run.output
    disk = fleet_on_disk(standin, ids)
    assert disk[instance] != Z, (disk, run.output)
    assert run.returncode == 1, run.output
    assert f"{instance} did not say which release" in run.output, run.output
    assert f"RELEASE: '{A}' brings every instance back to the live release" in run.output, run.output
    newest = ledger_entries(standin, service)[-1]
    assert ledger_fleet(newest) == disk or newest["release"] == A, (newest, disk)


@pytest.mark.slow
def test_a_stop_while_an_earlier_batch_activates_its_switch_back_is_recorded_as_on_disk(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on two instances behind a group, one per batch. B's health check fails in batch 2 (switched back
    in its own window); batch 1 is then drained and switched back, and its activation of A hangs there: the
    pipeline is stopped. Both run A: the ledger must not call B live, the ledger's and the result file's fleet
    are the disk, the rollback is 'interrupted' in the rollback phase, and ACTION: status finds no drift."""
    fleet = make_fleet(standin, 2)
    first, second = fleet.ids
    hold = "/srv/hold"
    held = f'if [ "$(cat version.txt)" = A ] && [ -e {hold} ]; then echo holding-a; sleep 600; fi'
    activate = f'echo "activated $(cat version.txt)"\n{held}'
    env = a_then_b_env(
        standin,
        fleet,
        tmp_path,
        bucket,
        service,
        ACTIVATE_COMMANDS=activate,
        HEALTHCHECK_COMMANDS=f'[ "$AWS_SSM_INSTANCE_ID" != "{second}" ]',
        HEALTHCHECK_RETRIES="1",
    )
    standin.instance_path(first, hold).touch()
    pipe = LivePipe(env)
    pipe.wait_for_line(f"{first} | holding-a", timeout=300)
    pipe.signal(signal.SIGTERM)
    stopped = pipe.finish(timeout=300)
    standin.instance_path(first, hold).unlink()

    assert stopped.returncode == 1, stopped.output
    assert "Traceback" not in stopped.output
    disk = fleet_on_disk(standin, fleet.ids)
    assert disk == {first: A, second: A}, stopped.output
    entry = ledger_entries(standin, service)[-1]
    assert entry["release"] == B and entry["status"] != "succeeded", entry
    assert ledger_fleet(entry) == disk, (entry, stopped.output)
    document = result(tmp_path)
    assert document["fleet"] == disk, stopped.output
    assert (document["rollback"], document["interrupted_phase"]) == ("interrupted", "rollback"), document
    wait_until(lambda: every_target_in_service(standin, fleet), "every target back in service", 240)
    code, output = _status(standin, fleet.ids, tmp_path, bucket, service)
    assert code == 0, output
    assert f"No drift: 2 instance(s) run {A}, the live release" in output, output


WORKER_APP = """    {
      name: 'worker',
      script: 'server.js',
      cwd: '/srv/web-api/current',
      env_prod: { NODE_ENV: 'production', PORT: '3001', DB_PASSWORD: process.env.DB_PASSWORD },
    },
  ],
};"""
WITH_A_WORKER = README_ECOSYSTEM.replace("  ],\n};", WORKER_APP)


@pytest.mark.slow
def test_a_pm2_app_added_by_a_release_that_is_rolled_back_leaves_no_process_on_the_new_release(
    fleet_with: Callable[[str], RecipeFleet],
) -> None:
    """A runs as pm2 app web-api (the README's file). B's ecosystem file adds a second app, worker (same
    server on port 3001, cwd current), and B's /health fails: B is switched back to A. A's ecosystem file
    does not list worker, so `pm2 startOrReload` of A leaves it running B's code. What must hold (issue #17,
    1-3): after the rollback no process runs from releases/B, or the step says so naming it (held: the switch
    back's own check finds worker on B, exit 86, ROLLBACK FAILED, the process named in the instance's output)."""
    fleet = fleet_with(README_ECOSYSTEM)
    assert WITH_A_WORKER != README_ECOSYSTEM
    fleet.ecosystem = WITH_A_WORKER

    run = fleet.ship("B", 2, broken=True)

    assert run.returncode == 1, run.output
    assert "Traceback" not in run.output
    assert {fleet.live_release_dir(i) for i in fleet.ids} == {f"{APP_DIR}/releases/{RELEASE_A}"}
    on_b = {}
    for instance in fleet.ids:
        listed = fleet.standin.run_on_instance(instance, f"ls -l /proc/*/cwd 2>/dev/null | grep {RELEASE_B} || true")
        if listed.stdout.strip():
            on_b[instance] = listed.stdout.strip()
    entry = ledger_entries(fleet.standin, fleet.service)[-1]
    assert entry["release"] == RELEASE_B and entry["status"] != "succeeded", entry
    if on_b:  # a process still runs B: the step says so, naming it, and does not call the rollback a success
        assert f"runs release {RELEASE_B}, not {RELEASE_A}" in run.output, run.output
        assert f"switched back to release {RELEASE_A}, but process " in run.output, run.output
        assert "this instance needs attention (stop that process)" in run.output, run.output
        assert "ROLLBACK FAILED on 1 of 1 instance(s)" in run.output, run.output
        assert "renamed, or no longer in the ecosystem file" in run.output, run.output
        assert "Rollback succeeded on all" not in run.output, (on_b, run.output)
