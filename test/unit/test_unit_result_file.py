"""pipe.report.result_file: where the result goes, and what it refuses to write into."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from unit.unit_support import make_settings

from pipe.model import DeployOutcome, Status
from pipe.report.result_file import write_result


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
