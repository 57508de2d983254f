"""The twenty-second outside attack on the verdict and the audit trail (issue #17, "Done when"), end to end
against the stand-in: a target group TARGET_GROUPS does not name, in which an instance is already unhealthy
on another port than the app's. Each test asserts what should hold: the disk (``current``), the ledger, the
result file and the load balancer must agree."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from e2e.release_support import A
from e2e.release_support import B as B_ID
from e2e.test_attack9 import COMMIT, b_failing_on, rolling_b, ship_a
from e2e.test_attack20 import one_instance
from e2e.test_attack_held import fleet_on_disk, ledger_fleet, result, stop_at
from e2e.test_ledger import entries as ledger_entries
from e2e.test_load_balancer import every_target_in_service, make_fleet
from e2e.test_releases import APP_DIR, live
from fakes.bitbucket_reports import fake_bitbucket, proxy_env
from standin import StandIn
from support import kill_instance_processes, run_pipe, wait_until

DEAD_PORT = 3999  # nothing listens there: every target of the unnamed group fails its health check


def test_the_rollback_of_an_earlier_batch_does_not_wait_for_a_target_the_deploy_found_unhealthy_in_an_unnamed_group(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """Two instances behind the named group (port 3000, healthy), also in a group TARGET_GROUPS does not name on
    port 3999, where nothing listens (unhealthy before the deploy; a slow health check there, as a real
    300-s interval: its targets stay 'initial' for a while after they are registered again). B passes on the
    first batch and fails its health check on the second: batch 1 is switched back. The target the deploy
    found unhealthy there was not waited for after batch 1's deploy; it must not be waited for after its
    switch back either: the verdict says the rollback succeeded, not that batch 1 never came back."""
    fleet = make_fleet(standin, 2)
    ship_a(standin, fleet, tmp_path, bucket, service)
    elbv2 = standin.client("elbv2")
    name = f"admin-{uuid.uuid4().hex[:8]}"
    arn = standin.create_target_group(name, fleet.ids, deregistration_delay=5, port=DEAD_PORT, interval=20)
    wait_until(
        lambda: set(standin.port_states(arn).values()) == {"unhealthy"}, "the unnamed group's targets unhealthy", 120
    )
    # from now on a target registered again stays 'initial' (failing its checks) for a long while, as with
    # ELB's defaults (30-s interval, up to 10 failures before 'unhealthy')
    elbv2.modify_target_group(TargetGroupArn=arn, UnhealthyThresholdCount=10, HealthCheckIntervalSeconds=300)

    first, second = fleet.ids
    env = b_failing_on(standin, fleet, tmp_path, bucket, service, second, HEALTHY_TIMEOUT="60")
    run = run_pipe(env, timeout=600)

    assert run.returncode != 0, run.output
    assert "drained from it and registered again, but not waited for there" in run.output, run.output
    assert fleet_on_disk(standin, fleet.ids) == {first: A, second: A}, run.output
    document = result(tmp_path)
    assert document["rollback"] == "succeeded", (document["rollback"], run.output)
    assert "not healthy in the load balancer" not in run.output, run.output
    assert "Rollback succeeded" in document["message"], document["message"]
    disk = fleet_on_disk(standin, fleet.ids)
    entry = ledger_entries(standin, service)[-1]
    assert (entry["status"], ledger_fleet(entry)) == ("rolled back", disk), entry
    assert document["fleet"] == disk, document["fleet"]
    wait_until(lambda: every_target_in_service(standin, fleet), "the named group serving again", 120)
    status = run_pipe({**env, "ACTION": "status"}, timeout=300)
    assert status.returncode == 0 and f"No drift: 2 instance(s) run {A}, the live release" in status.output, (
        status.output
    )


def test_status_counts_every_process_of_another_release_beyond_the_twenty_it_names(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """25 followers of a file of release A (`tail -f releases/A/version.txt`, no terminal) still run once current
    points to B: ACTION: status names the first 20, counts all 25 (in the log, the verdict line and the result
    file) and fails the step as drift."""
    many = 25
    instance_id, env = one_instance(standin, tmp_path, bucket, service)
    pid_files = [f"/srv/follower-{n}.pid" for n in range(many)]
    try:
        assert run_pipe(env("A", "1"), timeout=300).returncode == 0
        assert run_pipe(env("B", "2"), timeout=300).returncode == 0
        for pid_file in pid_files:
            standin.run_on_instance(
                instance_id,
                f"setsid nohup tail -f {APP_DIR}/releases/{A}/version.txt </dev/null >/dev/null 2>&1 & "
                f"echo $! > {pid_file}",
            )
        status = run_pipe(env("B", "3", ACTION="status"), timeout=300)
    finally:
        kill_instance_processes(standin, instance_id, *pid_files)

    assert live(standin, instance_id) == "B"
    assert status.returncode == 1, status.output
    named = [line for line in status.output.splitlines() if "runs release " + A in line and "Drift: on" in line]
    assert len(named) == 20, status.output
    assert f"{many - 20} more process(es) run from another release than {B_ID}" in status.output, status.output
    assert f"{many} process(es) run from another release than current on {instance_id}" in status.output
    document = json.loads((tmp_path / "ssm-deploy-result.json").read_text())
    assert document["status"] == "drift", document
    (listed,) = document["processes_of_other_releases"]
    assert (listed["count"], len(listed["processes"])) == (many, 20), listed


def test_a_stop_during_the_bake_of_a_release_is_said_alike_by_the_step_the_ledger_the_result_and_code_insights(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on two instances behind a group; B in batches of one with a long bake: a stop during batch 1's bake.
    Batch 1 runs B, batch 2 A: the ledger does not call B live and names each instance's release as on disk,
    the result file and its .env say stopped in the bake, Code Insights' title too; ACTION: status names the
    drift of batch 1."""
    fleet = make_fleet(standin, 2)
    ship_a(standin, fleet, tmp_path, bucket, service)
    first, second = fleet.ids
    with fake_bitbucket() as bitbucket:
        env = rolling_b(standin, fleet, tmp_path, bucket, service, BAKE_TIME="600", CODE_INSIGHTS="true")
        code, output = stop_at(env | proxy_env(bitbucket, str(urlsplit(standin.endpoint).hostname)), "baking 600 s")
        report = bitbucket.report("acme/web-api", COMMIT).body

    disk = fleet_on_disk(standin, fleet.ids)
    assert code == 1, output
    assert disk == {first: B_ID, second: A}, output
    entry = ledger_entries(standin, service)[-1]
    assert entry["status"] != "succeeded" and ledger_fleet(entry) == disk, entry
    document = result(tmp_path)
    assert (document["status"], document["interrupted_phase"], document["fleet"]) == ("failed", "bake", disk), document
    dotenv = (tmp_path / "ssm-deploy-result.json.env").read_text()
    assert "SSM_DEPLOY_INTERRUPTED='bake'" in dotenv and "stopped during the bake" in dotenv, dotenv
    assert report["result"] == "FAILED", report
    wait_until(lambda: every_target_in_service(standin, fleet), "every target back in service", 120)
    status = run_pipe({**env, "ACTION": "status", "BITBUCKET_BUILD_NUMBER": "3"}, timeout=300)
    assert status.returncode == 1 and f"Drift on 1 of 2 instance(s) ({first})" in status.output, status.output
    # the verdict line: a stop, not a failure of the bake (an alarm) -- the summary's first line and the title
    assert report["title"].endswith(" stopped in the bake"), report["title"]
    assert document["summary"].splitlines()[0].startswith("ssm-deploy: STOPPED in the bake"), document["summary"]
