"""The nineteenth outside attack on the verdict and the audit trail (issue #17, "Done when"), end to end
against the stand-in, on what no attack tried before: `cwd` added to the ecosystem file after an app ran
without it; the Code Insights report after an exit 86 and after a stop during a switch back; RELEASE:
previous with an instance launched since the last deploy and with an instance whose agent is offline; two
SERVICEs deploying into one APP_DIR at once. Each test ends with the three truths compared: what the
instances run, what the ledger says, what the step said, and ACTION: status."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from app_fixture import pack_release
from e2e.release_support import A, B, build
from e2e.test_attack10 import ship
from e2e.test_attack17 import WITH_A_WORKER
from e2e.test_attack_held import fleet_on_disk, ledger_fleet, result, stop_at
from e2e.test_code_insights import COMMIT
from e2e.test_ledger import entries as ledger_entries
from e2e.test_proof_of_serving import (
    PM2_FIX,
    README_ECOSYSTEM,
    RELEASE_A,
    RELEASE_B,
    WITHOUT_CWD,
    RecipeFleet,
    assert_everyone_on_a,
)
from e2e.test_proof_of_serving import fleet_with as fleet_with
from e2e.test_releases import APP_DIR, release_env
from fakes.bitbucket_reports import fake_bitbucket, proxy_env
from standin import StandIn
from support import LivePipe, run_pipe

REPO = "acme/web-api"


def _status(standin: StandIn, ids: list[str], clone: Path, bucket: str, service: str) -> tuple[int, str]:
    env = release_env(standin, ids, clone, bucket, service, ACTION="status", BITBUCKET_BUILD_NUMBER="99")
    done = run_pipe(env, timeout=300)
    return done.returncode, done.output


def _fields(body: dict[str, Any]) -> dict[str, Any]:
    return {field["title"]: field["value"] for field in body["data"]}


def _a_then_b(standin: StandIn, ids: list[str], clone: Path, bucket: str, service: str) -> None:
    """A (build 1), then B (build 2), each deployed and live on ``ids``."""
    for version, number in (("A", "1"), ("B", "2")):
        artifact = build(clone, version)
        ship(release_env(standin, ids, clone, bucket, service, ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER=number))


# --- pm2 ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cwd_added_after_a_ran_without_it_fails_naming_pm2_delete_and_leaves_the_fleet_on_a(
    fleet_with: Callable[[str], RecipeFleet],
) -> None:
    """A first started by pm2 without `cwd` (so from releases/A); B's ecosystem file adds `cwd: current`. The
    README: pm2 keeps the old path, `pm2 delete` once is needed. The deploy must fail naming the process, the
    release it runs and that fix; every truth says A; status finds no drift."""
    fleet = fleet_with(WITHOUT_CWD)
    fleet.ecosystem = README_ECOSYSTEM

    run = fleet.ship("B", 2)

    assert run.returncode == 1, run.output
    assert "Traceback" not in run.output
    assert f"runs release {RELEASE_A}, not {RELEASE_B}" in run.output, run.output
    assert "`pm2 delete <name>` once" in run.output and PM2_FIX in run.output, run.output
    assert_everyone_on_a(fleet)
    entry = ledger_entries(fleet.standin, fleet.service)[-1]
    assert entry["status"] != "succeeded" or entry["release"] == RELEASE_A, entry
    assert set(ledger_fleet(entry).values()) == {RELEASE_A}, entry
    assert result(fleet.clone)["fleet"] == dict.fromkeys(fleet.ids, RELEASE_A)
    check = run_pipe(fleet.env(3, rolling=False, ACTION="status"), timeout=300)
    assert check.returncode == 0, check.output


@pytest.mark.slow
def test_the_code_insights_report_after_an_exit_86_says_the_rollback_failed(
    fleet_with: Callable[[str], RecipeFleet],
) -> None:
    """A under pm2; B adds a pm2 app (worker) and fails its health check: the switch back to A leaves worker
    running from B (exit 86, ROLLBACK FAILED). The Code Insights report must not read like a clean rollback:
    FAILED, the rollback named as failed, the instance counted failed; the result file says the same."""
    fleet = fleet_with(README_ECOSYSTEM)
    fleet.ecosystem = WITH_A_WORKER
    host = str(urlsplit(fleet.standin.endpoint).hostname)
    with fake_bitbucket() as bitbucket:
        artifact = os.path.relpath(pack_release(fleet.clone, "B", broken=True, ecosystem=fleet.ecosystem), fleet.clone)
        env = fleet.env(2, ARTIFACT=artifact) | {"CODE_INSIGHTS": "true", **proxy_env(bitbucket, host)}
        run = run_pipe(env, timeout=300)

    assert run.returncode == 1, run.output
    assert "Traceback" not in run.output
    assert "ROLLBACK FAILED" in run.output, run.output
    body = bitbucket.report(REPO, COMMIT).body
    data = _fields(body)
    assert body["result"] == "FAILED", body
    assert "rollback" in data["Status"] and "rollback" in body["title"], body
    assert data["Instances failed"] >= 1, data
    document = result(fleet.clone)
    assert document["rollback"] == "failed", document
    entry = ledger_entries(fleet.standin, fleet.service)[-1]
    assert entry["status"] != "succeeded", entry
    check = run_pipe(fleet.env(3, rolling=False, ACTION="status"), timeout=300)
    assert check.returncode == 1 and "Drift" in check.output, check.output


@pytest.mark.slow
def test_the_code_insights_report_after_a_stop_during_the_switch_back_says_stopped_in_the_rollback(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on one instance; B fails its health check; the switch back's activation hangs and the pipeline
    is stopped there. The report must say FAILED, name the rollback as interrupted, never PASSED; the result
    file, the ledger and the instance agree on what it runs."""
    ids = standin.launch(1)
    ship(
        release_env(standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "A"), BITBUCKET_BUILD_NUMBER="1")
    )
    hold = (
        'echo "activated $(cat version.txt)"\n'
        f'if [ "$(cat version.txt)" = A ] && [ -d {APP_DIR}/releases/{B} ]; then echo holding-back; sleep 600; fi'
    )
    with fake_bitbucket() as bitbucket:
        env = release_env(
            standin,
            ids,
            tmp_path,
            bucket,
            service,
            ARTIFACT=build(tmp_path, "B"),
            BITBUCKET_BUILD_NUMBER="2",
            ACTIVATE_COMMANDS=hold,
            HEALTHCHECK_COMMANDS='test "$(cat version.txt)" = A',
            CODE_INSIGHTS="true",
            **proxy_env(bitbucket, str(urlsplit(standin.endpoint).hostname)),
        )
        code, output = stop_at(env, f"{ids[0]} | holding-back")

    assert code == 1, output
    assert "Traceback" not in output
    disk = fleet_on_disk(standin, ids)
    entry = ledger_entries(standin, service)[-1]
    assert ledger_fleet(entry) == disk, (entry, disk, output)
    document = result(tmp_path)
    assert document["fleet"] == disk, output
    assert (document["rollback"], document["interrupted_phase"]) == ("interrupted", "rollback"), document
    body = bitbucket.report(REPO, COMMIT).body
    data = _fields(body)
    assert body["result"] == "FAILED", body
    assert "stopped" in data["Status"] and "rollback" in data["Status"], data
    assert data["Instances failed"] == 1, data


