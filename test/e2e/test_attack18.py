"""The eighteenth outside attack on the verdict and the audit trail (issue #17, "Done when"), end to end
against the stand-in: RELEASE: previous without staging when TARGETS cannot be resolved before sending (a
deploy role without ec2:DescribeInstances, which the README calls optional); a pm2 worker dropped from the
ecosystem file between releases. Each test ends with the three truths compared: what the instances run,
what the ledger says, what the step said, and ACTION: status."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from e2e.release_support import A, build
from e2e.test_attack10 import ship
from e2e.test_attack17 import Z, killed_build_on_a_tagged_fleet
from e2e.test_attack_held import fleet_on_disk
from e2e.test_code_insights import COMMIT
from e2e.test_least_privilege import ci_user_and_deploy_role, with_release
from e2e.test_ledger import entries as ledger_entries
from e2e.test_proof_of_serving import README_ECOSYSTEM, RELEASE_A, RELEASE_B, RecipeFleet, assert_everyone_on_a
from e2e.test_proof_of_serving import fleet_with as fleet_with
from e2e.test_releases import release_env
from fakes.bitbucket_reports import fake_bitbucket, proxy_env
from standin import StandIn
from support import run_pipe


@pytest.mark.slow
def test_release_previous_by_tag_without_describe_instances_after_a_killed_build_does_not_go_past_the_live_release(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """Z, then A live on 2 instances; the build of B is killed while its first batch bakes (first on B, second
    on A). RELEASE: previous, TARGETS by tag, by a deploy role without ec2:DescribeInstances (the README: a
    warning, the agent check skipped; the deploy goes on). It must not take the fleet to Z, past A (what served
    before the killed build): the README says it reads each instance's current first."""
    fleet, tag = killed_build_on_a_tagged_fleet(standin, tmp_path, bucket, service)
    keys = ci_user_and_deploy_role(standin, uuid.uuid4().hex[:6], "prod", with_release("ec2:DescribeInstances"))
    with standin.iam_enforced():
        back = release_env(
            standin,
            fleet.ids,
            tmp_path,
            bucket,
            service,
            RELEASE="previous",
            BITBUCKET_BUILD_NUMBER="3",
            ROLE_ARN="arn:aws:iam::123456789012:role/deploy-prod",
            **keys,
        )
        back.pop("INSTANCE_IDS")
        back["TARGETS"] = f"tag:Service={tag}"
        run = run_pipe(back, timeout=300)

    assert "Traceback" not in run.output
    disk = fleet_on_disk(standin, fleet.ids)
    assert Z not in disk.values(), (disk, run.output)
    assert run.returncode == 1, run.output
    newest = ledger_entries(standin, service)[-1]
    assert newest["release"] != Z or newest["status"] != "succeeded", newest


WITH_WORKER = README_ECOSYSTEM.replace(
    "  ],\n};",
    "    {\n      name: 'worker',\n      script: 'server.js',\n      cwd: '/srv/web-api/current',\n"
    "      env_prod: { NODE_ENV: 'production', PORT: '3001', DB_PASSWORD: process.env.DB_PASSWORD },\n"
    "    },\n  ],\n};",
)


@pytest.mark.slow
def test_a_pm2_worker_dropped_from_the_ecosystem_file_is_named_with_the_fix_and_a_stays_live(
    fleet_with: Callable[[str], RecipeFleet],
) -> None:
    """A runs web-api and a worker (the README's recipe, cwd on current); B's ecosystem file drops the worker.
    pm2 startOrReload leaves the worker running from releases/A: the deploy must fail naming it, the release
    it runs from and a fix that works for an app no longer in the file (pm2 delete worker), and every truth
    say A."""
    assert "name: 'worker'" in WITH_WORKER
    fleet = fleet_with(WITH_WORKER)
    fleet.ecosystem = README_ECOSYSTEM

    run = fleet.ship("B", 2)

    assert run.returncode == 1, run.output
    assert "Traceback" not in run.output
    verdict = [line for line in run.output.splitlines() if f"runs release {RELEASE_A}, not {RELEASE_B}" in line]
    assert verdict, run.output
    assert all("worker" in line for line in verdict), verdict  # the pm2 app, not only its pid and command
    assert "pm2 delete <name>" in run.output and "no longer in the ecosystem file" in run.output, run.output
    assert_everyone_on_a(fleet)
    entry = ledger_entries(fleet.standin, fleet.service)[-1]
    assert entry["status"] != "succeeded" or entry["release"] == RELEASE_A, entry
    check = run_pipe(fleet.env(3, ACTION="status"), timeout=300)
    assert check.returncode == 0, check.output


@pytest.mark.slow
def test_the_code_insights_report_of_a_rolled_back_release_says_failed_and_names_both_releases(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on one instance; B fails its health check and is switched back. The Code Insights report on the
    commit says FAILED (never PASSED), names B as the release and A as the previous one, one failed instance;
    the step, the ledger and the instance agree that A runs."""
    ids = standin.launch(1)
    ship(
        release_env(standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "A"), BITBUCKET_BUILD_NUMBER="1")
    )
    a = ledger_entries(standin, service)[-1]["release"]
    with fake_bitbucket() as bitbucket:
        env = release_env(
            standin,
            ids,
            tmp_path,
            bucket,
            service,
            ARTIFACT=build(tmp_path, "B"),
            BITBUCKET_BUILD_NUMBER="2",
            HEALTHCHECK_COMMANDS='test "$(cat version.txt)" = A',
            CODE_INSIGHTS="true",
            **proxy_env(bitbucket, str(urlsplit(standin.endpoint).hostname)),
        )
        run = run_pipe(env, timeout=300)

    assert run.returncode == 1, run.output
    assert fleet_on_disk(standin, ids) == {ids[0]: A}, run.output
    entry = ledger_entries(standin, service)[-1]
    assert entry["status"] != "succeeded" or entry["release"] == a, entry
    body = bitbucket.report("acme/web-api", COMMIT).body
    data = {field["title"]: field["value"] for field in body["data"]}
    assert body["result"] == "FAILED", body
    assert (data["Previous release"], data["Instances failed"]) == (a, 1), data
    assert data["Release"] != a and "succeeded" not in body["title"], body
