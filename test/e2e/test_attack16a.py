"""The sixteenth outside attack (part a) on the verdict and the audit trail (issue #17, "Done when"), end to
end against the stand-in, on what earlier attacks left untried: EXECUTION_TIMEOUT and HEALTHCHECK_TIMEOUT
hit after the switch in one SSM command (no batches); stops during a rollback's switch-back activation, as
the ledger is written, and while the lock's new holder puts back what a killed build left out; re-deploys
(the same build run again after it failed, RELEASE: previous twice in a row); ledger versions edited by
hand (a fleet naming instances that no longer exist) or written by a newer pipe (unknown keys). Each test
ends with the three truths compared: what the instances run, what the ledger says, what the step said,
and ACTION: status."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from e2e.release_support import A, B, build
from e2e.test_attack10 import a_then_b_env, ship
from e2e.test_attack12 import _age_the_lock
from e2e.test_attack14 import SERVING, _killed_with_a_batch_of_two_out_of_service, _lock
from e2e.test_attack_held import fleet_on_disk, ledger_fleet, result, stop_at
from e2e.test_ledger import entries as ledger_entries
from e2e.test_ledger import ledger_name
from e2e.test_load_balancer import every_target_in_service, make_fleet, rolling_env
from e2e.test_releases import live, release_env
from standin import StandIn
from standin.instance_app import RESTART
from support import LivePipe, PipeRun, run_pipe, wait_until

Z = "000000-0123456"
HOLD = "/srv/hold"  # on an instance: the activation (or the check) named by the test hangs there


def _hold_when(version: str, then: str = "echo holding; sleep 600") -> str:
    """An ACTIVATE_COMMANDS line that hangs on an instance holding HOLD while ``version`` is activated."""
    return f'if [ "$(cat version.txt)" = {version} ] && [ -e {HOLD} ]; then {then}; fi'


def _env(standin: StandIn, ids: list[str], clone: Path, bucket: str, service: str, **extra: str) -> dict[str, str]:
    return release_env(standin, ids, clone, bucket, service, **extra)


def _b_env(standin: StandIn, ids: list[str], clone: Path, bucket: str, service: str, **extra: str) -> dict[str, str]:
    """The environment of release B (build 2)."""
    return _env(standin, ids, clone, bucket, service, ARTIFACT=build(clone, "B"), BITBUCKET_BUILD_NUMBER="2", **extra)


def _ship(standin: StandIn, ids: list[str], clone: Path, bucket: str, service: str, version: str, number: str) -> None:
    ship(_env(standin, ids, clone, bucket, service, ARTIFACT=build(clone, version), BITBUCKET_BUILD_NUMBER=number))


def _status(standin: StandIn, ids: list[str], clone: Path, bucket: str, service: str) -> PipeRun:
    env = release_env(standin, ids, clone, bucket, service, ACTION="status", BITBUCKET_BUILD_NUMBER="99")
    return run_pipe(env, timeout=300)


def _dotenv(clone: Path) -> str:
    return (clone / "ssm-deploy-result.json.env").read_text()


def _three_truths(
    standin: StandIn,
    ids: list[str],
    clone: Path,
    bucket: str,
    service: str,
    run: PipeRun | tuple[int, str],
    *,
    runs: str,
    recorded: tuple[str, str],
    live_release: str,
) -> dict[str, Any]:
    """Every instance runs ``runs``; the newest version is ``recorded`` (release, status) with that fleet;
    the result file's fleet is the disk; ACTION: status names ``live_release`` live and finds no drift.
    Returns the newest version, with the deploy's result file under "result" and its .env under "dotenv"."""
    output = run.output if isinstance(run, PipeRun) else run[1]
    assert "Traceback" not in output
    disk = fleet_on_disk(standin, ids)
    assert disk == dict.fromkeys(ids, runs), (disk, output)
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == recorded, (entry, output)
    assert ledger_fleet(entry) == disk, (entry, output)
    assert result(clone)["fleet"] == disk, output
    entry["dotenv"], entry["result"] = _dotenv(clone), result(clone)  # the deploy's, before status writes its own
    check = _status(standin, ids, clone, bucket, service)
    assert check.returncode == 0, check.output
    assert f"No drift: {len(ids)} instance(s) run {live_release}, the live release" in check.output, check.output
    return entry