# --- RELEASE: previous --------------------------------------------------------------------------------


@pytest.mark.slow
def test_release_previous_with_an_instance_launched_since_brings_every_instance_to_a(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A then B live on one instance; a second instance is launched since (no release). RELEASE: previous on
    both: the README says an instance launched since fetches the release again. Every truth must say A on
    both, or the deploy is refused before anything switches, naming the new instance."""
    first = standin.launch(1)
    _a_then_b(standin, first, tmp_path, bucket, service)
    ids = [*first, *standin.launch(1)]
    back = release_env(standin, ids, tmp_path, bucket, service, RELEASE="previous", BITBUCKET_BUILD_NUMBER="3")
    run = run_pipe(back, timeout=300)

    assert "Traceback" not in run.output
    entry = ledger_entries(standin, service)[-1]
    if run.returncode == 0:
        assert fleet_on_disk(standin, ids) == dict.fromkeys(ids, A), run.output
        assert (entry["release"], entry["status"]) == (A, "succeeded"), entry
        assert ledger_fleet(entry) == dict.fromkeys(ids, A), entry
        code, output = _status(standin, ids, tmp_path, bucket, service)
        assert code == 0 and "No drift" in output, output
    else:
        assert fleet_on_disk(standin, first) == {first[0]: B}, run.output
        assert ids[1] in run.output, run.output
        assert entry["release"] == B and entry["status"] == "succeeded", entry


@pytest.mark.slow
def test_release_previous_with_one_agent_offline_is_refused_before_anything_switches(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A then B live on two instances; the second's agent goes offline. RELEASE: previous must be refused
    before anything is sent (as any deploy to an offline agent), naming it; B stays live everywhere in every
    truth; status does not call the fleet clean."""
    ids = standin.launch(2)
    _a_then_b(standin, ids, tmp_path, bucket, service)
    standin.instance(ids[1]).ping_status = "ConnectionLost"
    back = release_env(standin, ids, tmp_path, bucket, service, RELEASE="previous", BITBUCKET_BUILD_NUMBER="3")
    run = run_pipe(back, timeout=300)

    assert run.returncode == 1, run.output
    assert "Traceback" not in run.output
    assert ids[1] in run.output, run.output
    assert fleet_on_disk(standin, ids) == dict.fromkeys(ids, B), run.output
    entry = ledger_entries(standin, service)[-1]
    assert entry["status"] != "succeeded" or entry["release"] == B, entry
    code, output = _status(standin, ids, tmp_path, bucket, service)
    assert not (code == 0 and "No drift: 2 instance(s)" in output), output


# --- two SERVICEs in one APP_DIR ----------------------------------------------------------------------


@pytest.mark.slow
def test_two_services_deploying_into_one_app_dir_at_once_leave_no_ledger_calling_live_what_no_instance_runs(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """SERVICE api (A, build 1) and SERVICE worker (B, build 2) deploy to the same APP_DIR on the same instance
    at the same time: different ledgers, different locks. Whatever the instance ends on, a ledger that calls
    its release live while `current` points elsewhere must have its ACTION: status name the drift."""
    (instance,) = ids = standin.launch(1)
    worker = f"{service}-worker"
    (tmp_path / "api").mkdir()
    (tmp_path / "worker").mkdir()
    envs = {
        service: release_env(
            standin,
            ids,
            tmp_path / "api",
            bucket,
            service,
            ARTIFACT=build(tmp_path / "api", "A"),
            BITBUCKET_BUILD_NUMBER="1",
        ),
        worker: release_env(
            standin,
            ids,
            tmp_path / "worker",
            bucket,
            worker,
            ARTIFACT=build(tmp_path / "worker", "B"),
            BITBUCKET_BUILD_NUMBER="2",
        ),
    }
    pipes = {name: LivePipe(env) for name, env in envs.items()}
    runs = {name: pipe.finish(timeout=300) for name, pipe in pipes.items()}

    disk = fleet_on_disk(standin, ids)
    for name, done in runs.items():
        assert "Traceback" not in done.output, done.output
        entries = ledger_entries(standin, name)
        if not entries:
            continue
        entry = entries[-1]
        clone = tmp_path / ("api" if name == service else "worker")
        said = json.dumps({name: [r.returncode for r in runs.values()], "disk": disk, "entry": entry})
        if entry["status"] == "succeeded" and {instance: entry["release"]} != disk:
            code, output = _status(standin, ids, clone, bucket, name)
            assert code != 0 and "No drift" not in output, (said, output)
        if done.returncode == 0:
            assert entry["status"] == "succeeded", said


@pytest.mark.slow
def test_a_failed_first_deploy_of_a_second_service_in_the_same_app_dir_leaves_the_first_services_release(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """SERVICE api runs A in APP_DIR; SERVICE worker (its first deploy: its ledger names no live release) ships B
    to the same APP_DIR and fails its health check. Whatever worker's switch back does, the three truths agree:
    the instance runs what worker's result and ledger say, and api's ACTION: status says No drift only if the
    instance is back on A."""
    (instance,) = ids = standin.launch(1)
    worker = f"{service}-worker"
    ship(
        release_env(standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "A"), BITBUCKET_BUILD_NUMBER="1")
    )
    failing = release_env(
        standin,
        ids,
        tmp_path,
        bucket,
        worker,
        ARTIFACT=build(tmp_path, "B"),
        BITBUCKET_BUILD_NUMBER="2",
        HEALTHCHECK_COMMANDS='test "$(cat version.txt)" = A',
    )
    run = run_pipe(failing, timeout=300)

    assert run.returncode == 1, run.output
    assert "Traceback" not in run.output
    current = standin.instance_path(instance, f"{APP_DIR}/current")
    disk = fleet_on_disk(standin, ids) if current.is_symlink() else {}
    entry = ledger_entries(standin, worker)[-1]
    assert entry["status"] != "succeeded", entry
    assert ledger_fleet(entry) == disk, (entry, disk, run.output)
    assert result(tmp_path)["fleet"] == disk, run.output
    code, output = _status(standin, ids, tmp_path, bucket, service)
    assert (code == 0) == (disk == {instance: A}), (disk, output)
