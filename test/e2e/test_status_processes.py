"""ACTION: status sees what serves, not only where ``current`` points (issue #17): with real pm2 and
Node.js 20 on each instance, a pm2 app added by a release that was switched back from (test_attack17's
scenario: exit 86, ROLLBACK FAILED) keeps running that release while ``current`` and the ledger agree.
Status used to say "No drift" there; it now fails naming the instance, the process, the release it
runs from and the fix. On the same fleet before that deploy, with pm2's daemon and apps running the
live release, status still finds no drift."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from e2e.test_attack17 import WITH_A_WORKER
from e2e.test_node_pm2 import APP_DIR
from e2e.test_proof_of_serving import PM2_FIX, README_ECOSYSTEM, RELEASE_A, RELEASE_B, RecipeFleet
from e2e.test_proof_of_serving import fleet_with as fleet_with
from support import PipeRun, run_pipe


def _status(fleet: RecipeFleet) -> PipeRun:
    # the deploy's own step definition with ACTION: status (SECRETS and the commands are ignored)
    return run_pipe(fleet.env(99, rolling=False, ACTION="status"), timeout=300)


def _processes_on(fleet: RecipeFleet, instance: str, release: str) -> list[int]:
    """The pids on ``instance`` whose working directory is in releases/``release`` (as the instance sees them)."""
    listed = fleet.standin.run_on_instance(
        instance,
        f'for p in /proc/[0-9]*; do case $(readlink "$p/cwd") in {APP_DIR}/releases/{release}*) echo "${{p#/proc/}}";; '
        "esac; done",
    )
    return [int(pid) for pid in listed.stdout.split()]


@pytest.mark.slow
def test_status_names_a_process_of_a_release_switched_back_from_and_passes_on_a_clean_fleet(
    fleet_with: Callable[[str], RecipeFleet],
) -> None:
    fleet = fleet_with(README_ECOSYSTEM)

    clean = _status(fleet)

    assert clean.returncode == 0, clean.output
    assert f"No drift: 2 instance(s) run {RELEASE_A}, the live release" in clean.output

    fleet.ecosystem = WITH_A_WORKER  # B adds pm2 app `worker` and fails its health check
    shipped = fleet.ship("B", 2, broken=True)
    assert shipped.returncode == 1, shipped.output
    # current says A everywhere (what status read before), yet a process runs B on the first batch
    assert {fleet.live_release_dir(i) for i in fleet.ids} == {f"{APP_DIR}/releases/{RELEASE_A}"}
    on_b = {instance: pids for instance in fleet.ids if (pids := _processes_on(fleet, instance, RELEASE_B))}
    assert list(on_b) == [fleet.ids[0]], on_b
    [pid] = on_b[fleet.ids[0]]

    status = _status(fleet)

    assert status.returncode == 1, status.output
    assert "Traceback" not in status.output
    assert (
        f"Drift: on {fleet.ids[0]} process {pid} (node" in status.output
        and f"runs release {RELEASE_B}, while current points to {RELEASE_A}; fix: stop that process" in status.output
    ), status.output
    assert PM2_FIX in status.output
    assert f"Drift on 1 of 2 instance(s) ({fleet.ids[0]})" in status.output
    assert "No drift" not in status.output
    result = json.loads((fleet.clone / "ssm-deploy-result.json").read_text())
    assert result["status"] == "drift"
    [found] = result["processes_of_other_releases"]
    assert found["instance_id"] == fleet.ids[0] and found["current"] == RELEASE_A and found["count"] == 1
    assert found["processes"][0]["pid"] == pid and found["processes"][0]["release"] == RELEASE_B
    dotenv = (fleet.clone / "ssm-deploy-result.json.env").read_text()
    assert f"SSM_DEPLOY_DRIFTED_INSTANCES='{fleet.ids[0]}'" in dotenv
