"""Attacks on the verdict and the audit trail (issue #17) that held, kept as regression tests for what
the suite did not cover: a stop during the upload, during a non-rolling deploy after a switch and during
its health check (the ledger, the result file and the disk agree), RELEASE: previous after a failed
re-deploy by release id, two release deploys started together with LOCK, and garbled ledger versions
of kinds test_ledger.py does not try (raw junk, wrong types, a hostile release id, advanced-tier JSON).
The helpers are shared with test_attack_found.py."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from e2e.release_support import A, B, build
from e2e.test_ledger import entries as ledger_entries
from e2e.test_releases import APP_DIR, live, release_env
from standin import StandIn
from support import LivePipe, run_pipe


def fleet_on_disk(standin: StandIn, ids: list[str]) -> dict[str, str]:
    """{instance: release id} as APP_DIR/current points on each instance."""
    return {i: os.readlink(standin.instance_path(i, f"{APP_DIR}/current")).split("/")[-1] for i in ids}


def ledger_fleet(entry: dict[str, Any]) -> dict[str, str]:
    groups = entry["fleet"]
    assert isinstance(groups, dict)
    return {i: release for release, group in groups.items() for i in group["ids"]}


def result(clone: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((clone / "ssm-deploy-result.json").read_text())
    return document


def stop_at(env: dict[str, str], line: str) -> tuple[int, str]:
    pipe = LivePipe(env)
    pipe.wait_for_line(line, timeout=180)
    pipe.signal(signal.SIGTERM)
    run = pipe.finish(timeout=300)
    return run.returncode, run.output


# --- stops, races, re-deploys ---


def test_a_stop_during_the_deploy_after_a_switch_is_recorded_as_it_is_on_disk(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    _good, slow = ids = standin.launch(2)
    env = release_env(
        standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "A"), BITBUCKET_BUILD_NUMBER="1"
    )
    assert run_pipe(env).returncode == 0
    activate = (
        'echo "activated $(cat version.txt)"\n'
        f'if [ "$(cat version.txt)" = B ] && [ "$AWS_SSM_INSTANCE_ID" = "{slow}" ]; then echo holding; sleep 600; fi'
    )
    env = release_env(
        standin,
        ids,
        tmp_path,
        bucket,
        service,
        ARTIFACT=build(tmp_path, "B"),
        BITBUCKET_BUILD_NUMBER="2",
        ACTIVATE_COMMANDS=activate,
    )
    code, output = stop_at(env, f"{slow} | holding")

    disk = fleet_on_disk(standin, ids)
    assert code == 1, output
    entry = ledger_entries(standin, service)[-1]
    assert entry["release"] == B and entry["status"] != "succeeded", entry
    assert ledger_fleet(entry) == disk, (entry, disk)
    assert result(tmp_path)["fleet"] == disk


def test_a_stop_during_the_health_check_is_recorded_as_it_is_on_disk(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    ids = standin.launch(2)
    env = release_env(
        standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "A"), BITBUCKET_BUILD_NUMBER="1"
    )
    assert run_pipe(env).returncode == 0
    env = release_env(
        standin,
        ids,
        tmp_path,
        bucket,
        service,
        ARTIFACT=build(tmp_path, "B"),
        BITBUCKET_BUILD_NUMBER="2",
        HEALTHCHECK_COMMANDS="echo checking; sleep 600",
        HEALTHCHECK_RETRIES="1",
    )
    code, output = stop_at(env, "| checking")

    disk = fleet_on_disk(standin, ids)
    assert code == 1, output
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == (B, "stopped"), entry
    assert ledger_fleet(entry) == disk, (entry, disk)
    document = result(tmp_path)
    assert document["fleet"] == disk
    dotenv = (tmp_path / "ssm-deploy-result.json.env").read_text()
    assert "SSM_DEPLOY_HEALTH_CHECK='interrupted'" in dotenv and "SSM_DEPLOY_FAILED='2'" in dotenv


def test_a_stop_during_the_upload_sends_nothing_and_records_nothing_live(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    ids = standin.launch(1)
    env = release_env(
        standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "A"), BITBUCKET_BUILD_NUMBER="1"
    )
    assert run_pipe(env).returncode == 0
    big = tmp_path / "big"
    big.mkdir()
    (big / "version.txt").write_text("B\n")
    with (big / "blob.bin").open("wb") as out:
        for _ in range(96):
            out.write(os.urandom(1 << 20))
    sent_before = len(standin.sent_commands())
    env = release_env(standin, ids, tmp_path, bucket, service, ARTIFACT="big", BITBUCKET_BUILD_NUMBER="2")
    code, output = stop_at(env, "live before:")

    assert code == 1, output
    assert len(standin.sent_commands()) == sent_before, output
    assert live(standin, ids[0]) == "A"
    assert [entry["status"] for entry in ledger_entries(standin, service)] == ["succeeded"]
    assert "Traceback" not in output
    assert result(tmp_path)["status"] != "SUCCEEDED"


def test_two_release_deploys_started_together_one_runs_and_the_other_hears_the_lock(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    ids = standin.launch(2)
    first = run_pipe(
        release_env(standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "A"), BITBUCKET_BUILD_NUMBER="1")
    )
    assert first.returncode == 0, first.output
    clones = [tmp_path / "b", tmp_path / "c"]
    envs = []
    for clone, (version, number) in zip(clones, (("B", "2"), ("C", "3")), strict=True):
        clone.mkdir()
        envs.append(
            release_env(
                standin,
                ids,
                clone,
                bucket,
                service,
                ARTIFACT=build(clone, version),
                BITBUCKET_BUILD_NUMBER=number,
                LOCK="true",
                ACTIVATE_COMMANDS='echo "activated $(cat version.txt)"; sleep 3',
            )
        )
    pipes = [LivePipe(env) for env in envs]
    runs = [pipe.finish(timeout=300) for pipe in pipes]

    codes = sorted(run.returncode for run in runs)
    assert codes == [0, 1], [run.output for run in runs]
    winner = next(i for i, run in enumerate(runs) if run.returncode == 0)
    loser = runs[1 - winner]
    assert "Another deploy holds the lock" in loser.output, loser.output
    assert "Sent command" not in loser.output
    version = "BC"[winner]
    assert [live(standin, i) for i in ids] == [version, version]
    recorded = ledger_entries(standin, service)
    assert len(recorded) == 2 and recorded[-1]["release"] == (B, "000003-0123456")[winner]
    assert recorded[-1]["status"] == "succeeded"


def test_after_a_failed_redeploy_by_release_id_the_live_release_and_release_previous_are_right(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    ids = standin.launch(2)

    def ship(**extra: str) -> str:
        run = run_pipe(release_env(standin, ids, tmp_path, bucket, service, **extra))
        assert run.returncode == 0, run.output
        return run.output

    ship(ARTIFACT=build(tmp_path, "A"), BITBUCKET_BUILD_NUMBER="1")
    ship(ARTIFACT=build(tmp_path, "B"), BITBUCKET_BUILD_NUMBER="2")
    failed = run_pipe(
        release_env(
            standin,
            ids,
            tmp_path,
            bucket,
            service,
            RELEASE=B,
            BITBUCKET_BUILD_NUMBER="3",
            HEALTHCHECK_COMMANDS="exit 1",
            HEALTHCHECK_RETRIES="1",
        )
    )
    assert failed.returncode == 1, failed.output
    assert [live(standin, i) for i in ids] == ["B", "B"]
    redeploy = ledger_entries(standin, service)[-1]
    assert (redeploy["action"], redeploy["release"]) == ("redeploy", B)
    assert ledger_fleet(redeploy) == dict.fromkeys(ids, B)
    # README: `failed`: nothing had to be switched back; for a failed re-deploy of the live release every
    # instance still runs it, and the version that recorded it live stays the live one
    assert redeploy["status"] == "failed", redeploy
    assert ledger_entries(standin, service)[-2]["status"] == "succeeded"

    again = ship(RELEASE=B, BITBUCKET_BUILD_NUMBER="4")  # the redeploy by id, this time healthy
    assert f"live before: {B}" in again
    back = ship(RELEASE="previous", BITBUCKET_BUILD_NUMBER="5")
    assert f"RELEASE: previous is {A}" in back
    assert [live(standin, i) for i in ids] == ["A", "A"]


# --- garbled ledger versions ----------------------------------------------------------------------------


def _entry(**changed: object) -> str:
    """A schema-2 entry naming release 000009 live, with ``changed`` fields."""
    document: dict[str, object] = {
        "v": 2,
        "action": "deploy",
        "status": "succeeded",
        "release": "000009-0123456",
        "commit": "0123456",
        "build": "9",
        "artifact": f"web-api/{'9' * 64}.tar.gz",
        "sha256": "9" * 64,
        "previous": A,
        "run": {"build": "9", "commit": "0123456", "build_url": "", "triggered_by": ""},
        "time": "2026-12-01T21:50:33Z",
        "fleet": {},
        "instances": {},
    }
    return json.dumps(document | changed)


GARBLED = {
    "raw-junk": "\x7fELF not json at all {{{",
    "json-string": json.dumps("succeeded"),
    "v-as-string": _entry(v="2"),
    "v-true": _entry(v=True),
    "status-list": _entry(status=["succeeded"]),
    "fleet-list": _entry(fleet=[]),
    "count-float": _entry(fleet={"000009-0123456": {"count": 1.0, "ids": []}}),
    "release-traversal": _entry(release="000009-0123456/../../../etc"),
    "release-shell": _entry(release="000009-$(reboot)"),
    "sha-short": _entry(sha256="abc"),
    "advanced-tier-huge": _entry(fleet=[{"count": 1, "ids": ["i-" + "0" * 17]}] * 140),
}


@pytest.mark.parametrize("junk", list(GARBLED.values()), ids=list(GARBLED))
def test_a_garbled_newest_version_is_skipped_and_release_previous_still_goes_back(
    standin: StandIn, tmp_path: Path, bucket: str, service: str, junk: str
) -> None:
    ids = standin.launch(1)
    name = f"/release-ledger/{service}/prod/release"

    def ship(**extra: str) -> str:
        run = run_pipe(release_env(standin, ids, tmp_path, bucket, service, **extra))
        assert run.returncode == 0, run.output
        assert "Traceback" not in run.output
        return run.output

    ship(ARTIFACT=build(tmp_path, "A"), BITBUCKET_BUILD_NUMBER="1")
    ship(ARTIFACT=build(tmp_path, "B"), BITBUCKET_BUILD_NUMBER="2")
    tier = "Advanced" if len(junk) > 4096 else "Standard"
    written = standin.client("ssm").put_parameter(Name=name, Value=junk, Type="String", Overwrite=True, Tier=tier)
    output = ship(RELEASE="previous", BITBUCKET_BUILD_NUMBER="3")

    warning = next(line for line in output.splitlines() if f"version {written['Version']} skipped" in line)
    assert "WARNING" in warning and name in warning
    assert f"live before: {B}" in output and f"RELEASE: previous is {A}" in output
    assert live(standin, ids[0]) == "A"
    assert ledger_entries(standin, service)[-1]["release"] == A
