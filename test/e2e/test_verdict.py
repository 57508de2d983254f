"""What the result file and the step say after more than one phase, and when a stop cuts a phase."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from standin import StandIn
from support import LivePipe, run_pipe


def test_a_rolled_back_deploy_still_reports_its_failures(standin: StandIn, tmp_path: Path) -> None:
    good, bad = standin.launch(2)
    env = standin.pipe_env(
        INSTANCE_IDS=f"{good} {bad}",
        COMMANDS=f'[ "$(basename "$HOME")" != "{bad}" ] || exit 4',
        ROLLBACK_COMMANDS="echo undone",
        BITBUCKET_CLONE_DIR=str(tmp_path),
    )
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert "Rollback succeeded on all 2 instance(s)." in run.output
    document = json.loads((tmp_path / "ssm-deploy-result.json").read_text())
    assert (document["failed"], document["succeeded"]) == (1, 1)
    rows = {row["instance_id"]: row for row in document["instances"]}
    assert rows[bad]["exit_code"] == 4  # the deploy's rows, not the rollback's
    assert document["rollback"] == "succeeded"
    assert {row["instance_id"] for row in document["rollback_instances"]} == {good, bad}
    dotenv = (tmp_path / "ssm-deploy-result.json.env").read_text()
    assert "SSM_DEPLOY_FAILED='1'" in dotenv
    assert f"SSM_DEPLOY_FAILED_INSTANCES='{bad}'" in dotenv


def test_a_stop_during_the_rollback_is_reported_as_interrupted(standin: StandIn, tmp_path: Path) -> None:
    (instance_id,) = standin.launch(1)
    live = LivePipe(
        standin.pipe_env(
            INSTANCE_IDS=instance_id,
            COMMANDS="exit 3",
            ROLLBACK_COMMANDS="echo rollback-started\nsleep 60",
            BITBUCKET_CLONE_DIR=str(tmp_path),
        )
    )
    live.wait_for_line("rollback-started")
    live.signal(signal.SIGTERM)
    run = live.finish()

    assert run.returncode == 1, run.output
    assert "The rollback did not finish" in run.output
    document = json.loads((tmp_path / "ssm-deploy-result.json").read_text())
    assert (document["rollback"], document["interrupted_phase"]) == ("interrupted", "rollback")
    assert document["failed"] == 1
    assert standin.sent_commands()[-1].runs[instance_id].killed
