"""The Code Insights report in process: the sinks a deploy writes (``sinks``) post it to a local server
that plays Bitbucket's reports API through the proxy the toolkit's client uses (test/fakes), and every
payload is checked against the API's documented shape there (``server.problems``)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from fakes.bitbucket_reports import (
    FakeBitbucket,
    Report,
    annotations_problems,
    fake_bitbucket,
    proxy_env,
    report_problems,
)
from unit.unit_support import INSTANCE_A, INSTANCE_B, INSTANCE_C, REGION, make_settings

from functional.fake_aws import FakeSSM
from functional.plans import World, applying, planned
from pipe.apply.rollout import roll_out
from pipe.aws.clients import Clients
from pipe.errors import DeployFailed
from pipe.model import BatchOutcome, DeployOutcome, Invocation, Status
from pipe.plan import DeployPlan
from pipe.report.sinks import sinks
from pipe.runtime.redaction import MASK, Redactor

IDS = [INSTANCE_A, INSTANCE_B, INSTANCE_C]
REPO = "acme/web-api"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
PIPELINES = {"BITBUCKET_REPO_FULL_NAME": REPO, "BITBUCKET_COMMIT": COMMIT, "BITBUCKET_BUILD_NUMBER": "42"}
SECRET = "s3cr3t-Db-Passw0rd-9f2"


@pytest.fixture
def bitbucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBitbucket]:
    """The fake reports API as the environment's HTTP proxy, outside Pipelines' ``CI``."""
    with fake_bitbucket() as server:
        for name, value in proxy_env(server).items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("CI", raising=False)
        yield server


def write_sinks(plan: DeployPlan | None, outcome: DeployOutcome, tmp_path: Path, **env: str) -> None:
    settings = plan.settings if plan is not None else make_settings(instance_ids=IDS)
    settings = dataclasses.replace(settings, result_file=str(tmp_path / "result.json"))
    for sink in sinks(settings, {**PIPELINES, **env}, REDACTOR):
        sink.write(plan, outcome)


REDACTOR = Redactor()
REDACTOR.add(SECRET)


def fields(report: Report) -> dict[str, Any]:
    return {field["title"]: field["value"] for field in report.body["data"]}


def types(report: Report) -> dict[str, str]:
    return {field["title"]: field["type"] for field in report.body["data"]}


def deployed_everywhere(ids: list[str]) -> DeployOutcome:
    outcome = DeployOutcome(Status.SUCCEEDED)
    outcome.deploy.track({i: Invocation(i, "c-1", "Success", "Success", 0) for i in ids})
    outcome.batch_record(1, tuple(ids)).outcome = BatchOutcome.DEPLOYED
    return outcome


def test_a_successful_release_deploy_posts_a_passed_report(bitbucket: FakeBitbucket, tmp_path: Path) -> None:
    world = World(tmp_path)
    world.release_mode()
    plan = world.plan()
    assert plan.release is not None

    write_sinks(plan, deployed_everywhere(IDS), tmp_path)

    assert bitbucket.problems == []
    report = bitbucket.report(REPO, COMMIT)
    assert report.body["result"] == "PASSED"
    assert report.body["title"] == "ssm-deploy: app to production succeeded"
    values = fields(report)
    assert values["Environment"] == "production"
    assert values["Release"] == plan.release.plan.release_id
    assert values["Previous release"] == (plan.release.live_before or "none")
    assert (values["Instances deployed"], values["Instances failed"]) == (3, 0)
    assert types(report)["Duration"] == "DURATION" and isinstance(values["Duration"], int)
    assert "Batches:" in report.body["details"] and "deployed" in report.body["details"]
    assert report.annotations == {}
    assert [(r.method, r.url.split("/reports/")[-1]) for r in bitbucket.requests] == [
        ("DELETE", "ssm-deploy-app-production"),
        ("PUT", "ssm-deploy-app-production"),
    ]
    api = f"http://api.bitbucket.org/2.0/repositories/{REPO}/commit/{COMMIT}/"
    assert all(r.url.startswith(api) for r in bitbucket.requests)


def test_a_failed_instance_gets_an_annotation_with_its_phase_exit_code_and_masked_last_lines(
    bitbucket: FakeBitbucket, tmp_path: Path
) -> None:
    printed = "".join(f"step {n}\n" for n in range(30)) + f"connecting with {SECRET}\nError: migration 42 failed\n"
    ssm = FakeSSM(
        exit_codes=lambda label, instance: 7 if label == "deploy" and instance == INSTANCE_B else 0,
        outputs=lambda label, instance: printed if instance == INSTANCE_B else "ok\n",
    )
    clients = Clients(boto3.Session(region_name=REGION), REGION)
    clients.ssm = ssm  # type: ignore[assignment]
    run = applying(planned(make_settings(instance_ids=IDS, stream_output=False)), clients)
    with pytest.raises(DeployFailed):
        roll_out(run, list(run.plan.batches))
    run.outcome.status = Status.FAILED  # as Deploy.run sets it when the rollout raises

    write_sinks(run.plan, run.outcome, tmp_path)

    assert bitbucket.problems == []
    report = bitbucket.report(REPO, COMMIT)
    assert report.body["result"] == "FAILED"
    assert (fields(report)["Instances deployed"], fields(report)["Instances failed"]) == (2, 1)
    assert fields(report)["Status"] == "failed in the deploy"
    (annotation,) = report.annotations.values()
    assert INSTANCE_B in annotation["summary"] and "deploy" in annotation["summary"]
    assert (annotation["annotation_type"], annotation["result"]) == ("BUG", "FAILED")
    details = annotation["details"]
    assert "Phase: deploy" in details and "Exit code: 7" in details
    assert details.rstrip().endswith("Error: migration 42 failed")
    assert "step 29" in details and "step 5\n" not in details  # the last lines only
    assert SECRET not in str(bitbucket.requests) and f"connecting with {MASK}" in details


def test_instances_switched_back_by_rollback_commands_are_not_counted_deployed(
    bitbucket: FakeBitbucket, tmp_path: Path
) -> None:
    """Command mode: the deploy succeeded on A and B, B's health check failed, ROLLBACK_COMMANDS succeeded on
    both: no instance is left on what was deployed (attack 27 found 'Instances deployed: 1')."""
    outcome = DeployOutcome(Status.FAILED, failed_phase="health check")
    pair = [INSTANCE_A, INSTANCE_B]
    outcome.deploy.track({i: Invocation(i, "c-1", "Success", "Success", 0) for i in pair})
    outcome.health_check.track({INSTANCE_A: Invocation(INSTANCE_A, "c-2", "Success", "Success", 0)})
    outcome.health_check.track({INSTANCE_B: Invocation(INSTANCE_B, "c-3", "Failed", "Failed", 1)})
    outcome.rollback.track({i: Invocation(i, "c-4", "Success", "Success", 0) for i in pair})

    write_sinks(None, outcome, tmp_path)

    assert (
        fields(bitbucket.report(REPO, COMMIT))["Instances deployed"],
        fields(bitbucket.report(REPO, COMMIT))["Instances failed"],
    ) == (0, 1)


def test_a_refusal_posts_a_failed_report_saying_nothing_was_sent(bitbucket: FakeBitbucket, tmp_path: Path) -> None:
    outcome = DeployOutcome(Status.NOT_SENT, message="LOCK: nothing was sent. Held by build 41.")

    write_sinks(None, outcome, tmp_path)

    assert bitbucket.problems == []
    report = bitbucket.report(REPO, COMMIT)
    assert report.body["result"] == "FAILED"
    assert "nothing was sent" in report.body["title"]
    assert report.body["details"].startswith("Nothing was sent to any instance.")
    assert "Held by build 41." in report.body["details"]
    assert fields(report)["Instances deployed"] == 0
    assert [r.method for r in bitbucket.requests] == ["DELETE", "PUT"]  # no annotations


def test_a_server_error_is_one_warning_and_the_result_file_keeps_the_verdict(
    bitbucket: FakeBitbucket, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    bitbucket.answer = 500

    with caplog.at_level(logging.INFO, logger="ssm-deploy"):
        write_sinks(None, deployed_everywhere(IDS), tmp_path)

    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("CODE_INSIGHTS:") and "HTTP 500" in warnings[0]
    assert "result is unchanged" in warnings[0]
    assert '"status": "succeeded"' in (tmp_path / "result.json").read_text()
    assert "✖" not in capsys.readouterr().out


def test_an_unreachable_proxy_is_one_warning_not_the_toolkits_exit(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with fake_bitbucket() as stopped:
        closed = proxy_env(stopped)  # the port is free again once the server stopped
    for name, value in closed.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CI", raising=False)

    with caplog.at_level(logging.INFO, logger="ssm-deploy"):
        write_sinks(None, deployed_everywhere(IDS), tmp_path)  # the toolkit's own transport exits 1 here

    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("CODE_INSIGHTS:"), warnings
    assert "✖" not in capsys.readouterr().out


def test_code_insights_false_sends_nothing(bitbucket: FakeBitbucket, tmp_path: Path) -> None:
    plan = planned(make_settings(instance_ids=IDS, code_insights=False))

    write_sinks(plan, deployed_everywhere(IDS), tmp_path)

    assert bitbucket.requests == []


def test_outside_pipelines_and_for_a_dry_run_nothing_is_sent_and_nothing_warned(
    bitbucket: FakeBitbucket, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="ssm-deploy"):
        write_sinks(None, deployed_everywhere(IDS), tmp_path, BITBUCKET_COMMIT="")
        write_sinks(None, DeployOutcome(Status.DRY_RUN), tmp_path)

    assert bitbucket.requests == []
    assert [r.levelname for r in caplog.records if "CODE_INSIGHTS" in r.getMessage()] == ["DEBUG"]


def test_annotations_go_100_a_request_and_a_report_run_again_replaces_the_earlier_one(
    bitbucket: FakeBitbucket, tmp_path: Path
) -> None:
    many = [f"i-{n:017x}" for n in range(1, 121)]
    outcome = DeployOutcome(Status.FAILED, failed_phase="deploy")
    outcome.deploy.track({i: Invocation(i, "c-1", "Failed", "Failed", 1, stdout="boom\n") for i in many})
    plan = planned(make_settings(instance_ids=many))

    write_sinks(plan, outcome, tmp_path)
    assert [len(r.body) for r in bitbucket.requests if r.method == "POST"] == [100, 20]
    assert len(bitbucket.report(REPO, COMMIT).annotations) == 120

    write_sinks(plan, deployed_everywhere(many), tmp_path)  # the same deploy again, now succeeding
    report = bitbucket.report(REPO, COMMIT)
    assert (report.body["result"], report.annotations) == ("PASSED", {})
    assert bitbucket.problems == []


def test_a_deploy_sent_without_waiting_is_pending(bitbucket: FakeBitbucket, tmp_path: Path) -> None:
    write_sinks(planned(make_settings(instance_ids=IDS, wait=False)), DeployOutcome(Status.SENT), tmp_path)

    assert bitbucket.problems == []
    assert bitbucket.report(REPO, COMMIT).body["result"] == "PENDING"


def test_the_fake_api_refuses_what_the_documentation_rules_out() -> None:
    """``problems == []`` above means something: the shapes the reference excludes are refused."""
    report = {"title": "t", "details": "d", "result": "PASSED", "data": []}
    assert report_problems(report) == []
    assert report_problems({**report, "result": "SUCCESS"})
    assert report_problems({**report, "report_type": "DEPLOYMENT"})
    assert report_problems({**report, "details": "x" * 2001})
    assert report_problems({**report, "data": [{"title": "n", "type": "NUMBER", "value": "3"}]})
    assert report_problems({**report, "data": [{"title": "p", "type": "PERCENTAGE", "value": 120}]})
    assert report_problems({**report, "data": [{"title": "l", "type": "LINK", "value": "https://x"}]})
    assert report_problems({**report, "data": [{"title": f"{n}", "type": "NUMBER", "value": n} for n in range(11)]})
    annotation = {
        "external_id": "a-1",
        "summary": "s",
        "annotation_type": "BUG",
        "severity": "HIGH",
        "result": "FAILED",
    }
    assert annotations_problems([annotation], 0) == []
    assert annotations_problems([{**annotation, "summary": "s" * 451}], 0)
    assert annotations_problems([{**annotation, "severity": "FATAL"}], 0)
    assert annotations_problems([annotation, annotation], 0)  # external ids must be unique
    assert annotations_problems([{**annotation, "external_id": f"a-{n}"} for n in range(101)], 0)
    assert annotations_problems([annotation], 1000)
