"""The fifty-third outside attack (issue #17), on re-deploy sequences and target groups the deploy
shares: the same build run again after it went live, a deploy right after one whose switch back failed
(exit 86), a target group shared with another service's instances, and a release that breaks the health
check of one port only. Each test compares what the instances run (``current`` on disk, the app over
HTTP, /proc), what the load balancer routes to, what the ledger says, and what the step said (exit code,
last line, result file, ``ACTION: status``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e.release_support import A, build
from e2e.test_attack17 import WITH_A_WORKER
from e2e.test_attack_held import fleet_on_disk, ledger_fleet, result
from e2e.test_ledger import entries as ledger_entries
from e2e.test_load_balancer import make_fleet, rolling_env
from e2e.test_proof_of_serving import README_ECOSYSTEM, RELEASE_A, RELEASE_B, RecipeFleet, assert_everyone_on_a
from e2e.test_proof_of_serving import fleet_with as fleet_with
from e2e.test_releases import APP_DIR, release_env
from standin import StandIn
from standin.instance_app import PORT
from support import run_pipe, wait_until


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


def status(standin: StandIn, ids: list[str], clone: Path, bucket: str, service: str) -> tuple[int, str]:
    env = release_env(standin, ids, clone, bucket, service, ACTION="status", BITBUCKET_BUILD_NUMBER="99")
    done = run_pipe(env, timeout=300)
    return done.returncode, done.output


# --- the same build run again after it went live ---------------------------------------------------------


# held: a Rerun of a live build redeploys it (activation only), and RELEASE: previous then has nowhere to go
def test_the_same_build_run_again_after_it_went_live_is_a_redeploy_that_runs_no_commands(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A (build 1) live on two instances; the step is run again (Bitbucket's Rerun: the same build number,
    the same bytes). The README: a release already on the instance is used again with no download and no
    COMMANDS when it still matches its manifest; the ledger records a ``redeploy`` that succeeded, the live
    release stays A, and RELEASE: previous has nothing to go back to (no other artifact was ever live)."""
    ids = standin.launch(2)
    ran = f"{APP_DIR}/shared/commands-ran"
    commands = f"mkdir -p {APP_DIR}/shared && echo ran >> {ran}"

    def env(**extra: str) -> dict[str, str]:  # COMMANDS too: a RELEASE deploy runs none, and refuses them
        return release_env(standin, ids, tmp_path, bucket, service, **({"BITBUCKET_BUILD_NUMBER": "1"} | extra))

    artifact = build(tmp_path, "A")
    first = run_pipe(env(ARTIFACT=artifact, COMMANDS=commands), timeout=300)
    assert first.returncode == 0, first.output
    again = run_pipe(env(ARTIFACT=artifact, COMMANDS=commands), timeout=300)

    assert again.returncode == 0, again.output
    assert "Traceback" not in again.output
    assert f"✔ Redeploy of {A}: Deployed to 2 instance(s)." in last_line(again.output), again.output
    assert "nothing uploaded" in again.output, again.output
    for instance in ids:  # COMMANDS ran once, by the first run
        assert standin.instance_path(instance, ran).read_text().splitlines() == ["ran"], again.output
    assert fleet_on_disk(standin, ids) == dict.fromkeys(ids, A)
    first_entry, second_entry = ledger_entries(standin, service)
    assert (first_entry["action"], first_entry["status"]) == ("deploy", "succeeded"), first_entry
    assert (second_entry["action"], second_entry["status"], second_entry["release"]) == (
        "redeploy",
        "succeeded",
        A,
    ), second_entry
    assert ledger_fleet(second_entry) == dict.fromkeys(ids, A), second_entry
    assert result(tmp_path)["fleet"] == dict.fromkeys(ids, A), result(tmp_path)
    code, said = status(standin, ids, tmp_path, bucket, service)
    assert code == 0 and f"No drift: 2 instance(s) run {A}, the live release" in said, said
    back = run_pipe(env(RELEASE="previous", BITBUCKET_BUILD_NUMBER="2"), timeout=300)
    assert back.returncode != 0 and "Traceback" not in back.output, back.output
    assert fleet_on_disk(standin, ids) == dict.fromkeys(ids, A)
    assert "has no release live before the live one with another artifact" in last_line(back.output), back.output
    assert len(ledger_entries(standin, service)) == 2  # refused before anything was sent: no version


# --- a release that breaks the health check of one port only ----------------------------------------------

