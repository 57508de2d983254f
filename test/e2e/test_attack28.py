"""The twenty-eighth outside attack (issue #17), on what changed last: a failed deploy under a ledger naming no
live release goes back on each instance to what its own deploy script switched from; VERIFY_PROCESSES with
a service its own manager restarts through current; secrets that keep their trailing newline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from e2e.release_support import A, B, build
from e2e.test_attack_held import fleet_on_disk, ledger_fleet, result
from e2e.test_releases import APP_DIR, release_env
from standin import StandIn
from support import run_pipe


def staging_entry(standin: StandIn, service: str) -> dict[str, Any]:
    """The newest entry of staging's release ledger."""
    value = standin.client("ssm").get_parameter(Name=f"/release-ledger/{service}/staging/release")["Parameter"]["Value"]
    entry: dict[str, Any] = json.loads(value)
    return entry


def a_live_on(standin: StandIn, ids: list[str], tmp_path: Path, bucket: str, service: str) -> None:
    """Release A on ``ids`` through ENVIRONMENT 'prod', recorded live in prod's ledger."""
    env = release_env(
        standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "A"), BITBUCKET_BUILD_NUMBER="1"
    )
    first = run_pipe(env, timeout=300)
    assert first.returncode == 0, first.output


def b_through_staging(
    standin: StandIn, ids: list[str], tmp_path: Path, bucket: str, service: str, **extra: str
) -> dict[str, str]:
    """B through ENVIRONMENT 'staging' into the same APP_DIR: a ledger that names no live release."""
    return release_env(
        standin,
        ids,
        tmp_path,
        bucket,
        service,
        ARTIFACT=build(tmp_path, "B"),
        BITBUCKET_BUILD_NUMBER="2",
        ENVIRONMENT="staging",
        **extra,
    )


def test_an_instance_whose_install_failed_before_its_switch_is_not_said_to_stay_on_the_new_release(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on the first instance through 'prod'; the second is new. B through 'staging' (no live release in
    its ledger) to both in one batch: the first's install fails before its switch (it cannot create its
    state directories; a download the instance role may not read fails there too), the second installs B.
    The first still runs A, which its own script never left: no record may say it stayed on B."""
    first, second = standin.launch(2)
    a_live_on(standin, [first], tmp_path, bucket, service)
    ready = standin.instance_path(first, f"{APP_DIR}/.ssm-deploy/ready")
    for leftover in ready.iterdir():
        leftover.unlink()
    ready.rmdir()
    ready.write_text("in the way\n")  # mkdir -p fails: exit 80 before anything is switched

    run = run_pipe(b_through_staging(standin, [first, second], tmp_path, bucket, service), timeout=300)

    disk = fleet_on_disk(standin, [first, second])
    assert run.returncode == 1, run.output
    assert disk == {first: A, second: B}, run.output
    assert f"so {first}" not in run.output and f"{first}, {second} stayed on it" not in run.output, run.output
    assert f"{first} runs {A} (no release was live before it)" not in run.output, run.output
    entry = staging_entry(standin, service)
    assert ledger_fleet(entry) == disk, entry
    assert result(tmp_path)["fleet"] == disk


def test_a_build_that_prints_much_before_the_switch_still_goes_back_to_what_the_instance_ran(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live through 'prod'; B through 'staging' (no live release in its ledger), whose COMMANDS (run in the
    release before the switch: `npm ci`, a webpack build) print 30,000 characters, fails its health check.
    SSM keeps the first 24,000 characters of the output: the line that says which release the switch left
    comes after them. The instance ran A: it must run A again."""
    (instance,) = ids = standin.launch(1)
    a_live_on(standin, ids, tmp_path, bucket, service)
    env = b_through_staging(
        standin,
        ids,
        tmp_path,
        bucket,
        service,
        COMMANDS="seq 100000 106000",
        HEALTHCHECK_COMMANDS="false",
        HEALTHCHECK_RETRIES="1",
    )
    run = run_pipe(env, timeout=300)

    assert run.returncode == 1, run.output
    assert fleet_on_disk(standin, ids) == {instance: A}, run.output[-3000:]
    assert "no release was live before" not in run.output, run.output[-3000:]
    assert "Rollback succeeded on all 1 instance(s)" in run.output, run.output[-3000:]
    entry = staging_entry(standin, service)
    assert (entry["status"], ledger_fleet(entry)) == ("failed", {instance: A}), entry  # B was live nowhere
    assert result(tmp_path)["fleet"] == {instance: A}


def test_a_rolling_deploy_over_a_fresh_instance_and_one_that_ran_a_sends_each_where_it_was(  # held
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live through 'prod' on the second instance; the first is new. B through 'staging', one instance a
    batch: batch 1 (the new one) passes, batch 2 fails its health check. The second goes back to A; the first,
    which ran nothing before, stays on B and is named; the ledger and the result file say the disk."""
    fresh, ran_a = ids = standin.launch(2)
    a_live_on(standin, [ran_a], tmp_path, bucket, service)
    env = b_through_staging(
        standin,
        ids,
        tmp_path,
        bucket,
        service,
        BATCH_SIZE="1",
        HEALTHCHECK_COMMANDS=f'[ "$AWS_SSM_INSTANCE_ID" != "{ran_a}" ]',
        HEALTHCHECK_RETRIES="1",
    )
    run = run_pipe(env, timeout=300)

    disk = fleet_on_disk(standin, ids)
    assert run.returncode == 1, run.output
    assert disk == {fresh: B, ran_a: A}, run.output
    assert f"{fresh} runs {B} (the new release: no release was live before it)" in run.output, run.output
    entry = staging_entry(standin, service)
    assert ledger_fleet(entry) == disk, entry
    assert result(tmp_path)["fleet"] == disk
