"""Proof of what serves (VERIFY_PROCESSES): with real pm2 and Node.js 20 on each instance, behind a real
load balancer, a recipe that leaves the old release running, or an app holding the old value of a
rotated secret, fails the deploy with exit 90 and leaves every instance on the release before.

The fleet is test_node_pm2.py's, except that release A is first started with the ecosystem file each
test gives: what pm2 remembers of an app's first start is what goes wrong."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from app_fixture import FIXTURE_DIR, pack_release
from e2e.test_node_pm2 import APP_DIR, ELB_TIME_SCALE, NodeFleet
from standin import StandIn
from support import PipeRun, run_pipe

from pipe.release.remote import ReleaseExit

README_ECOSYSTEM = (FIXTURE_DIR / "ecosystem.config.js").read_text(encoding="utf-8")
CWD_LINE = "      cwd: '/srv/web-api/current',\n"
# the stale recipe: no cwd, so pm2 keeps the physical directory of the first start (releases/A)
WITHOUT_CWD = README_ECOSYSTEM.replace(CWD_LINE, "")
# a secret missing from the env block: pm2 keeps the value of the first start through reloads
WITHOUT_SECRET = README_ECOSYSTEM.replace(
    "env_prod: { NODE_ENV: 'production', DB_PASSWORD: process.env.DB_PASSWORD }", "env_prod: { NODE_ENV: 'production' }"
)
RELEASE_A, RELEASE_B = "000001-0123456", "000002-0123456"
FIRST, ROTATED = "first-Pa55word", "rotated-Pa55word"
PM2_FIX = f"set cwd: '{APP_DIR}/current' in the ecosystem file and list every variable the app reads"


class RecipeFleet(NodeFleet):
    ecosystem: str = README_ECOSYSTEM

    def ship(self, release: str, build: int, *, broken: bool = False, rolling: bool = True) -> PipeRun:
        return self.ship_with(release, build, broken=broken, rolling=rolling)

    def ship_with(
        self, release: str, build: int, *, broken: bool = False, rolling: bool = True, **variables: str
    ) -> PipeRun:
        artifact = pack_release(self.clone, release, broken=broken, ecosystem=self.ecosystem)
        relative = os.path.relpath(artifact, self.clone)
        return run_pipe(self.env(build, rolling=rolling, ARTIFACT=relative, **variables), timeout=300)


@pytest.fixture
def fleet_with(standin: StandIn, tmp_path: Path) -> Iterator[Callable[[str], RecipeFleet]]:
    """Two instances in a target group running release A (build 1) under pm2, first started with
    the given ecosystem file, all healthy."""

    def make(ecosystem: str) -> RecipeFleet:
        standin.elb_time_scale = ELB_TIME_SCALE
        ids = standin.launch(2, name="web-api")
        name = f"web-{uuid.uuid4().hex[:8]}"
        arn = standin.create_target_group(name, ids, deregistration_delay=20)
        bucket = f"artifacts-{uuid.uuid4().hex[:8]}"
        standin.client("s3").create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": standin.region}
        )
        service = f"svc{uuid.uuid4().hex[:8]}"
        secret = f"/deploy/prod/{service}/db_password"
        key_id = standin.create_key("prod")
        standin.put_secret(secret, FIRST, key_id)
        fleet = RecipeFleet(standin, ids, arn, name, tmp_path, bucket, service, secret, key_id)
        fleet.ecosystem = ecosystem
        first = fleet.ship("A", 1, rolling=False)
        assert first.returncode == 0, first.output
        standin.wait_target_states(arn, ids, "healthy", timeout=60)
        return fleet

    yield make


def assert_everyone_on_a(fleet: RecipeFleet) -> None:
    for instance_id, document in fleet.served().items():
        assert document["release"] == "A"
        assert fleet.live_release_dir(instance_id) == f"{APP_DIR}/releases/{RELEASE_A}"
    fleet.standin.wait_target_states(fleet.group_arn, fleet.ids, "healthy", timeout=60)
    assert fleet.through_the_load_balancer(20) == {"A"}


@pytest.mark.slow
def test_the_stale_recipe_fails_naming_the_process_and_release_a_and_every_instance_stays_on_a(
    fleet_with: Callable[[str], RecipeFleet],
) -> None:
    fleet = fleet_with(WITHOUT_CWD)

    run = fleet.ship("B", 2)

    assert run.returncode == 1, run.output
    assert f"Failed (exit {int(ReleaseExit.STALE_PROCESS)})" in run.output
    assert f"Exit 90 on {fleet.ids[0]}: {ReleaseExit.STALE_PROCESS.meaning}." in run.output  # the failure line
    # the process, with its command (pm2's title: node and the physical path of the first start)
    assert (
        f"(node {APP_DIR}/releases/{RELEASE_A}/server.js; pm2 app web-api) runs release {RELEASE_A}, not {RELEASE_B}"
        in run.output
    )
    assert PM2_FIX in run.output and "`pm2 delete <name>` once" in run.output
    assert f"rolled back to {RELEASE_A}" in run.output
    assert_everyone_on_a(fleet)


@pytest.mark.slow
def test_a_rotated_secret_missing_from_the_env_block_fails_naming_only_its_name(
    fleet_with: Callable[[str], RecipeFleet],
) -> None:
    fleet = fleet_with(WITHOUT_SECRET)
    fleet.standin.put_secret(fleet.secret, ROTATED, fleet.key_id)

    run = fleet.ship("B", 2)

    assert run.returncode == 1, run.output
    assert f"Failed (exit {int(ReleaseExit.STALE_PROCESS)})" in run.output
    assert f"runs release {RELEASE_B} with an old value of DB_PASSWORD, not the one this deploy" in run.output
    assert FIRST not in run.output and ROTATED not in run.output
    assert_everyone_on_a(fleet)


@pytest.mark.slow
def test_verify_processes_false_lets_the_stale_recipe_through_and_a_keeps_serving(
    fleet_with: Callable[[str], RecipeFleet],
) -> None:
    fleet = fleet_with(WITHOUT_CWD)

    run = fleet.ship_with("B", 2, VERIFY_PROCESSES="false")

    # the trade: "Deployed", current on B, and A's code answering everywhere
    assert run.returncode == 0, run.output
    assert "VERIFY_PROCESSES is 'false': nothing checks that the processes run the new release" in run.output
    assert "processes verified" not in run.output
    for instance_id, document in fleet.served().items():
        assert fleet.live_release_dir(instance_id) == f"{APP_DIR}/releases/{RELEASE_B}"
        assert document["release"] == "A"