# B's worker listens on 3002: the port its target groups check (3001) refuses, while the app on 3000 and the
# HEALTHCHECK_COMMANDS (which ask 3000) are fine
WORKER_MOVED = WITH_A_WORKER.replace("PORT: '3001'", "PORT: '3002'")


def _served_through(standin: StandIn, arn: str, count: int) -> set[str]:
    with standin.traffic(arn, max_requests=count, workers=2) as traffic:
        traffic.wait(60)
    assert traffic.failures == [], traffic.failures[:5]
    return set(traffic.summary().releases)


def test_a_release_that_breaks_the_health_check_of_a_group_not_named_fails_and_its_switch_back_waits_for_it(
    fleet_with: Callable[[str], RecipeFleet],
) -> None:
    """A under pm2 on two instances: web-api on 3000 and worker on 3001, both healthy. Each instance is
    registered on 3000 in the named group and on 3001 in a second group (port 3001) that TARGET_GROUPS does
    not name. B moves the worker to 3002 (its ecosystem file): HEALTHCHECK_COMMANDS (port 3000) pass, but the
    first batch's 3001 target turns unhealthy. The deploy must fail and go back to A: every truth says A,
    and both ports serve A through the load balancer again. (Held, not kept as a test: the same with 3001
    registered a second time in the named group.)

    Found (fixed): the switch back took that target for one found unhealthy before the deploy (a group
    not named: "unhealthy ... before anything of this deploy: ... not waited for there"), so it called
    the rollback healthy without waiting for the port this deploy's release had broken."""
    fleet = fleet_with(WITH_A_WORKER)
    standin, ids = fleet.standin, fleet.ids
    admin = standin.create_target_group(f"adm-{uuid.uuid4().hex[:8]}", ids, deregistration_delay=20, port=3001)
    on_3001 = {(i, 3001) for i in ids}
    wait_until(lambda: all(standin.port_states(admin).get(t) == "healthy" for t in on_3001), "3001 healthy", 60)
    fleet.ecosystem = WORKER_MOVED

    run = fleet.ship_with("B", 2, HEALTHY_TIMEOUT="20")
    first = ids[0]
    states_at_the_end = standin.port_states(admin)

    assert "Traceback" not in run.output
    assert run.returncode == 1, run.output
    assert "before anything of this deploy" not in run.output, run.output
    assert "Rollback succeeded on all 1 instance(s)" in last_line(run.output), run.output
    assert states_at_the_end[(first, 3001)] == "healthy", (states_at_the_end, run.output)  # waited for
    disk = fleet_on_disk(standin, ids)
    assert disk == dict.fromkeys(ids, RELEASE_A), run.output
    entry = ledger_entries(standin, fleet.service)[-1]
    assert (entry["release"], entry["status"]) == (RELEASE_B, "rolled back"), entry
    assert ledger_fleet(entry) == disk, entry
    assert result(fleet.clone)["fleet"] == disk, result(fleet.clone)
    wait_until(lambda: all(standin.port_states(admin).get(t) == "healthy" for t in on_3001), "3001 back", 60)
    assert_everyone_on_a(fleet)
    assert _served_through(standin, admin, 20) == {"A"}
    check = run_pipe(fleet.env(3, rolling=False, ACTION="status"), timeout=300)
    assert check.returncode == 0 and "No drift" in check.output, check.output


# --- a target group shared with another service's instances ------------------------------------------------


