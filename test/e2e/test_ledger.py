"""The release ledger as the fleet's truth, end to end: a version names a release live only when every
targeted instance runs it, a rollback is recorded as one, RELEASE: previous skips a release with the
live one's content, a garbled version is skipped, and the history outlives Parameter Store's 100
versions through the archive in the release bucket."""

from __future__ import annotations

import json
import re
import signal
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e.release_support import build_bare
from e2e.test_releases import live, release_env
from standin import StandIn
from support import LivePipe, run_pipe, wait_until

COMMIT_A, COMMIT_B, COMMIT_C = "a" * 40, "b" * 40, "c" * 40


def ledger_name(service: str) -> str:
    return f"/release-ledger/{service}/prod/release"


def versions(standin: StandIn, service: str) -> list[tuple[int, str]]:
    """Every version Parameter Store keeps, oldest first, raw."""
    pages = standin.client("ssm").get_paginator("get_parameter_history").paginate(Name=ledger_name(service))
    return sorted((item["Version"], item["Value"]) for page in pages for item in page["Parameters"])


def entries(standin: StandIn, service: str) -> list[dict[str, Any]]:
    """The versions that are JSON objects (a test may write junk beside them), oldest first."""
    found = []
    for _, value in versions(standin, service):
        try:
            document = json.loads(value)
        except (ValueError, RecursionError):
            continue
        if isinstance(document, dict):
            found.append(document)
    return found


@dataclass
class Ship:
    """Release deploys of one service to ``ids`` from the build folder ``clone``."""

    standin: StandIn
    ids: list[str]
    clone: Path
    bucket: str
    service: str

    def env(self, **extra: str) -> dict[str, str]:
        return release_env(self.standin, self.ids, self.clone, self.bucket, self.service, **extra)

    def __call__(self, **extra: str) -> str:
        """A deploy that must succeed; returns its output."""
        run = run_pipe(self.env(**extra))
        assert run.returncode == 0, run.output
        return run.output


