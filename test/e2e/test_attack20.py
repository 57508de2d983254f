"""The twentieth outside attack on the verdict and the audit trail (issue #17, "Done when"), aimed at
what changed last: ACTION: status reading the processes too. Each test compares the three truths: what
the instance runs (``current`` on disk, the app asked over HTTP, /proc), what the ledger says is live,
and what the step said (exit code, last line, result file)."""

from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e.release_support import A, B, D, build_server
from e2e.test_attack3 import wait_for_port
from e2e.test_attack_found import served
from e2e.test_ledger import entries as ledger_entries
from e2e.test_proof_of_serving import README_ECOSYSTEM, RecipeFleet
from e2e.test_proof_of_serving import fleet_with as fleet_with
from e2e.test_releases import APP_DIR, live, release_env
from standin import StandIn
from support import kill_instance_processes, run_pipe

# pm2 cluster mode: pm2's daemon holds the app's port and keeps the directory of its first start
CLUSTER = README_ECOSYSTEM.replace(
    "      script: 'server.js',\n", "      script: 'server.js',\n      exec_mode: 'cluster',\n      instances: 2,\n"
)


# --- status: a server started through `current` before the switch, which no deploy restarted ------------


def one_instance(
    standin: StandIn, tmp_path: Path, bucket: str, service: str, **fixed: str
) -> tuple[str, Callable[..., dict[str, str]]]:
    """A fresh instance, and the step's environment for it: env(version, build number, **more variables)."""
    (instance_id,) = standin.launch(1)

    def env(version: str, number: str, **extra: str) -> dict[str, str]:
        artifact = build_server(tmp_path, version)
        return release_env(
            standin,
            [instance_id],
            tmp_path,
            bucket,
            service,
            ARTIFACT=artifact,
            BITBUCKET_BUILD_NUMBER=number,
            **fixed,
            **extra,
        )

    return instance_id, env


def systemd_style(port: int) -> str:
    """`systemctl start web-api` (ExecStart=/usr/bin/python3 /srv/web-api/current/server.py, no
    WorkingDirectory=): starts the service when it does not run, does nothing when it does."""
    return (
        'echo "activated $(cat version.txt)"\n'
        "if [ ! -e /srv/web.pid ]; then\n"
        f"  (cd / && exec python3 {APP_DIR}/current/server.py {port}) </dev/null >/dev/null 2>&1 &\n"
        "  echo $! > /srv/web.pid\n"
        f"  {wait_for_port(port)}\n"
        "fi"
    )


