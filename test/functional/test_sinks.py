"""The sinks in process: what a deploy hands them (the plan, or None when it ended before its plan was
made, and the outcome; or a status's findings) is what the result file, its .env twin and Bitbucket's
shared variables say."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from functional.plans import World
from pipe.model import UNKNOWN_RELEASE, DeployOutcome, Status
from pipe.report.code_insights import report_body
from pipe.report.result_file import SHARED_VARIABLES
from pipe.report.sinks import sinks, status_sinks
from pipe.report.status import FleetStatus
from pipe.runtime.redaction import Redactor


def test_the_result_file_reads_the_plans_release_and_the_outcome(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.release_mode()
    world.change(result_file=str(tmp_path / "result.json"))
    plan = world.plan()
    assert plan.release is not None
    shared = tmp_path / "shared.env"
    env = {SHARED_VARIABLES: str(shared)}

    for sink in sinks(plan.settings, env, Redactor()):
        sink.write(plan, DeployOutcome(Status.SUCCEEDED))

    document = json.loads((tmp_path / "result.json").read_text())
    assert (document["status"], document["release"]) == ("succeeded", plan.release.plan.release_id)
    assert document["ledger"] == plan.release.ledger
    variables = f"SSM_DEPLOY_RELEASE='{plan.release.plan.release_id}'"
    assert variables in (tmp_path / "result.json.env").read_text()
    assert f"SSM_DEPLOY_RELEASE={plan.release.plan.release_id}\n" in shared.read_text()


def test_a_deploy_that_ended_before_its_plan_still_writes_its_outcome(tmp_path: Path) -> None:
    settings = dataclasses.replace(World(tmp_path).settings, result_file=str(tmp_path / "result.json"))

    for sink in sinks(settings, {}, Redactor()):
        sink.write(None, DeployOutcome(Status.NOT_SENT, message="LOCK: nothing was sent. Held by build 41."))

    document = json.loads((tmp_path / "result.json").read_text())
    assert (document["status"], document["message"]) == ("not sent", "LOCK: nothing was sent. Held by build 41.")
    assert "release" not in document


def test_a_status_goes_through_the_sinks_as_the_result_file_and_the_shared_variables(tmp_path: Path) -> None:
    settings = dataclasses.replace(World(tmp_path).settings, result_file=str(tmp_path / "result.json"), action="status")
    shared = tmp_path / "shared.env"
    status = FleetStatus(ledger="/release-ledger/web-api/prod/release", fleet={"i-1": "none", "i-2": UNKNOWN_RELEASE})
    status.why_unknown["i-2"] = "SSM Agent not online: ConnectionLost"

    for sink in status_sinks(settings, {SHARED_VARIABLES: str(shared)}):
        sink.write_status(status)

    document = json.loads((tmp_path / "result.json").read_text())
    assert (document["action"], document["status"], document["live_release"]) == ("status", "unknown", None)
    assert document["fleet"] == {"i-1": "none", "i-2": "unknown"}
    assert document["unknown_instances"] == [{"instance_id": "i-2", "reason": "SSM Agent not online: ConnectionLost"}]
    assert "SSM_DEPLOY_UNKNOWN_INSTANCES='i-2'" in (tmp_path / "result.json.env").read_text()
    assert "SSM_DEPLOY_STATUS=unknown\n" in shared.read_text()


def test_every_sink_reports_the_same_duration_the_one_the_deploy_ended_with(tmp_path: Path) -> None:
    settings = dataclasses.replace(World(tmp_path).settings, result_file=str(tmp_path / "result.json"))
    shared = tmp_path / "shared.env"
    outcome = DeployOutcome(Status.SUCCEEDED)
    outcome.started, outcome.ended = 1000.0, 1042.0  # the deploy ended 42 s after it began

    for sink in sinks(settings, {SHARED_VARIABLES: str(shared)}, Redactor()):
        sink.write(None, outcome)

    assert json.loads((tmp_path / "result.json").read_text())["duration_seconds"] == 42.0
    assert "SSM_DEPLOY_DURATION='42'" in (tmp_path / "result.json.env").read_text()
    assert "SSM_DEPLOY_DURATION=42\n" in shared.read_text()
    insights = report_body(settings, None, outcome, Redactor())
    assert {"title": "Duration", "type": "DURATION", "value": 42_000} in insights["data"]