def test_an_alarm_during_a_bake_leaves_the_release_before_it_live_in_the_ledger(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    ids = standin.launch(2)
    ship = Ship(standin, ids, tmp_path, bucket, service)
    artifact = build_bare(tmp_path, "A")
    ship(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="1")
    alarm = f"web-5xx-{uuid.uuid4().hex[:6]}"
    standin.create_alarm(alarm)
    build_bare(tmp_path, "B")
    batched = {"BATCH_SIZE": "1", "BAKE_TIME": "600"}  # the bake ends at the alarm: the pipe reads it every 2 s
    pipe = LivePipe(ship.env(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="2", ALARMS=alarm, **batched))
    pipe.wait_for_line("batch 1/2 (1 instance(s)): baking", timeout=120)
    standin.set_alarm(alarm, "ALARM", "5xx above 1%")
    run = pipe.finish(timeout=120)

    assert run.returncode == 1, run.output
    assert all(live(standin, instance_id) == "A" for instance_id in ids)
    entry = entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == ("000002-0123456", "rolled back")
    assert entry["fleet"] == {"000001-0123456": {"count": 2, "ids": sorted(ids)}}
    assert "as rolled back" in run.output

    build_bare(tmp_path, "C")
    assert "live before: 000001-0123456" in ship(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="3")


def test_a_stop_between_batches_is_recorded_as_stopped_with_the_instances_on_each_release(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    first, second = standin.launch(2)
    ship = Ship(standin, [first, second], tmp_path, bucket, service)
    artifact = build_bare(tmp_path, "A")
    ship(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="1")
    build_bare(tmp_path, "B")
    pipe = LivePipe(ship.env(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="2", BATCH_SIZE="1", BAKE_TIME="600"))
    pipe.wait_for_line("batch 1/2 (1 instance(s)): baking", timeout=120)
    pipe.signal(signal.SIGTERM)
    run = pipe.finish(timeout=120)

    assert run.returncode == 1, run.output
    assert (live(standin, first), live(standin, second)) == ("B", "A")
    entry = entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == ("000002-0123456", "stopped")
    assert entry["fleet"] == {
        "000002-0123456": {"count": 1, "ids": [first]},
        "000001-0123456": {"count": 1, "ids": [second]},
    }
    build_bare(tmp_path, "C")
    assert "live before: 000001-0123456" in ship(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="3")


def test_release_previous_is_recorded_as_a_rollback_with_the_release_and_the_run_apart(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    ids = standin.launch(2)
    ship = Ship(standin, ids, tmp_path, bucket, service)
    artifact = build_bare(tmp_path, "A")
    ship(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="1", BITBUCKET_COMMIT=COMMIT_A)
    build_bare(tmp_path, "B")
    ship(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="2", BITBUCKET_COMMIT=COMMIT_B)
    output = ship(RELEASE="previous", BITBUCKET_BUILD_NUMBER="3", BITBUCKET_COMMIT=COMMIT_C)

    assert all(live(standin, instance_id) == "A" for instance_id in ids)
    first, second, rollback = entries(standin, service)
    assert (first["action"], second["action"], rollback["action"]) == ("deploy", "deploy", "rollback")
    assert (rollback["release"], rollback["commit"], rollback["build"]) == ("000001-aaaaaaa", COMMIT_A, "1")
    assert (rollback["artifact"], rollback["sha256"]) == (first["artifact"], first["sha256"])
    assert (rollback["run"]["build"], rollback["run"]["commit"]) == ("3", COMMIT_C)
    assert rollback["run"]["triggered_by"] == "{5f1c2a3b-0000-4000-8000-000000000001}"
    assert (rollback["status"], rollback["previous"]) == ("succeeded", "000002-bbbbbbb")
    assert (second["run"]["build"], second["build"], second["commit"]) == ("2", "2", COMMIT_B)
    assert "Rollback to 000001-aaaaaaa" in output
    assert "✔ Rollback to 000001-aaaaaaa: Deployed to 2 instance(s)" in output


def test_release_previous_after_a_redeploy_of_the_same_artifact_skips_it_and_says_why(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    ids = standin.launch(2)
    ship = Ship(standin, ids, tmp_path, bucket, service)
    artifact = build_bare(tmp_path, "A")
    ship(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="1")
    build_bare(tmp_path, "B")  # built once: the same bytes are deployed twice
    ship(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="2")
    again = ship(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="3")
    output = ship(RELEASE="previous", BITBUCKET_BUILD_NUMBER="4")

    assert "Redeploy of 000003-0123456" in again
    assert all(live(standin, instance_id) == "A" for instance_id in ids)
    recorded = entries(standin, service)
    assert [entry["action"] for entry in recorded] == ["deploy", "deploy", "redeploy", "rollback"]
    assert recorded[-1]["release"] == "000001-0123456"
    skip = next(line for line in output.splitlines() if "skips 000002-0123456" in line)
    assert "same artifact" in skip and "000003-0123456" in skip and recorded[1]["sha256"][:12] in skip


@pytest.mark.parametrize(
    "junk",
    [
        "[" * 4000,  # nesting deeper than Python's recursion limit
        json.dumps(  # schema 1's shape with a count no integer holds
            {
                "v": 1,
                "release": "000009-0123456",
                "status": "succeeded",
                "previous": "",
                "commit": "x",
                "build": "9",
                "build_url": "",
                "triggered_by": "",
                "artifact": "web-api/x.tar.gz",
                "sha256": "0" * 64,
                "time": "",
                "instances": {"succeeded": {"count": 1e999, "ids": []}},
            }
        ).replace("Infinity", "1e999"),
    ],
    ids=["deep", "overflow"],
)
def test_a_garbled_version_is_skipped_with_a_warning_naming_it_and_the_deploy_goes_on(
    standin: StandIn, tmp_path: Path, bucket: str, service: str, junk: str
) -> None:
    ids = standin.launch(1)
    artifact = build_bare(tmp_path, "A")
    Ship(standin, ids, tmp_path, bucket, service)(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="1")
    written = standin.client("ssm").put_parameter(Name=ledger_name(service), Value=junk, Type="String", Overwrite=True)
    build_bare(tmp_path, "B")
    output = Ship(standin, ids, tmp_path, bucket, service)(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="2")

    assert written["Version"] == 2
    warning = next(line for line in output.splitlines() if "version 2" in line)
    assert "WARNING" in warning and ledger_name(service) in warning and "skipped" in warning
    assert "live before: 000001-0123456" in output
    assert live(standin, ids[0]) == "B"
    assert entries(standin, service)[-1]["status"] == "succeeded"


def failed_entry(number: int) -> str:
    """A version another tool wrote: a deploy of release 000003 that failed, in the ledger's format."""
    return json.dumps(
        {
            "v": 2,
            "action": "deploy",
            "status": "failed",
            "release": "000003-0123456",
            "commit": "0123456789abcdef0123456789abcdef01234567",
            "build": "3",
            "artifact": f"web-api/{'3' * 64}.tar.gz",
            "sha256": "3" * 64,
            "previous": "000002-0123456",
            "run": {"build": str(number), "commit": "0123456", "build_url": "", "triggered_by": ""},
            "time": "2026-12-01T21:50:33Z",
            "fleet": {},
            "instances": {},
        }
    )


def test_the_history_beyond_the_100_versions_parameter_store_keeps_is_read_from_the_archive(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    ids = standin.launch(1)
    artifact = build_bare(tmp_path, "A")
    Ship(standin, ids, tmp_path, bucket, service)(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="1")
    build_bare(tmp_path, "B")
    Ship(standin, ids, tmp_path, bucket, service)(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="2")
    ssm = standin.client("ssm")
    for number in range(100):  # 100 failed deploys written by hand push versions 1 and 2 out
        ssm.put_parameter(Name=ledger_name(service), Value=failed_entry(number), Type="String", Overwrite=True)
    assert [number for number, _ in versions(standin, service)] == list(range(3, 103))  # as AWS keeps them

    output = Ship(standin, ids, tmp_path, bucket, service)(RELEASE="previous", BITBUCKET_BUILD_NUMBER="4")

    assert live(standin, ids[0]) == "A"
    assert "live before: 000002-0123456" in output
    assert entries(standin, service)[-1]["release"] == "000001-0123456"
    listed = standin.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"web-api/ledger/{service}/prod/")
    keys = [item["Key"].rsplit("/", 1)[1] for item in listed["Contents"]]
    assert keys == [f"{number:010d}.json" for number in range(1, 104)]  # the hand-written ones copied too
    archived = standin.client("s3").get_object(Bucket=bucket, Key=f"web-api/ledger/{service}/prod/0000000103.json")
    assert archived["Body"].read().decode() == versions(standin, service)[-1][1]


def test_the_readme_user_data_installs_the_live_release_past_a_garbled_version(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    script = readme.split("# EC2 user data:", 1)[1].split("\n", 1)[1].split("```", 1)[0]
    script = re.sub(r"(?m)^(LEDGER|BUCKET|ACTIVATE)=.*$", "", script)
    (deployed,) = standin.launch(1)
    artifact = build_bare(tmp_path, "A")
    Ship(standin, [deployed], tmp_path, bucket, service)(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="5")
    standin.client("ssm").put_parameter(Name=ledger_name(service), Value="[" * 4000, Type="String", Overwrite=True)

    (fresh,) = standin.launch(1)
    variables = f"LEDGER={ledger_name(service)}\nBUCKET={bucket}\nACTIVATE='echo \"activated $(cat version.txt)\"'\n"
    done = standin.run_on_instance(fresh, variables + script)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "activated A" in done.stdout and live(standin, fresh) == "A"


def test_a_deploy_live_everywhere_that_the_ledger_cannot_record_fails_the_step_and_a_rerun_records_it(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """Parameter Store throttles every write of the ledger (PutParameter) when B's deploy ends: B runs on
    the instance, but the ledger still names A live, which the next deploy's rollback, RELEASE: previous
    and new instances trust. The step fails saying so; run again once the ledger takes writes, it records
    B live."""
    (instance,) = standin.launch(1)
    ship = Ship(standin, [instance], tmp_path, bucket, service)
    artifact = build_bare(tmp_path, "A")
    ship(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="1")
    build_bare(tmp_path, "B")
    # every PutParameter is throttled, and the deploy lock (on by default in release mode) is written with
    # PutParameter too: a lock that cannot be taken refuses the deploy before anything is sent
    # (test_least_privilege.py), so the lock is off here, where the ledger's write is what is tested
    b_env = ship.env(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="2", AWS_MAX_ATTEMPTS="2", LOCK="false")
    standin.service.throttle(1, 1, 600, actions={"PutParameter"})
    try:
        run = run_pipe(b_env)
    finally:
        standin.service.clear_faults()

    assert run.returncode == 1, run.output
    assert "Traceback" not in run.output and "✔" not in run.output, run.output
    assert live(standin, instance) == "B"
    assert [entry["release"] for entry in entries(standin, service)] == ["000001-0123456"]
    assert "Deployed to 1 instance(s), but the release ledger did not record it." in run.output, run.output
    assert f"Release ledger {ledger_name(service)}: Parameter Store refused PutParameter" in run.output, run.output
    assert "the ledger names 000001-0123456 live" in run.output, run.output
    result = json.loads((tmp_path / "ssm-deploy-result.json").read_text())
    assert (result["status"], result["failed_phase"]) == ("failed", "release ledger"), result

    again = run_pipe(b_env)
    assert again.returncode == 0, again.output
    entry = entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == ("000002-0123456", "succeeded"), entry


def test_a_release_that_fails_to_stage_and_a_stop_during_staging_are_on_the_record(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """Staging reaches every instance before anything is drained: a deploy that ends there (a release that
    fails to stage on one instance, a stop while the instances stage) is in the audit trail, recorded
    with every instance on the release live before, which stays the live one."""
    first, second = standin.launch(2)
    ship = Ship(standin, [first, second], tmp_path, bucket, service)
    artifact = build_bare(tmp_path, "A")
    ship(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="1")
    build_bare(tmp_path, "B")
    broken = f'if [ "$AWS_SSM_INSTANCE_ID" = "{second}" ]; then exit 3; fi'
    failed = run_pipe(ship.env(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="2", BATCH_SIZE="1", COMMANDS=broken))
    build_bare(tmp_path, "C")
    staging = "touch /srv/staging\nsleep 600"
    pipe = LivePipe(ship.env(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="3", BATCH_SIZE="1", COMMANDS=staging))
    on_each = [standin.instance_path(instance_id, "/srv/staging") for instance_id in (first, second)]
    wait_until(lambda: all(path.exists() for path in on_each), "COMMANDS staging on each instance", 120)
    pipe.signal(signal.SIGTERM)
    stopped = pipe.finish(timeout=120)

    assert failed.returncode == 1 and "Staging release 000002-0123456 failed" in failed.output, failed.output
    assert stopped.returncode == 1, stopped.output
    assert (live(standin, first), live(standin, second)) == ("A", "A")
    on_a = {"000001-0123456": {"count": 2, "ids": sorted([first, second])}}
    recorded = [(e["release"], e["status"], e["fleet"]) for e in entries(standin, service)[1:]]
    assert recorded == [("000002-0123456", "failed", on_a), ("000003-0123456", "stopped", on_a)]
    assert "live before: 000001-0123456" in ship(ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="4")
