"""The twenty-seventh outside attack on the audit trail and the step's report (issue #17): the ledger, the
result file and its .env twin, Code Insights and the summary, each compared with what the instances run
(``current`` on disk) and with the command history (what really ran, and how many times)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from e2e.release_support import A, B, build
from e2e.test_attack9 import COMMIT
from e2e.test_attack_held import fleet_on_disk, ledger_fleet, result
from e2e.test_ledger import entries as ledger_entries
from e2e.test_releases import release_env
from fakes.bitbucket_reports import fake_bitbucket, proxy_env
from standin import StandIn
from standin.network import FlakyProxy
from support import run_pipe

TRIGGERER = "{5f1c2a3b-0000-4000-8000-000000000027}"


def a_live(standin: StandIn, tmp_path: Path, bucket: str, service: str, count: int) -> list[str]:
    """``count`` new instances running release A, recorded live."""
    ids = standin.launch(count)
    env = release_env(
        standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "A"), BITBUCKET_BUILD_NUMBER="1"
    )
    first = run_pipe(env, timeout=300)
    assert first.returncode == 0, first.output
    return ids


def b_failing_on(
    standin: StandIn, ids: list[str], tmp_path: Path, bucket: str, service: str, unhealthy: str, **extra: str
) -> dict[str, str]:
    """B, one instance a batch, its health check failing on ``unhealthy`` (the last batch)."""
    return release_env(
        standin,
        ids,
        tmp_path,
        bucket,
        service,
        ARTIFACT=build(tmp_path, "B"),
        BITBUCKET_BUILD_NUMBER="2",
        BATCH_SIZE="1",
        HEALTHCHECK_COMMANDS=f'[ "$AWS_SSM_INSTANCE_ID" != "{unhealthy}" ]',
        HEALTHCHECK_RETRIES="1",
        **extra,
    )


def test_the_report_of_a_rollout_whose_first_batch_went_back_counts_no_instance_deployed(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on two instances; B one batch at a time: batch 1 passes, batch 2 fails its health check, and
    both are switched back to A. Found: the Code Insights report on the commit said 'Instances deployed: 1'
    (batch 1's deploy had succeeded) on a FAILED report while no instance runs B: a reader of the commit
    believed one instance serves it. The ledger, the result file's fleet and the report must say the disk."""
    first, second = ids = a_live(standin, tmp_path, bucket, service, 2)
    with fake_bitbucket() as bitbucket:
        env = b_failing_on(
            standin,
            ids,
            tmp_path,
            bucket,
            service,
            second,
            CODE_INSIGHTS="true",
            BITBUCKET_STEP_TRIGGERER_UUID=TRIGGERER,
        )
        run = run_pipe(env | proxy_env(bitbucket, str(urlsplit(standin.endpoint).hostname)), timeout=300)
        report = bitbucket.report("acme/web-api", COMMIT).body

    disk = fleet_on_disk(standin, ids)
    assert run.returncode == 1, run.output
    assert disk == {first: A, second: A}, run.output
    entry = ledger_entries(standin, service)[-1]
    assert (entry["status"], entry["release"], entry["previous"], ledger_fleet(entry)) == ("rolled back", B, A, disk)
    assert (entry["run"]["triggered_by"], entry["run"]["build"]) == (TRIGGERER, "2"), entry
    document = result(tmp_path)
    assert (document["fleet"], document["failed_phase"], document["rollback"]) == (disk, "health check", "succeeded")
    assert [row["instance_id"] for row in document["failed_instances"]] == [second], document
    data = {field["title"]: field["value"] for field in report["data"]}
    assert report["result"] == "FAILED", report
    assert (data["Release"], data["Previous release"], data["Instances failed"]) == (B, A, 1), data
    on_b = sum(release == B for release in disk.values())
    assert data["Instances deployed"] == on_b, (data, disk)


# --- held: a lost SendCommand reply in a release rollout runs each phase once -------------------------------


@pytest.fixture
def proxy(standin: StandIn) -> Iterator[FlakyProxy]:
    running = standin.flaky_proxy()
    yield running
    running.stop()


def test_lost_replies_to_the_stage_the_batches_and_the_rollback_run_each_command_once(  # held
    standin: StandIn, tmp_path: Path, bucket: str, service: str, proxy: FlakyProxy
) -> None:
    """The replies to the first four SendCommand calls of a release rollout (the staging, batch 1, its
    health check, batch 2) are lost after AWS took them: the command history holds each phase once per
    instance, and the ledger and the result file say the disk."""
    first, second = ids = a_live(standin, tmp_path, bucket, service, 2)
    before = {command.command_id for command in standin.sent_commands()}
    proxy.drop_response_to("SendCommand", times=4)
    run = run_pipe(
        b_failing_on(standin, ids, tmp_path, bucket, service, second, AWS_ENDPOINT_URL=proxy.endpoint), timeout=400
    )

    assert proxy.dropped_responses == ["SendCommand"] * 4
    assert run.returncode == 1 and "Traceback" not in run.output, run.output
    sent = [command for command in standin.sent_commands() if command.command_id not in before]
    phases = Counter(
        (command.request["Comment"].split(" (ref ")[0].rsplit(" 0123456", 1)[-1].strip(), instance)
        for command in sent
        for instance in command.runs
    )
    assert phases == Counter(
        {
            ("stage", first): 1,
            ("stage", second): 1,
            ("", first): 1,
            ("", second): 1,
            ("health check", first): 1,
            ("health check", second): 1,
            ("rollback", first): 1,
            ("rollback", second): 1,
        }
    ), phases
    disk = fleet_on_disk(standin, ids)
    assert disk == {first: A, second: A}, run.output
    entry = ledger_entries(standin, service)[-1]
    assert (entry["status"], ledger_fleet(entry)) == ("rolled back", disk), entry
    assert result(tmp_path)["fleet"] == disk


# --- one APP_DIR, two ledgers: an ENVIRONMENT that differs only in case -------------------------------------


def test_a_failed_deploy_under_an_environment_differing_only_in_case_goes_back_to_what_the_instance_ran(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live through ENVIRONMENT 'prod'; B through 'Prod' (another ledger and lock: Parameter Store names are
    case-sensitive) to the same instance and APP_DIR fails its health check. The instance ran A: it must run A
    again (or B must never be switched to), and no record may say no release was live there before. (attack 19's
    second SERVICE in one APP_DIR only asks that the records agree with the disk: they do, on B.)"""
    (instance,) = ids = a_live(standin, tmp_path, bucket, service, 1)
    env = release_env(
        standin,
        ids,
        tmp_path,
        bucket,
        service,
        ARTIFACT=build(tmp_path, "B"),
        BITBUCKET_BUILD_NUMBER="2",
        ENVIRONMENT="Prod",
        HEALTHCHECK_COMMANDS="false",
        HEALTHCHECK_RETRIES="1",
    )
    run = run_pipe(env, timeout=300)

    assert run.returncode == 1, run.output
    assert fleet_on_disk(standin, ids) == {instance: A}, run.output
    assert "no release was live before" not in run.output, run.output
    assert "back to the release each ran before this deploy (the release ledger names no live release)" in run.output
    assert "Rollback succeeded on all 1 instance(s)" in run.output, run.output
