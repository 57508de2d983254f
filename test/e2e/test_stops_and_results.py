"""What the result file and the batch table say however the deploy ends: counts over every phase,
and a stop that leaves each batch recorded where it is."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from standin import StandIn
from support import LivePipe, run_pipe


def test_a_failed_health_check_is_a_failed_instance_in_the_result(standin: StandIn, tmp_path: Path) -> None:
    good, sick = standin.launch(2)
    env = standin.pipe_env(
        INSTANCE_IDS=f"{good} {sick}",
        ENVIRONMENT="prod",
        COMMANDS="echo deployed",
        HEALTHCHECK_COMMANDS=f'[ "$(basename "$HOME")" != "{sick}" ]',
        HEALTHCHECK_RETRIES="1",
        ROLLBACK_COMMANDS="echo undone",
        BITBUCKET_CLONE_DIR=str(tmp_path),
    )
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    dotenv = (tmp_path / "ssm-deploy-result.json.env").read_text()
    assert "SSM_DEPLOY_SUCCEEDED='1'" in dotenv
    assert "SSM_DEPLOY_FAILED='1'" in dotenv
    assert f"SSM_DEPLOY_FAILED_INSTANCES='{sick}'" in dotenv
    assert "SSM_DEPLOY_FAILED_PHASE='health check'" in dotenv
    document = json.loads((tmp_path / "ssm-deploy-result.json").read_text())
    assert (document["succeeded"], document["failed"]) == (1, 1)
    assert document["failed_instances"] == [{"instance_id": sick, "phases": ["health check"]}]
    assert {row["instance_id"]: row["exit_code"] for row in document["instances"]} == {good: 0, sick: 0}
    summary = document["summary"].split("\n")
    assert summary[0].startswith("ssm-deploy: FAILED in the health check after ")
    assert summary[0].endswith(" (prod, build 42).")
    assert summary[1] == f"Failed instances: {sick} (health check)."
    assert summary[2] == document["message"]
    assert f"SSM_DEPLOY_SUMMARY='{' '.join(summary)}'" in dotenv


def test_a_stop_during_a_bake_records_the_batch_as_deployed_not_as_not_started(
    standin: StandIn, tmp_path: Path
) -> None:
    first, second = standin.launch(2)
    pipe = LivePipe(
        standin.pipe_env(
            INSTANCE_IDS=f"{first} {second}",
            COMMANDS="echo deployed",
            BATCH_SIZE="1",
            BAKE_TIME="600",
            BITBUCKET_CLONE_DIR=str(tmp_path),
        )
    )
    pipe.wait_for_line("baking 600 s", timeout=120)
    pipe.signal(signal.SIGTERM)
    run = pipe.finish(timeout=120)

    assert run.returncode == 1, run.output
    assert "during the bake of batch 1/2" in run.output
    assert f"Batch(es) 2 (1 instance(s)) were never started and still run the old version: {second}." in run.output
    assert f"Batch(es) 1 (1 instance(s)) still run the new version: {first}." in run.output
    document = json.loads((tmp_path / "ssm-deploy-result.json").read_text())
    assert [batch["outcome"] for batch in document["batches"]] == ["deployed, bake stopped", "not started"]
    assert document["batches"][0]["seconds"]["bake"] is not None
    assert (document["interrupted_phase"], document["failed_phase"]) == ("bake", "bake")
    assert (document["succeeded"], document["failed"]) == (1, 0)
