"""The twenty-third outside attack on the verdict, the ledger and ACTION: status (issue #17, "Done when"):
pm2 cluster mode, apps removed or renamed between releases, KEEP_RELEASES pruning the release a process
still runs from, and servers started through ``current`` whose entry point a later release no longer has.
Each test compares the three truths: what the instance runs (``current`` on disk, the app asked over HTTP,
/proc), what the ledger says is live, and what the step said (exit code, last line, result file)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e.release_support import A, B, C, D, build_server
from e2e.test_attack3 import WORKER, wait_for_port
from e2e.test_attack20 import CLUSTER, one_instance
from e2e.test_attack_found import served
from e2e.test_ledger import entries as ledger_entries
from e2e.test_proof_of_serving import RELEASE_B, RecipeFleet
from e2e.test_proof_of_serving import fleet_with as fleet_with
from e2e.test_releases import APP_DIR, live, releases
from standin import StandIn
from support import kill_instance_processes, run_pipe


def start_unless_running(port: int) -> str:
    """`systemctl start web-api` with ExecStart=/usr/bin/python3 /srv/web-api/current/<entry> (the unit the
    release ships: server.py in A, main.py in B), no WorkingDirectory=: it starts the service when it does
    not run and does nothing when it does (a `daemon-reload` does not restart it either)."""
    return (
        'echo "activated $(cat version.txt)"\n'
        "entry=server.py; [ -f main.py ] && entry=main.py\n"
        "if [ ! -e /srv/web.pid ]; then\n"
        f'  (cd / && exec python3 {APP_DIR}/current/"$entry" {port}) </dev/null >/dev/null 2>&1 &\n'
        "  echo $! > /srv/web.pid\n"
        f"  {wait_for_port(port)}\n"
        "fi"
    )


# --- a server started through current whose entry point the new release renamed ------------------------


def test_a_server_started_through_current_whose_script_the_new_release_renamed_fails_the_deploy(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A's server runs `python3 /srv/web-api/current/server.py` (systemd-style, started before the switch);
    B renames its entry point to main.py and its activation does not restart the running service, so A
    keeps serving. The process check named no process (the file is not in current any more): `✔ Deployed`,
    the ledger said B live while A served. Now the deploy fails with exit 90 naming A's server and goes back."""
    port = 18230
    instance_id, env = one_instance(standin, tmp_path, bucket, service, ACTIVATE_COMMANDS=start_unless_running(port))
    try:
        assert run_pipe(env("A", "1"), timeout=300).returncode == 0
        pid = standin.run_on_instance(instance_id, "cat /srv/web.pid").stdout.strip()
        second = run_pipe({**env("B", "2"), "ARTIFACT": build_server(tmp_path, "B", "main.py")}, timeout=300)
        what_serves = served(standin, instance_id, port)
        status = run_pipe(env("B", "3", ACTION="status"), timeout=300)
    finally:
        kill_instance_processes(standin, instance_id, "/srv/web.pid")

    assert what_serves == "A"  # the server started for A still runs A's code
    assert second.returncode == 1, second.output
    assert f"process {pid} (python3 {APP_DIR}/current/server.py {port}) runs release {A}, not {B}" in second.output
    assert "it was started through /srv/web-api/current before the switch" in second.output, second.output
    # the three truths agree: A on disk, A served, the ledger's B rolled back, status No drift on A
    assert live(standin, instance_id) == "A"
    assert ledger_entries(standin, service)[-1]["status"] == "rolled back"
    assert status.returncode == 0 and f"No drift: 1 instance(s) run {A}, the live release" in status.output


