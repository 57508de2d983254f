"""The thirty-fifth outside attack on the verdict (issue #17), aimed at VERIFY_PROCESSES and containers: a
process of another mount namespace is judged by its own paths, compared with ``releases/*`` by device and
inode. Containers that mount the whole APP_DIR, a single file of a release, or a release since pruned.
Each test compares the three truths: what the instance runs (``current`` on disk, the app asked over
HTTP), what the ledger says is live, and what the step said (exit code, last line, ``ACTION: status``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e.test_attack30 import a_then_b, a_then_pruned, instance_with_entry, started_once
from e2e.test_ledger import entries as ledger_entries
from e2e.test_releases import APP_DIR, live
from standin import StandIn
from support import kill_instance_processes, run_pipe

# where a container sees its volume (`docker run -v SOURCE:/srv/container-app`)
VOLUME = "/srv/container-app"


def container(source: str, start: str, at: str = VOLUME) -> tuple[str, str]:
    """The start command of a container (a mount namespace of its own) whose volume is ``source`` bound
    at ``at``, running ``start`` there, and what prepares its mount point (a directory, or a file)."""
    prepare = f"mkdir -p {VOLUME}" + ("" if at == VOLUME else f" && touch {at}")
    return f"unshare -m sh -c 'mount --bind {source} {at} && {start}'", prepare


# --- a container that mounts the whole APP_DIR ------------------------------------------------------------


@pytest.mark.parametrize(
    ("port", "start"),
    [
        # `docker run -v /srv/web-api:/srv/container-app img node /srv/container-app/current/server.js`
        (18350, f"cd / && exec python3 {VOLUME}/current/server.py 18350"),
        # `-w /srv/container-app ... node current/server.js`
        (18351, f"cd {VOLUME} && exec python3 current/server.py 18351"),
    ],
    ids=["absolute", "from-the-volume"],
)
def test_a_container_of_the_whole_app_dir_started_through_its_current_and_left_running_fails_the_deploy(
    standin: StandIn, tmp_path: Path, bucket: str, service: str, port: int, start: str
) -> None:
    # `docker compose up -d` leaves the container alone: it loaded A's server through current before the
    # switch, as `node /srv/web-api/current/server.js` on the host would; its paths name no APP_DIR, and
    # current/server.py, followed now, is B's file
    command, prepare = container(APP_DIR, start)
    activate = started_once(command, port, prepare=prepare)
    instance_id, env = instance_with_entry(standin, tmp_path, bucket, service, "server.py", ACTIVATE_COMMANDS=activate)
    second, what_serves = a_then_b(standin, instance_id, env, port)

    assert what_serves == "A"
    assert second.returncode != 0, second.output
    assert "Failed (exit 90)" in second.output, second.output
    assert "it was started through /srv/web-api/current before the switch" in second.output, second.output
    assert live(standin, instance_id) == "A"
    assert ledger_entries(standin, service)[-1]["status"] == "rolled back"


def test_a_container_of_the_whole_app_dir_at_the_same_path_left_running_fails_the_deploy(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    # held: `-v /srv/web-api:/srv/web-api`: its paths are APP_DIR's, judged by the path rules
    port = 18352
    activate = started_once(f"unshare -m sh -c 'cd / && exec python3 {APP_DIR}/current/server.py {port}'", port)
    instance_id, env = instance_with_entry(standin, tmp_path, bucket, service, "server.py", ACTIVATE_COMMANDS=activate)
    second, what_serves = a_then_b(standin, instance_id, env, port)

    assert what_serves == "A"
    assert "Failed (exit 90)" in second.output, second.output
    assert live(standin, instance_id) == "A"


# --- a container recreated since the switch ----------------------------------------------------------------


def test_a_container_recreated_since_the_switch_with_the_new_release_passes(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    # held: `docker compose up -d --force-recreate` (or a restart policy's new start) binds the volume
    # again: current is B's directory now, the container runs B, holds none of the step's names
    port = 18353
    command, prepare = container(f"{APP_DIR}/current", f"cd {VOLUME} && exec python3 {VOLUME}/server.py {port}")
    activate = (
        "[ ! -e /srv/web.pid ] || { kill $(cat /srv/web.pid); while kill -0 $(cat /srv/web.pid) 2>/dev/null; do"
        " sleep 0.1; done; rm -f /srv/web.pid; }\n" + started_once(command, port, prepare=prepare)
    )
    instance_id, env = instance_with_entry(
        standin, tmp_path, bucket, service, "server.py", ACTIVATE_COMMANDS=activate, VARIABLES="FEATURE=one-value"
    )
    second, what_serves = a_then_b(standin, instance_id, env, port)

    assert second.returncode == 0, second.output
    assert "processes verified" in second.output, second.output
    assert what_serves == "B" and live(standin, instance_id) == "B"
    assert ledger_entries(standin, service)[-1]["status"] == "succeeded"


# --- a container whose volume is a single file of a release -------------------------------------------------


def test_a_container_whose_volume_is_the_server_file_of_current_left_running_fails_the_deploy(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    # `docker run -v /srv/web-api/current/server.py:/srv/container-app/server.py`: docker binds the file
    # current/server.py names as the container starts (A's); its only path is the container's own
    port = 18354
    command, prepare = container(
        f"{APP_DIR}/current/server.py", f"cd / && exec python3 {VOLUME}/server.py {port}", at=f"{VOLUME}/server.py"
    )
    activate = started_once(command, port, prepare=prepare)
    instance_id, env = instance_with_entry(standin, tmp_path, bucket, service, "server.py", ACTIVATE_COMMANDS=activate)
    second, what_serves = a_then_b(standin, instance_id, env, port)

    assert what_serves == "A"
    assert second.returncode != 0, second.output
    assert "Failed (exit 90)" in second.output, second.output
    assert live(standin, instance_id) == "A"
    assert ledger_entries(standin, service)[-1]["status"] == "rolled back"


# --- a container whose release was pruned -------------------------------------------------------------------


def test_a_container_whose_release_was_pruned_fails_the_deploy_and_status_names_it(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    # `-v /srv/web-api/current:/srv/container-app` started with A, left running by deploys that did not
    # verify the processes (VERIFY_PROCESSES: 'false' then), which pruned A (KEEP_RELEASES: 2): the
    # container runs A's code, whose directory is gone; the next deploy that verifies must not pass
    port = 18355
    command, prepare = container(f"{APP_DIR}/current", f"cd {VOLUME} && exec python3 {VOLUME}/server.py {port}")
    activate = started_once(command, port, prepare=prepare)
    instance_id, env = instance_with_entry(
        standin, tmp_path, bucket, service, "server.py", ACTIVATE_COMMANDS=activate, KEEP_RELEASES="2"
    )
    try:
        a_then_pruned(standin, instance_id, env)
        status = run_pipe(env("D", "4") | {"ACTION": "status"}, timeout=300)
        last = run_pipe(env("E", "5"), timeout=300)
        pid = standin.run_on_instance(instance_id, "cat /srv/web.pid").stdout.strip()
    finally:
        kill_instance_processes(standin, instance_id, "/srv/web.pid")

    # judged by its mountinfo: its volume's root is A's release directory, deleted. The switch back to D
    # finds it too (it runs A, not D), as it would a process on the host left in a pruned release: exit
    # 86 (the instance needs a look), the ledger says failed with D live
    assert last.returncode != 0, last.output
    assert "Failed (exit 86)" in last.output, last.output
    assert f"process {pid} (python3 {VOLUME}/server.py {port}) runs a copy of release 000001-" in last.output
    assert "that was deleted since it started, not the 000004-" in last.output, last.output
    assert status.returncode == 1, status.output
    assert f"process {pid}" in status.output and "Drift" in status.output, status.output
    assert live(standin, instance_id) == "D"
    assert ledger_entries(standin, service)[-1]["status"] == "failed"
