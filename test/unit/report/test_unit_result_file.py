"""pipe.report.result_file: where the result goes, and what it refuses to write into."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from pipe.model import DeployOutcome, Invocation, PhaseOutcome, PhaseStatus, Status
from pipe.report.durations import format_seconds
from pipe.report.result_file import write_result
from unit.unit_support import make_settings


def test_the_dotenv_twin_adds_a_suffix_and_never_replaces_one(tmp_path: Path) -> None:
    theirs = tmp_path / "config.env"
    theirs.write_text("KEEP=me\n")
    write_result(make_settings(result_file=str(tmp_path / "config.json")), DeployOutcome(Status.SUCCEEDED), env={})

    assert theirs.read_text() == "KEEP=me\n"
    assert "SSM_DEPLOY_STATUS='succeeded'" in (tmp_path / "config.json.env").read_text()
    assert json.loads((tmp_path / "config.json").read_text())["status"] == "succeeded"


def test_a_fifo_is_never_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "result.json"
    os.mkfifo(fifo)
    done = threading.Event()

    def write() -> None:
        write_result(make_settings(result_file=str(fifo)), DeployOutcome(Status.FAILED), env={})
        done.set()

    threading.Thread(target=write, daemon=True).start()

    assert done.wait(10), "writing the result blocked on a FIFO"
    assert not (tmp_path / "result.json.env").exists()


def test_the_values_are_shared_with_later_steps_through_bitbucket(tmp_path: Path) -> None:
    shared = tmp_path / "pipelines-variables"
    shared.write_text("VERSION=1.2.3\n")
    outcome = DeployOutcome(Status.FAILED, message="Deploy failed on 1 of 2 instance(s):\nsee the log")
    write_result(
        make_settings(result_file=str(tmp_path / "r.json")),
        outcome,
        env={"BITBUCKET_PIPELINES_VARIABLES_PATH": str(shared)},
    )

    lines = shared.read_text().splitlines()
    assert lines[0] == "VERSION=1.2.3"  # appended, never replaced
    assert "SSM_DEPLOY_STATUS=failed" in lines
    assert "SSM_DEPLOY_HEALTH_CHECK=not run" in lines
    assert all("=" in line for line in lines)


def _phase(*invocations: Invocation) -> PhaseOutcome:
    phase = PhaseOutcome()
    phase.track({inv.instance_id: inv for inv in invocations})
    return phase


def _ran(instance_id: str, command_id: str, code: int) -> Invocation:
    status = "Success" if code == 0 else "Failed"
    return Invocation(instance_id, command_id, status=status, status_details=status, response_code=code)


def test_counts_are_over_every_phase_and_the_summary_says_it_all(tmp_path: Path) -> None:
    """A health-check failure and a rollback failure are failed instances too, each named with its phases."""
    outcome = DeployOutcome(
        Status.FAILED,
        message="The deploy ran, but the health check failed on 1 of 3 instance(s).",
        failed_phase="health check",
        deploy=_phase(_ran("i-1", "c-1", 0), _ran("i-2", "c-1", 0), _ran("i-3", "c-1", 0)),
        health_check=_phase(_ran("i-1", "c-2", 0), _ran("i-2", "c-2", 1), _ran("i-3", "c-2", 0)),
        rollback=_phase(_ran("i-2", "c-3", 0), _ran("i-3", "c-3", 86)),
    )
    outcome.started -= 75
    write_result(make_settings(result_file=str(tmp_path / "r.json"), environment="prod"), outcome, env={})

    document = json.loads((tmp_path / "r.json").read_text())
    assert (document["succeeded"], document["failed"]) == (1, 2)
    assert document["failed_instances"] == [
        {"instance_id": "i-2", "phases": ["health check"]},
        {"instance_id": "i-3", "phases": ["rollback"]},
    ]
    assert document["failed_phase"] == "health check"
    assert 75 <= document["duration_seconds"] < 3600
    first, failed_line, message = document["summary"].split("\n")
    assert first.startswith("ssm-deploy: FAILED in the health check after 1 min 1")
    assert failed_line == "Failed instances: i-2 (health check), i-3 (rollback)."
    assert message == outcome.message
    dotenv = (tmp_path / "r.json.env").read_text()
    assert "SSM_DEPLOY_FAILED='2'" in dotenv and "SSM_DEPLOY_SUCCEEDED='1'" in dotenv
    assert "SSM_DEPLOY_FAILED_INSTANCES='i-2 i-3'" in dotenv
    assert "SSM_DEPLOY_FAILED_PHASE='health check'" in dotenv


def test_an_instance_that_left_the_fleet_is_listed_as_departed_neither_failed_nor_succeeded(tmp_path: Path) -> None:
    """Attack 58: the result file named no departed instance; its failed invocation counted it as failed
    although the deploy succeeded without it."""
    outcome = DeployOutcome(
        Status.SUCCEEDED, deploy=_phase(_ran("i-1", "c-1", 0), Invocation("i-2", "c-1", status="Failed"))
    )
    outcome.departed["i-2"] = "no longer running (terminated) since the deploy was planned"
    write_result(make_settings(result_file=str(tmp_path / "r.json")), outcome, env={})

    document = json.loads((tmp_path / "r.json").read_text())
    assert document["departed"] == {"i-2": "no longer running (terminated) since the deploy was planned"}
    assert (document["succeeded"], document["failed"], document["failed_instances"]) == (1, 0, [])
    dotenv = (tmp_path / "r.json.env").read_text()
    assert "SSM_DEPLOY_DEPARTED='i-2'" in dotenv and "SSM_DEPLOY_FAILED_INSTANCES=\n" in dotenv


def test_a_refusal_before_sending_says_so_in_the_summary(tmp_path: Path) -> None:
    outcome = DeployOutcome(Status.NOT_SENT, message="INSTANCE_IDS: nothing was sent. Bad id.")
    write_result(make_settings(result_file=str(tmp_path / "r.json")), outcome, env={})

    document = json.loads((tmp_path / "r.json").read_text())
    assert document["failed_phase"] == "before sending"
    assert document["summary"].startswith("ssm-deploy: NOT SENT after 0 s")


def test_durations_read_as_hours_minutes_seconds() -> None:
    assert [format_seconds(s) for s in (0, 0.4, 59.6, 75.2, 3725)] == [
        "0 s",
        "0 s",
        "1 min",
        "1 min 15 s",
        "1 h 2 min 5 s",
    ]


def test_a_failed_or_interrupted_switch_back_is_in_the_summarys_verdict(tmp_path: Path) -> None:
    """The phase that decided the verdict (the health check) is not all: a switch back that failed (exit 86,
    a process of the new release left running) or that a stop cut short is said on the verdict line too,
    which the Code Insights report's title and Status repeat (test_attack19.py)."""
    for rollback, interrupted, words in (
        (PhaseStatus.FAILED, "", "FAILED in the health check; the rollback failed after "),
        (PhaseStatus.INTERRUPTED, "rollback", "FAILED in the health check; stopped during the rollback after "),
        (PhaseStatus.SUCCEEDED, "", "FAILED in the health check after "),
    ):
        outcome = DeployOutcome(Status.FAILED, failed_phase="health check", interrupted=interrupted)
        outcome.rollback.status = rollback
        write_result(make_settings(result_file=str(tmp_path / "r.json")), outcome, env={})

        first = json.loads((tmp_path / "r.json").read_text())["summary"].split("\n")[0]
        assert first.startswith(f"ssm-deploy: {words}"), first


def test_a_stop_outside_any_command_is_said_as_a_stop_on_the_verdict_line(tmp_path: Path) -> None:
    """A stop during a bake, a drain or a return to service, or a wait for launched instances is not a failure of
    that phase (an alarm, a target never healthy): the verdict line says stopped (attack 22). A command's phase
    cut short keeps 'failed' (the pipe's own wait bound or AWS out of reach end it the same way), and so does a
    failure the stop came after."""
    for failed, interrupted, words in (
        ("", "bake", "STOPPED in the bake after "),
        ("", "load balancer", "STOPPED in the load balancer after "),
        ("", "scale-out", "STOPPED in the scale-out after "),
        ("", "deploy", "FAILED in the deploy after "),
        ("bake", "load balancer", "FAILED in the bake after "),
    ):
        outcome = DeployOutcome(Status.FAILED, failed_phase=failed, interrupted=interrupted)
        write_result(make_settings(result_file=str(tmp_path / "r.json")), outcome, env={})
        summary = json.loads((tmp_path / "r.json").read_text())["summary"]
        assert summary.startswith(f"ssm-deploy: {words}"), summary