def test_status_names_a_server_started_through_current_whose_script_the_live_release_renamed(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """As above with VERIFY_PROCESSES: 'false' (the deploy's own proof given up, the README's trade-off): B
    goes live while A's server serves. ACTION: status said No drift; it must name A's server."""
    port = 18231
    instance_id, env = one_instance(
        standin, tmp_path, bucket, service, ACTIVATE_COMMANDS=start_unless_running(port), VERIFY_PROCESSES="false"
    )
    try:
        assert run_pipe(env("A", "1"), timeout=300).returncode == 0
        second = run_pipe({**env("B", "2"), "ARTIFACT": build_server(tmp_path, "B", "main.py")}, timeout=300)
        what_serves = served(standin, instance_id, port)
        pid = standin.run_on_instance(instance_id, "cat /srv/web.pid").stdout.strip()
        status = run_pipe(env("B", "3", ACTION="status"), timeout=300)
    finally:
        kill_instance_processes(standin, instance_id, "/srv/web.pid")

    assert second.returncode == 0, second.output
    assert live(standin, instance_id) == "B" and what_serves == "A"
    assert ledger_entries(standin, service)[-1]["status"] == "succeeded"
    assert status.returncode == 1, status.output
    assert f"process {pid} (" in status.output and f"runs release {A}" in status.output, status.output
    result = json.loads((tmp_path / "ssm-deploy-result.json").read_text())
    assert result["status"] == "drift", result


# --- held: pm2 cluster mode, an app renamed in B's ecosystem file ------------------------------------------


@pytest.mark.slow
def test_an_app_renamed_in_cluster_mode_fails_the_switch_back_and_status_names_the_new_apps_workers(
    fleet_with: Callable[[str], RecipeFleet],
) -> None:
    """Held. A runs as pm2 app web-api in cluster mode (2 workers). B's ecosystem file renames it api: pm2 starts
    api's workers next to web-api's, and in cluster mode both apps' workers take connections from the one
    socket the daemon holds (node's cluster shares a listening handle by address and port), so A and B serve
    side by side. The check finds web-api's workers (exit 90), the switch back reloads web-api in A and leaves
    api's workers of B: exit 86 on both, the ledger says failed (not rolled back), status names api's workers."""
    fleet = fleet_with(CLUSTER)
    fleet.ecosystem = CLUSTER.replace("name: 'web-api'", "name: 'api'")

    run = fleet.ship("B", 2, rolling=False)
    status = run_pipe(fleet.env(3, rolling=False, ACTION="status"), timeout=300)

    assert run.returncode == 1, run.output
    assert run.output.count("Failed (exit 86)") >= 2, run.output
    assert f"runs release {RELEASE_B}, not {A}: it was started through {APP_DIR}/current before the switch" in (
        run.output
    )
    for instance in fleet.ids:
        assert fleet.live_release_dir(instance) == f"{APP_DIR}/releases/{A}"
    assert {document["release"] for document in fleet.served().values()} <= {"A", "B"}
    # the last line does not say they run A: current points back at it, but api's workers still run B
    back = f"current points back at {A} (the release live before), but its switch back Failed (exit 86)."
    assert back in run.output.rstrip().splitlines()[-1], run.output
    assert f"run {A} (the release live before)" not in run.output, run.output
    entry = ledger_entries(fleet.standin, fleet.service)[-1]
    assert (entry["release"], entry["status"]) == (RELEASE_B, "failed"), entry
    assert status.returncode == 1, status.output
    assert f"4 process(es) run from another release than current on {', '.join(fleet.ids)}" in status.output
    document = json.loads((fleet.clone / "ssm-deploy-result.json").read_text())
    assert document["status"] == "drift"
    assert {listed["count"] for listed in document["processes_of_other_releases"]} == {2}, document


# --- held: KEEP_RELEASES prunes the release a worker left from A still runs from ---------------------------------


def test_status_names_a_worker_whose_release_keep_releases_pruned_as_a_deleted_copy(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """Held. A's activation starts a worker in its release (python3 worker.py, as a Procfile's `worker:` line); B and
    C no longer have it and nothing stops it (VERIFY_PROCESSES: 'false'). D's deploy with KEEP_RELEASES: 2
    prunes A (C's kept it, where RELEASE: previous went had C failed): the worker runs code no longer on disk.
    Status must name it, as a deleted copy of A."""
    activate = (
        'echo "activated $(cat version.txt)"\n'
        "if [ -f worker.py ] && [ ! -e /srv/worker23.pid ]; then\n"
        "  python3 worker.py </dev/null >/dev/null 2>&1 &\n"
        "  echo $! > /srv/worker23.pid\n"
        "fi"
    )
    instance_id, env = one_instance(
        standin, tmp_path, bucket, service, ACTIVATE_COMMANDS=activate, VERIFY_PROCESSES="false"
    )
    try:
        first = run_pipe(
            {**env("A", "1"), "ARTIFACT": build_server(tmp_path, "A", **{"worker.py": WORKER})}, timeout=300
        )
        assert first.returncode == 0, first.output
        assert run_pipe(env("B", "2"), timeout=300).returncode == 0
        assert run_pipe(env("C", "3"), timeout=300).returncode == 0
        fourth = run_pipe(env("D", "4", KEEP_RELEASES="2"), timeout=300)
        pid = standin.run_on_instance(instance_id, "cat /srv/worker23.pid").stdout.strip()
        cwd = standin.run_on_instance(instance_id, f"readlink /proc/{pid}/cwd").stdout.strip()
        status = run_pipe(env("D", "5", ACTION="status"), timeout=300)
    finally:
        kill_instance_processes(standin, instance_id, "/srv/worker23.pid")

    assert fourth.returncode == 0, fourth.output
    assert f"removed release {A}" in fourth.output, fourth.output
    assert cwd == f"{APP_DIR}/releases/{A} (deleted)", cwd
    assert live(standin, instance_id) == "D"
    assert status.returncode == 1, status.output
    assert f"process {pid} (python3, user root) runs a deleted copy of release {A}, while current points to {D}" in (
        status.output
    ), status.output
    document = json.loads((tmp_path / "ssm-deploy-result.json").read_text())
    (listed,) = document["processes_of_other_releases"]
    assert [(p["pid"], p["release"], p["deleted_copy"]) for p in listed["processes"]] == [(int(pid), A, True)], listed


def test_keep_releases_after_a_redeploy_of_the_live_build_keeps_the_release_release_previous_goes_back_to(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A, B, C, then C's very build promoted again as build 4 (a redeploy: a new release id, the same artifact)
    with KEEP_RELEASES: 2. RELEASE: previous then passes over 4 and C (the same artifact) to B: the release
    "before the live one" that pruning must keep. It pruned B (kept only 4 and C): going back downloaded and
    unpacked B again, and would fail (exit 81) once the bucket's lifecycle expired B's artifact."""
    instance_id, env = one_instance(standin, tmp_path, bucket, service)
    for version, number in (("A", "1"), ("B", "2"), ("C", "3")):
        assert run_pipe(env(version, number), timeout=300).returncode == 0
    build_c = (tmp_path / "web-api.tgz").read_bytes()
    promoted = env("C", "4", KEEP_RELEASES="2")
    (tmp_path / "web-api.tgz").write_bytes(build_c)  # C's bytes again, as build 4
    again = run_pipe(promoted, timeout=300)
    on_disk = releases(standin, instance_id)
    back = run_pipe({k: v for k, v in env("C", "5", RELEASE="previous").items() if k != "ARTIFACT"}, timeout=300)

    assert again.returncode == 0 and "Redeploy of 000004-0123456" in again.output, again.output
    assert on_disk == [B, C, "000004-0123456"], again.output
    assert back.returncode == 0 and f"Rollback to {B}" in back.output, back.output
    assert "downloading" not in back.output, back.output  # going back is a switch, not a download
    assert live(standin, instance_id) == "B"
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["action"], entry["status"]) == (B, "rollback", "succeeded"), entry