# held: the other service's targets count toward MIN_HEALTHY (README: "and targets of other services in the
# group"), the plan says how many of the group's targets this deploy takes, and they are never drained
def test_a_group_shared_with_another_services_instance_counts_it_and_never_drains_it(standin: StandIn) -> None:
    """Two instances of this service and one of another service (its app up, not in this deploy) in one
    named group, MIN_HEALTHY 2, one instance a batch. The plan: 3 healthy of 3 registered, 2 of them
    deployed here; each batch leaves 2 healthy, so the deploy may go on. The other service's target is
    never deregistered, and stays healthy through the deploy."""
    fleet = make_fleet(standin, 2)
    (other,) = standin.launch(1)
    standin.app_up(other)
    standin.client("elbv2").register_targets(TargetGroupArn=fleet.group_arn, Targets=[{"Id": other}])
    standin.wait_target_states(fleet.group_arn, [*fleet.ids, other], "healthy", timeout=30)
    journal = len(standin.load_balancer.changes(fleet.group_arn))
    env = rolling_env(standin, fleet, COMMANDS="true", BATCH_SIZE="1", MIN_HEALTHY="2")

    dry = run_pipe(env | {"DRY_RUN": "true"})
    assert dry.returncode == 0, dry.output
    assert f"target group {fleet.group_name}: 3 healthy of 3 registered, 2 of them deployed here" in dry.output
    assert other not in dry.output, dry.output  # not one of this deploy's instances or batches
    run = run_pipe(env, timeout=200)

    assert run.returncode == 0, run.output
    assert "Deployed to 2 instance(s)" in last_line(run.output), run.output
    first, second = fleet.ids
    assert standin.load_balancer.changes(fleet.group_arn)[journal:] == [
        ("deregister", [(first, PORT)]),
        ("register", [(first, PORT)]),
        ("deregister", [(second, PORT)]),
        ("register", [(second, PORT)]),
    ], run.output
    assert standin.target_states(fleet.group_arn)[other] == "healthy"
    below = run_pipe(env | {"MIN_HEALTHY": "100%", "DRY_RUN": "true"})  # 3 of 3: no batch may leave
    assert below.returncode != 0 and "fewer than MIN_HEALTHY 100% (3)" in below.output, below.output


# --- a deploy right after one whose switch back failed (exit 86) ---------------------------------------------


def _app_releases(fleet: RecipeFleet) -> dict[str, list[str]]:
    """Per instance, the release directory of each app process (``node .../server.js``; /proc, as root). The
    pm2 daemon is no app: it keeps the directory of its first start, which the README calls a holder."""
    found = {}
    for instance in fleet.ids:
        listed = fleet.standin.run_on_instance(
            instance,
            "for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); case $c in *server.js*) "
            "readlink $p/cwd;; esac; done",
        )
        found[instance] = sorted(line.rsplit("/", 1)[-1] for line in listed.stdout.split())
    return found


# held (slow: two pm2 deploys): C's startOrReload takes the worker B left over, and every truth says C
@pytest.mark.slow
def test_a_deploy_after_a_failed_switch_back_brings_every_process_to_the_new_release(
    fleet_with: Callable[[str], RecipeFleet],
) -> None:
    """A under pm2 (web-api only); B adds a worker and fails its health check: the switch back to A leaves
    worker running B's code (exit 86). ACTION: status then names the drift. C (build 3, worker listed, with
    cwd current, healthy) is deployed next: it must bring every process to C or fail saying why; on success
    every app process (web-api, worker) runs C, the ledger calls C live with A (the ledger's live release)
    before it, and status finds no drift."""
    fleet = fleet_with(README_ECOSYSTEM)
    fleet.ecosystem = WITH_A_WORKER
    failed = fleet.ship("B", 2, broken=True)
    assert failed.returncode == 1 and "ROLLBACK FAILED" in failed.output, failed.output
    on_b = [i for i, releases in _app_releases(fleet).items() if RELEASE_B in releases]
    assert on_b == fleet.ids[:1], failed.output  # the first batch's worker; the second batch never started
    between = run_pipe(fleet.env(3, rolling=False, ACTION="status"), timeout=300)
    assert between.returncode == 1 and "Drift" in between.output, between.output

    run = fleet.ship("C", 4)

    assert "Traceback" not in run.output
    release_c = "000004-0123456"
    assert run.returncode == 0, run.output
    assert f"live before: {RELEASE_A}" in run.output, run.output
    assert "Deployed to 2 instance(s)" in last_line(run.output), run.output
    disk = fleet_on_disk(fleet.standin, fleet.ids)
    assert disk == dict.fromkeys(fleet.ids, release_c), run.output
    assert _app_releases(fleet) == {i: [release_c, release_c] for i in fleet.ids}, run.output  # web-api, worker
    assert {document["release"] for document in fleet.served().values()} == {"C"}
    entry = ledger_entries(fleet.standin, fleet.service)[-1]
    assert (entry["release"], entry["status"], entry["previous"]) == (release_c, "succeeded", RELEASE_A), entry
    assert ledger_fleet(entry) == disk and result(fleet.clone)["fleet"] == disk, entry
    fleet.standin.wait_target_states(fleet.group_arn, fleet.ids, "healthy", timeout=60)
    assert fleet.through_the_load_balancer(20) == {"C"}
    after = run_pipe(fleet.env(5, rolling=False, ACTION="status"), timeout=300)
    assert after.returncode == 0 and "No drift" in after.output, after.output