def test_status_names_a_server_started_through_current_before_the_switch(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    port = 18120
    # the step gives up the deploy's own proof (VERIFY_PROCESSES: false): status is the check left
    instance_id, env = one_instance(
        standin, tmp_path, bucket, service, ACTIVATE_COMMANDS=systemd_style(port), VERIFY_PROCESSES="false"
    )
    try:
        assert run_pipe(env("A", "1"), timeout=300).returncode == 0
        second = run_pipe(env("B", "2"), timeout=300)
        assert second.returncode == 0, second.output
        status = run_pipe(env("B", "3", ACTION="status"), timeout=300)
        what_serves = served(standin, instance_id, port)
        pid = standin.run_on_instance(instance_id, "cat /srv/web.pid").stdout.strip()
    finally:
        kill_instance_processes(standin, instance_id, "/srv/web.pid")

    # the three truths: current and the ledger say B, the only server serves A
    assert live(standin, instance_id) == "B"
    assert ledger_entries(standin, service)[-1]["status"] == "succeeded"
    assert what_serves == "A"
    # status must not say No drift while the replaced release serves
    assert "No drift" not in status.output, status.output
    assert status.returncode == 1, status.output
    assert f"process {pid} (" in status.output and f"runs release {A}" in status.output, status.output
    result = json.loads((tmp_path / "ssm-deploy-result.json").read_text())
    assert result["status"] == "drift"


def test_status_finds_no_drift_for_a_server_started_through_current_of_the_release_switched_back_to(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    port = 18121
    instance_id, env = one_instance(standin, tmp_path, bucket, service, ACTIVATE_COMMANDS=systemd_style(port))
    try:
        assert run_pipe(env("A", "1"), timeout=300).returncode == 0
        second = run_pipe(env("B", "2"), timeout=300)  # VERIFY_PROCESSES finds A's server: B is switched back
        status = run_pipe(env("B", "3", ACTION="status"), timeout=300)
        what_serves = served(standin, instance_id, port)
    finally:
        kill_instance_processes(standin, instance_id, "/srv/web.pid")

    # the three truths: current, the ledger and the server all say A (the switch to B and back is in the log)
    assert second.returncode == 1, second.output
    assert live(standin, instance_id) == "A" and what_serves == "A"
    assert ledger_entries(standin, service)[-1]["status"] == "rolled back"
    assert status.returncode == 0, status.output
    assert f"No drift: 1 instance(s) run {A}, the live release" in status.output


# --- status and the deploy: an operator's tmux started in the live release ------------------------------


@contextlib.contextmanager
def operators_tmux(standin: StandIn, instance_id: str, command: str = "", ready: str = "true") -> Iterator[str]:
    """An operator, over ssh: `cd /srv/web-api/current && tmux` (running ``command`` in its window when
    given, ``ready`` telling when it started), then detaches and leaves it. Yields the session's socket."""
    socket = f"/tmp/ops-{instance_id}.sock"
    window = f" {shlex.quote(command)}" if command else ""
    try:
        started = standin.run_on_instance(
            instance_id,
            f"cd {APP_DIR}/current && tmux -S {socket} new-session -d -s ops{window} && {ready} && echo started",
        )
        assert "started" in started.stdout, started.stdout + started.stderr
        yield socket
    finally:
        standin.run_on_instance(instance_id, f"tmux -S {socket} kill-server")


def test_status_does_not_name_an_operators_tmux_started_in_current_as_drift(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    # before the fix, the scan condemned tmux's server (no terminal, listening on its Unix socket, its
    # working directory in release A): status named it drift and the deploy of B failed with exit 90.
    # The deploy here checks the processes (the default); status reads them too
    instance_id, env = one_instance(standin, tmp_path, bucket, service)
    assert run_pipe(env("A", "1"), timeout=300).returncode == 0
    with operators_tmux(standin, instance_id) as socket:
        second = run_pipe(env("B", "2"), timeout=300)
        status = run_pipe(env("B", "3", ACTION="status"), timeout=300)
        held = standin.run_on_instance(instance_id, f"tmux -S {socket} ls")

    assert "ops" in held.stdout  # the operator's session was there throughout
    # the three truths: nothing of A serves (no app runs at all); current, the ledger and the steps say B
    assert second.returncode == 0, second.output
    assert live(standin, instance_id) == "B"
    assert ledger_entries(standin, service)[-1]["status"] == "succeeded"
    assert "tmux" not in status.output, status.output
    assert status.returncode == 0, status.output
    assert f"No drift: 1 instance(s) run {B}, the live release" in status.output


def test_a_server_run_by_hand_inside_an_operators_tmux_still_fails_the_deploy(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    # the tmux server is no server of a release, but what runs inside it is judged for itself: a server
    # an operator started by hand in release A's directory (it has the session's terminal) still serves A
    instance_id, env = one_instance(standin, tmp_path, bucket, service)
    assert run_pipe(env("A", "1"), timeout=300).returncode == 0
    with operators_tmux(standin, instance_id, "python3 -m http.server 18123", ready=wait_for_port(18123)):
        second = run_pipe(env("B", "2"), timeout=300)

    assert second.returncode == 1, second.output
    assert "Failed (exit 90)" in second.output
    assert "http.server" in second.output and f"release {A}" in second.output, second.output
    assert "tmux" not in second.output, second.output  # the session's own process is not named
    assert live(standin, instance_id) == "A"  # switched back


# --- held: status on a healthy pm2 fleet in cluster mode, its first release pruned -----------------------


@pytest.mark.slow
def test_status_finds_no_drift_on_a_healthy_pm2_cluster_whose_daemon_started_in_a_pruned_release(
    fleet_with: Callable[[str], RecipeFleet],
) -> None:
    assert "exec_mode: 'cluster'" in CLUSTER
    fleet = fleet_with(CLUSTER)  # A, first started by pm2 in releases/A: the daemon's directory
    assert fleet.ship("B", 2, rolling=False).returncode == 0
    assert fleet.ship("C", 3, rolling=False).returncode == 0
    # A is pruned (C's deploy kept it: had it failed, RELEASE: previous went to A): the daemon's cwd is deleted
    fourth = fleet.ship_with("D", 4, rolling=False, KEEP_RELEASES="2")
    assert fourth.returncode == 0, fourth.output

    status = run_pipe(fleet.env(5, rolling=False, ACTION="status"), timeout=300)

    for instance in fleet.ids:
        assert fleet.live_release_dir(instance) == f"{APP_DIR}/releases/{D}"
        daemon = fleet.standin.run_on_instance(
            instance, "for p in /proc/[0-9]*; do grep -qa 'God Daemon' $p/cmdline && readlink $p/cwd; done"
        )
        assert f"releases/{A} (deleted)" in daemon.stdout, daemon.stdout
    assert {document["release"] for document in fleet.served().values()} == {"D"}
    assert ledger_entries(fleet.standin, fleet.service)[-1]["status"] == "succeeded"
    assert status.returncode == 0, status.output
    assert f"No drift: 2 instance(s) run {D}, the live release" in status.output