def _back_on_a_not_live(
    standin: StandIn,
    ids: list[str],
    clone: Path,
    bucket: str,
    service: str,
    run: PipeRun | tuple[int, str],
    release: str,
) -> dict[str, Any]:
    """The three truths when every instance is back on A: the newest version records ``release`` as anything
    but 'succeeded', with the fleet on A; ACTION: status names A live with no drift."""
    status = entry_status(standin, service)
    assert status != "succeeded", (status, run)
    return _three_truths(standin, ids, clone, bucket, service, run, runs=A, recorded=(release, status), live_release=A)


# --- timeouts after the switch, one SSM command (no batches) ---


def test_an_execution_timeout_during_activation_in_one_command_switches_every_instance_back(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on two instances (no target group: one SSM command). B's activation hangs on the second until
    SSM ends the command TimedOut (EXECUTION_TIMEOUT) after its switch: both go back to A, the step fails
    naming it, the ledger records B 'rolled back' and counts the second failed."""
    ids = standin.launch(2)
    _first, second = ids
    activate = f'echo "activated $(cat version.txt)"\n{_hold_when("B")}'
    _ship(standin, ids, tmp_path, bucket, service, "A", "1")
    standin.instance_path(second, HOLD).touch()
    env = _b_env(standin, ids, tmp_path, bucket, service, ACTIVATE_COMMANDS=activate, EXECUTION_TIMEOUT="40")

    run = run_pipe(env, timeout=400)

    assert run.returncode == 1, run.output
    assert "TimedOut" in run.output, run.output
    entry = _three_truths(
        standin, ids, tmp_path, bucket, service, run, runs=A, recorded=(B, "rolled back"), live_release=A
    )
    assert [live(standin, i) for i in ids] == ["A", "A"]
    assert f"SSM_DEPLOY_FAILED_INSTANCES='{second}'" in entry["dotenv"], entry["dotenv"]
    assert entry["result"]["rollback"] == "succeeded", entry["result"]
    assert f"Now {', '.join(ids)} run {A} (the release live before)" in run.output, run.output


def test_a_healthcheck_timeout_in_one_command_switches_every_instance_back(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on two instances (one SSM command); B's health check hangs on the second past HEALTHCHECK_TIMEOUT:
    both go back to A, the second is counted failed, the ledger records B 'rolled back'."""
    ids = standin.launch(2)
    _first, second = ids
    _ship(standin, ids, tmp_path, bucket, service, "A", "1")
    standin.instance_path(second, HOLD).touch()
    env = _b_env(
        standin,
        ids,
        tmp_path,
        bucket,
        service,
        HEALTHCHECK_COMMANDS=f"if [ -e {HOLD} ]; then sleep 600; fi",
        HEALTHCHECK_TIMEOUT="20",
        HEALTHCHECK_RETRIES="1",
    )

    run = run_pipe(env, timeout=400)

    assert run.returncode == 1, run.output
    dotenv = _three_truths(
        standin, ids, tmp_path, bucket, service, run, runs=A, recorded=(B, "rolled back"), live_release=A
    )["dotenv"]
    assert f"SSM_DEPLOY_FAILED_INSTANCES='{second}'" in dotenv and "SSM_DEPLOY_FAILED='1'" in dotenv, dotenv
    assert "SSM_DEPLOY_ROLLBACK='succeeded'" in dotenv, dotenv


# --- stops ---


def test_a_stop_while_the_switch_back_activates_the_live_release_is_recorded_as_on_disk(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on two instances; B's health check fails on both, and the rollback's activation of A hangs on
    the second (its `current` already back on A). The pipeline is stopped there: the ledger must not call B
    live, its fleet and the result file's are the disk (A on both), and ACTION: status finds no drift."""
    ids = standin.launch(2)
    _first, second = ids
    activate = f'echo "activated $(cat version.txt)"\n{_hold_when("A", "echo holding-a; sleep 600")}'
    ship(_env(standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "A"), BITBUCKET_BUILD_NUMBER="1"))
    standin.instance_path(second, HOLD).touch()  # the switch back to A hangs there
    env = _b_env(
        standin,
        ids,
        tmp_path,
        bucket,
        service,
        ACTIVATE_COMMANDS=activate,
        HEALTHCHECK_COMMANDS="false",
        HEALTHCHECK_RETRIES="1",
    )

    code, output = stop_at(env, f"{second} | holding-a")

    assert code == 1, output
    _back_on_a_not_live(standin, ids, tmp_path, bucket, service, (code, output), B)


def entry_status(standin: StandIn, service: str) -> str:
    """The newest version's status (the test checks it is no success apart)."""
    status = ledger_entries(standin, service)[-1]["status"]
    assert isinstance(status, str)
    return status


def test_a_stop_as_the_ledger_records_a_successful_deploy_leaves_the_step_and_the_ledger_agreeing(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on one instance; B deploys and the pipeline is stopped as the ledger's version is written
    (right after Parameter Store took it, while it is copied to the archive and the lock is released). B
    runs and the ledger calls it live: the result file must say so too (its fleet, and no 'rolled back'),
    ACTION: status must find no drift, and the next deploy must take the lock."""
    ids = standin.launch(1)
    _ship(standin, ids, tmp_path, bucket, service, "A", "1")
    env = _env(standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "B"), BITBUCKET_BUILD_NUMBER="2")

    code, output = stop_at(env, f"records Release {B} as succeeded")

    entry = _three_truths(
        standin, ids, tmp_path, bucket, service, (code, output), runs=B, recorded=(B, "succeeded"), live_release=B
    )
    assert entry["action"] == "deploy", entry
    document = entry["result"]
    assert document.get("rollback") in (None, "not run"), document
    assert (code == 0) == (document["status"] == "succeeded"), (code, document)
    again = run_pipe(
        _env(standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "C"), BITBUCKET_BUILD_NUMBER="3")
    )
    assert again.returncode == 0, again.output


@pytest.mark.slow
def test_a_stop_while_the_new_holder_puts_back_what_a_killed_build_left_out_leaves_it_to_the_next_deploy(
    standin: StandIn,
) -> None:
    """A build killed with a batch of two out of service; the deploy that takes its lock over is stopped
    (SIGTERM) while it puts them back (their apps are down: it waits for them to be healthy). Then either
    the record of what is out stays for the next holder, or the targets are registered again; a third
    deploy ends with the whole fleet serving and the record gone."""
    fleet, out = _killed_with_a_batch_of_two_out_of_service(standin)
    for instance in out:
        standin.app_up(instance, up=False)
    _age_the_lock(standin, _lock(fleet))
    second = LivePipe(rolling_env(standin, fleet, COMMANDS=RESTART, LOCK="true", BITBUCKET_BUILD_NUMBER="42"))
    second.wait_for_line("never put them back", timeout=240)
    second.signal(signal.SIGTERM)
    stopped = second.finish(timeout=300)
    assert stopped.returncode != 0, stopped.output
    assert "Traceback" not in stopped.output
    record = standin.client("ssm").get_parameters(Names=[f"{_lock(fleet)}/out-of-service"])["Parameters"]
    registered = standin.target_states(fleet.group_arn)
    assert record or all(i in registered and registered[i] != "unused" for i in out), (registered, stopped.output)
    for instance in out:
        standin.app_up(instance)
    if standin.client("ssm").get_parameters(Names=[_lock(fleet)])["Parameters"]:  # the stopped deploy may free it
        _age_the_lock(standin, _lock(fleet))

    run = run_pipe(rolling_env(standin, fleet, COMMANDS=RESTART, LOCK="true", BITBUCKET_BUILD_NUMBER="43"), timeout=400)

    assert run.returncode == 0, run.output
    wait_until(
        lambda: all(standin.target_states(fleet.group_arn).get(i) in SERVING for i in fleet.ids), "all serving", 120
    )
    assert standin.client("ssm").get_parameters(Names=[f"{_lock(fleet)}/out-of-service"])["Parameters"] == []


# --- re-deploys ---


def test_the_same_build_run_again_after_its_failed_health_check_goes_live_as_a_deploy(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live; build 2 (B) fails its health check and is rolled back; the same build is run again and passes:
    B is live on both, recorded 'deploy' 'succeeded' with A as the release before it, and status agrees."""
    ids = standin.launch(2)
    _ship(standin, ids, tmp_path, bucket, service, "A", "1")
    env = _env(standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "B"), BITBUCKET_BUILD_NUMBER="2")
    failed = run_pipe(env | {"HEALTHCHECK_COMMANDS": "false", "HEALTHCHECK_RETRIES": "1"}, timeout=300)
    assert failed.returncode == 1, failed.output
    assert fleet_on_disk(standin, ids) == dict.fromkeys(ids, A)

    again = run_pipe(env, timeout=300)

    assert again.returncode == 0, again.output
    entry = _three_truths(
        standin, ids, tmp_path, bucket, service, again, runs=B, recorded=(B, "succeeded"), live_release=B
    )
    assert (entry["action"], entry["previous"]) == ("deploy", A), entry


def test_release_previous_twice_in_a_row_goes_back_then_forward_again(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """Z then A live on one instance. RELEASE: previous goes back to Z; run again, the release live before Z
    (the current one) is A: it goes to A. Each run is recorded a 'rollback' that succeeded, naming the release
    it left as the one before, and status agrees with the disk after each."""
    ids = standin.launch(1)
    _ship(standin, ids, tmp_path, bucket, service, "Z", "0")
    _ship(standin, ids, tmp_path, bucket, service, "A", "1")
    back = _env(standin, ids, tmp_path, bucket, service, RELEASE="previous", BITBUCKET_BUILD_NUMBER="3")

    first = run_pipe(back, timeout=300)
    assert first.returncode == 0, first.output
    entry = _three_truths(
        standin, ids, tmp_path, bucket, service, first, runs=Z, recorded=(Z, "succeeded"), live_release=Z
    )
    assert (entry["action"], entry["previous"]) == ("rollback", A), entry

    second = run_pipe(back | {"BITBUCKET_BUILD_NUMBER": "4"}, timeout=300)
    assert second.returncode == 0, second.output
    entry = _three_truths(
        standin, ids, tmp_path, bucket, service, second, runs=A, recorded=(A, "succeeded"), live_release=A
    )
    assert (entry["action"], entry["previous"]) == ("rollback", Z), entry
    assert [live(standin, i) for i in ids] == ["A"]


# --- hand-edited and newer ledger versions ---


def _rewrite_newest(standin: StandIn, service: str, change: dict[str, Any]) -> None:
    """The newest version again, as a person or a newer pipe would write it: ``change`` merged in."""
    newest = ledger_entries(standin, service)[-1]
    standin.client("ssm").put_parameter(
        Name=ledger_name(service), Value=json.dumps(newest | change), Type="String", Overwrite=True
    )


def test_a_live_version_naming_gone_instances_and_unknown_keys_is_still_the_live_release(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on one instance. Its version is written again with its fleet naming an instance that no longer
    exists and keys a newer pipe might add (top level and under run). The pipe must still read A live: a
    failing deploy of B goes back to A, status finds no drift, RELEASE: previous is refused or goes to no
    other release than one that was live."""
    ids = standin.launch(1)
    _ship(standin, ids, tmp_path, bucket, service, "A", "1")
    newest = ledger_entries(standin, service)[-1]
    gone = "i-0ffffffffffffffff"
    _rewrite_newest(
        standin,
        service,
        {
            "fleet": {A: {"count": 2, "ids": [*ids, gone]}},
            "instances": {"succeeded": {"count": 2, "ids": [*ids, gone]}},
            "run": newest["run"] | {"pipeline_uuid": "{0000}", "step": {"name": "Deploy"}},
            "canary": {"weight": 10},
            "labels": ["x"],
        },
    )
    check = _status(standin, ids, tmp_path, bucket, service)
    assert check.returncode == 0, check.output
    assert f"run {A}, the live release" in check.output, check.output

    env = _b_env(standin, ids, tmp_path, bucket, service, HEALTHCHECK_COMMANDS="false", HEALTHCHECK_RETRIES="1")
    run = run_pipe(env, timeout=300)

    assert run.returncode == 1, run.output
    assert gone not in run.output.rsplit("Now ", 1)[-1], run.output
    entry = _three_truths(
        standin, ids, tmp_path, bucket, service, run, runs=A, recorded=(B, "rolled back"), live_release=A
    )
    assert entry["previous"] == A, entry


# --- round two ---


def test_a_stop_after_every_instance_succeeded_but_before_the_ledger_is_written_leaves_all_three_agreeing(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on one instance; B deploys and the pipeline is stopped as the command's summary is printed (every
    instance succeeded, the ledger not yet written). Whatever the pipe then does (record B live, or go back),
    the disk, the ledger, the result file and ACTION: status must agree, and the step must not pass."""
    ids = standin.launch(1)
    _ship(standin, ids, tmp_path, bucket, service, "A", "1")
    env = _env(standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "B"), BITBUCKET_BUILD_NUMBER="2")

    code, output = stop_at(env, "Summary of command")

    runs = fleet_on_disk(standin, ids)[ids[0]]
    status = entry_status(standin, service)
    _three_truths(
        standin,
        ids,
        tmp_path,
        bucket,
        service,
        (code, output),
        runs=runs,
        recorded=(B, status),
        live_release=B if status == "succeeded" else A,
    )
    assert (runs == B) == (status == "succeeded"), (runs, status, output)


def test_an_execution_timeout_during_the_switch_back_too_is_recorded_as_on_disk(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on two instances (one SSM command). On the second, B's activation hangs until EXECUTION_TIMEOUT,
    and so does A's activation in the switch back. Its `current` is back on A either way: the ledger must not
    call B live, its fleet and the result file's are the disk, ACTION: status finds no drift."""
    ids = standin.launch(2)
    _first, second = ids
    activate = f'echo "activated $(cat version.txt)"\n{_hold_when("B")}\n{_hold_when("A")}'
    _ship(standin, ids, tmp_path, bucket, service, "A", "1")
    standin.instance_path(second, HOLD).touch()
    env = _b_env(standin, ids, tmp_path, bucket, service, ACTIVATE_COMMANDS=activate, EXECUTION_TIMEOUT="30")

    run = run_pipe(env, timeout=500)

    assert run.returncode == 1, run.output
    entry = _back_on_a_not_live(standin, ids, tmp_path, bucket, service, run, B)
    assert second in entry["dotenv"].split("SSM_DEPLOY_FAILED_INSTANCES=", 1)[1].split("\n", 1)[0], entry["dotenv"]
    assert entry["result"]["rollback"] == "failed", (entry["result"]["rollback"], run.output)


def test_a_redeploy_by_live_id_that_times_out_after_its_switch_stays_on_the_live_release(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """Z then A live on two instances (one SSM command). RELEASE: <A's id> again; on the second its activation
    hangs until EXECUTION_TIMEOUT. Nothing may go past A to Z: both run A, the ledger keeps A live (the new
    version not 'succeeded' but naming A on both), status finds no drift, and RELEASE: previous then goes to Z."""
    ids = standin.launch(2)
    _first, second = ids
    _ship(standin, ids, tmp_path, bucket, service, "Z", "0")
    _ship(standin, ids, tmp_path, bucket, service, "A", "1")
    standin.instance_path(second, HOLD).touch()
    activate = f'echo "activated $(cat version.txt)"\n{_hold_when("A")}'
    env = _env(
        standin,
        ids,
        tmp_path,
        bucket,
        service,
        RELEASE=A,
        BITBUCKET_BUILD_NUMBER="3",
        ACTIVATE_COMMANDS=activate,
        EXECUTION_TIMEOUT="30",
    )

    run = run_pipe(env, timeout=500)

    assert run.returncode == 1, run.output
    entry = _three_truths(
        standin,
        ids,
        tmp_path,
        bucket,
        service,
        run,
        runs=A,
        recorded=(A, entry_status(standin, service)),
        live_release=A,
    )
    assert entry["action"] == "redeploy" and entry["status"] != "succeeded", entry
    standin.instance_path(second, HOLD).unlink()
    back = run_pipe(_env(standin, ids, tmp_path, bucket, service, RELEASE="previous", BITBUCKET_BUILD_NUMBER="4"))
    assert back.returncode == 0, back.output
    assert fleet_on_disk(standin, ids) == dict.fromkeys(ids, Z), back.output


@pytest.mark.parametrize("failing", [0, 1])
def test_a_stop_while_a_rolled_back_batch_waits_to_be_healthy_again_is_recorded_as_on_disk(
    standin: StandIn, tmp_path: Path, bucket: str, service: str, failing: int
) -> None:
    """A live on two instances behind a group, one per batch. B's health check fails in the first batch
    (``failing`` 0: switched back in its own window) or in the second (1: then the first, deployed, is
    drained and switched back too). The first batch's instance is registered again after its switch back;
    its app is down, so the pipe waits for the load balancer to call it healthy, and the pipeline is
    stopped there. Both run A: the ledger must not call B live, its fleet and the result file's are the
    disk, the result says the rollback was interrupted, every target serves again once the app is up, and
    ACTION: status finds no drift."""
    fleet = make_fleet(standin, 2)
    first = fleet.ids[0]
    env = a_then_b_env(
        standin,
        fleet,
        tmp_path,
        bucket,
        service,
        HEALTHCHECK_COMMANDS=f'[ "$AWS_SSM_INSTANCE_ID" != "{fleet.ids[failing]}" ]',
        HEALTHCHECK_RETRIES="1",
    )
    pipe = LivePipe(env)
    pipe.wait_for_line("1 instance(s) back to the release that was live before, 000001-0123456 (batch 1/2", 240)
    standin.app_up(first, up=False)
    back = "batch 1/2 (1 instance(s)): registered again"
    wait_until(lambda: pipe.output.count(back) == 1 + failing, "the first batch registered after its switch back", 240)
    pipe.signal(signal.SIGTERM)
    stopped = pipe.finish(timeout=300)
    standin.app_up(first, release="A")

    assert stopped.returncode == 1, stopped.output
    entry = _back_on_a_not_live(standin, fleet.ids, tmp_path, bucket, service, stopped, B)
    # README, result file: "SSM_DEPLOY_ROLLBACK is interrupted when a rollback had begun" (never 'not run')
    assert entry["result"]["rollback"] == "interrupted", (entry["result"], stopped.output)
    assert "SSM_DEPLOY_ROLLBACK='interrupted'" in entry["dotenv"], entry["dotenv"]
    assert entry["result"]["interrupted_phase"] == "rollback", (entry["result"], stopped.output)
    wait_until(lambda: every_target_in_service(standin, fleet), "every target back in service", 120)
