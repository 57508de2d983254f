"""The third outside attack on the verdict and the audit trail (issue #17, "Done when"), end to end
against the stand-in. Each test asserts what should hold; the five defects it found are fixed (they
failed before: a server started through ``current``, a worker left by a rollback, pruning the release a
rollback needs, part of a secret in a message, a deleted release directory). Instances are real
processes; ``current`` is read on disk, the app asked over HTTP, the processes in /proc. The last test
is an attack that held (a symlink leaving the release through a nested symlink's ``..``)."""

from __future__ import annotations

import os
import tarfile
import uuid
from pathlib import Path

from e2e.release_support import A, B, C, build_server
from e2e.test_attack_found import served
from e2e.test_attack_held import ledger_fleet, stop_at
from e2e.test_ledger import entries as ledger_entries
from e2e.test_releases import APP_DIR, live, release_env, releases
from standin import StandIn
from support import instance_process, kill_instance_processes, run_pipe
from unit.release_support import tar_member, write_tgz

# A background worker (a queue consumer): no socket, no output, runs until killed.
WORKER = "import time\nwhile True:\n    time.sleep(1)\n"


def wait_for_port(port: int) -> str:
    return (
        f"for i in $(seq 100); do python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}))' "
        "2>/dev/null && break; sleep 0.1; done"
    )


# --- VERIFY_PROCESSES: a server started through `current` from another directory ------------------------


def test_a_server_started_through_current_from_another_directory_and_left_running_fails_the_deploy(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    (instance_id,) = standin.launch(1)
    port = 18110
    # `systemctl start web-api` with ExecStart=/usr/bin/python3 /srv/web-api/current/server.py and no
    # WorkingDirectory=: starts the service when it does not run, does nothing when it does
    activate = (
        'echo "activated $(cat version.txt)"\n'
        "if [ ! -e /srv/web.pid ]; then\n"
        f"  (cd / && exec python3 {APP_DIR}/current/server.py {port}) </dev/null >/dev/null 2>&1 &\n"
        "  echo $! > /srv/web.pid\n"
        f"  {wait_for_port(port)}\n"
        "fi"
    )

    def env(version: str, number: str) -> dict[str, str]:
        return release_env(
            standin,
            [instance_id],
            tmp_path,
            bucket,
            service,
            ARTIFACT=build_server(tmp_path, version),
            BITBUCKET_BUILD_NUMBER=number,
            ACTIVATE_COMMANDS=activate,
        )

    try:
        first = run_pipe(env("A", "1"), timeout=300)
        assert first.returncode == 0, first.output
        assert served(standin, instance_id, port) == "A"
        second = run_pipe(env("B", "2"), timeout=300)
        what_serves = served(standin, instance_id, port)
    finally:
        kill_instance_processes(standin, instance_id, "/srv/web.pid")

    assert what_serves == "A"  # the process started for A still runs A's code
    # the verdict may not say Deployed, nor the ledger B live, while the app serves the replaced release
    assert second.returncode == 1, second.output
    assert ledger_entries(standin, service)[-1]["status"] != "succeeded"


# --- a rollback leaves a process of the failed release running -----------------------------------------


def test_a_rollback_that_leaves_a_process_of_the_failed_release_running_does_not_record_it_rolled_back(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    (instance_id,) = standin.launch(1)
    # ACTIVATE_COMMANDS starts what the release has: B adds a worker, A has none; nothing stops an app a
    # release does not list (as `pm2 startOrReload ecosystem.config.js` does not)
    activate = (
        'echo "activated $(cat version.txt)"\n'
        "if [ -f worker.py ] && [ ! -e /srv/worker.pid ]; then\n"
        "  python3 worker.py </dev/null >/dev/null 2>&1 &\n"
        "  echo $! > /srv/worker.pid\n"
        "fi"
    )

    def env(artifact: str, number: str, **extra: str) -> dict[str, str]:
        return release_env(
            standin,
            [instance_id],
            tmp_path,
            bucket,
            service,
            ARTIFACT=artifact,
            BITBUCKET_BUILD_NUMBER=number,
            ACTIVATE_COMMANDS=activate,
            **extra,
        )

    try:
        first = run_pipe(env(build_server(tmp_path, "A"), "1"), timeout=300)
        assert first.returncode == 0, first.output
        failed = run_pipe(
            env(build_server(tmp_path, "B", **{"worker.py": WORKER}), "2", HEALTHCHECK_COMMANDS="exit 1"),
            timeout=300,
        )
        worker = instance_process(standin, instance_id, "/srv/worker.pid")
        cwd = os.readlink(f"/proc/{worker}/cwd") if worker else ""
        on_instance = standin.instance_path(instance_id, "/srv/worker.pid").read_text().strip()  # its pid there
    finally:
        kill_instance_processes(standin, instance_id, "/srv/worker.pid")

    assert failed.returncode == 1, failed.output
    assert live(standin, instance_id) == "A"
    assert worker is not None and cwd.endswith(f"/releases/{B}"), cwd  # B's worker runs on
    entry = ledger_entries(standin, service)[-1]
    # what should hold: a rollback that leaves B's code running is not recorded as a clean rollback,
    # and the log names the process
    assert entry["status"] != "rolled back", entry
    assert f"process {on_instance} (" in failed.output, failed.output


# --- KEEP_RELEASES prunes the release the rollback needs --------------------------------------------------


def test_after_a_stopped_deploy_keep_releases_never_prunes_the_release_a_rollback_goes_back_to(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    (instance_id,) = standin.launch(1)

    def env(version: str, number: str, **extra: str) -> dict[str, str]:
        return release_env(
            standin,
            [instance_id],
            tmp_path,
            bucket,
            service,
            ARTIFACT=build_server(tmp_path, version),
            BITBUCKET_BUILD_NUMBER=number,
            KEEP_RELEASES="2",
            **extra,
        )

    first = run_pipe(env("A", "1"), timeout=300)
    assert first.returncode == 0, first.output
    # B is stopped during its health check: the instance stays on B, the ledger keeps A live
    code, output = stop_at(
        env("B", "2", HEALTHCHECK_COMMANDS="echo checking; sleep 600", HEALTHCHECK_RETRIES="1"), "| checking"
    )
    assert code == 1, output
    assert live(standin, instance_id) == "B"
    stopped = ledger_entries(standin, service)[-1]
    assert (stopped["status"], ledger_fleet(stopped)) == ("stopped", {instance_id: B})

    third = run_pipe(env("C", "3", HEALTHCHECK_COMMANDS="exit 1", HEALTHCHECK_RETRIES="1"), timeout=300)

    assert third.returncode == 1, third.output
    assert f"live before: {A}" in third.output, third.output
    # what should hold: the failed release does not stay live; the instance is back on the live release
    assert live(standin, instance_id) == "A", (third.output, releases(standin, instance_id))
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == (C, "rolled back"), entry


# --- a secret in a stale process's command line, cut by the process check's message --------------------


def test_the_process_check_never_prints_part_of_a_secret_from_a_command_line(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    (instance_id,) = standin.launch(1)
    secret = "s3cr3t-" + uuid.uuid4().hex + uuid.uuid4().hex[:8]
    parameter = f"/deploy/{service}/api_token"
    standin.put_secret(parameter, secret, standin.create_key("attack3 token"))
    port = 18120
    # a server given the token as an argument (java -Dapi.token=..., --token=...), started when not
    # running; the padding puts the token across the 120th character of its command line
    head = f"python3 server.py {port} --name="
    padding = "x" * (100 - len(head) - len(" --token="))
    activate = (
        'echo "activated $(cat version.txt)"\n'
        "if [ ! -e /srv/web.pid ]; then\n"
        f'  python3 server.py {port} --name={padding} --token="$API_TOKEN" </dev/null >/dev/null 2>&1 &\n'
        "  echo $! > /srv/web.pid\n"
        f"  {wait_for_port(port)}\n"
        "fi"
    )

    # server.py ignores the arguments after the port
    def env(version: str, number: str) -> dict[str, str]:
        return release_env(
            standin,
            [instance_id],
            tmp_path,
            bucket,
            service,
            ARTIFACT=build_server(tmp_path, version),
            BITBUCKET_BUILD_NUMBER=number,
            ACTIVATE_COMMANDS=activate,
            SECRETS=f"API_TOKEN={parameter}",
        )

    try:
        first = run_pipe(env("A", "1"), timeout=300)
        assert first.returncode == 0, first.output
        second = run_pipe(env("B", "2"), timeout=300)
    finally:
        kill_instance_processes(standin, instance_id, "/srv/web.pid")

    assert second.returncode == 1, second.output
    assert f"runs release {A}, not {B}" in second.output, second.output  # the check did name the process
    assert "--token=" in second.output
    # what should hold: no piece of the secret in the output
    assert secret[:12] not in second.output, second.output


# --- a process whose release directory was removed (re-installed under the same id) ----------------------


def test_a_process_left_in_a_release_directory_that_was_installed_again_fails_the_deploy(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    (instance_id,) = standin.launch(1)
    activate = (
        'echo "activated $(cat version.txt)"\n'
        "if [ -f worker.py ] && [ ! -e /srv/worker.pid ]; then\n"
        "  python3 worker.py </dev/null >/dev/null 2>&1 &\n"
        "  echo $! > /srv/worker.pid\n"
        "fi"
    )

    def env(artifact: str, number: str, **extra: str) -> dict[str, str]:
        return release_env(
            standin,
            [instance_id],
            tmp_path,
            bucket,
            service,
            ARTIFACT=artifact,
            BITBUCKET_BUILD_NUMBER=number,
            ACTIVATE_COMMANDS=activate,
            **extra,
        )

    try:
        assert run_pipe(env(build_server(tmp_path, "A"), "1"), timeout=300).returncode == 0
        failed = run_pipe(
            env(build_server(tmp_path, "B", **{"worker.py": WORKER}), "2", HEALTHCHECK_COMMANDS="exit 1"), timeout=300
        )
        assert failed.returncode == 1, failed.output
        first_worker = instance_process(standin, instance_id, "/srv/worker.pid")
        assert first_worker is not None
        # the step re-run: the same build number, the artifact rebuilt (other bytes, a fix in it)
        rebuilt = build_server(tmp_path, "B", **{"worker.py": WORKER + "# fixed\n"})
        again = run_pipe(env(rebuilt, "2"), timeout=300)
        still = instance_process(standin, instance_id, "/srv/worker.pid")
        cwd = os.readlink(f"/proc/{still}/cwd") if still else ""
    finally:
        kill_instance_processes(standin, instance_id, "/srv/worker.pid")

    assert "came from another artifact; installing it again" in again.output, again.output
    assert cwd.endswith(f"/releases/{B} (deleted)"), cwd  # the first build's worker runs on, its files gone
    # what should hold: a process running from a removed release directory is a replaced release
    assert again.returncode == 1, again.output


# --- held: a symlink that leaves the release through another symlink's `..` ------------------------------


def test_a_symlink_leaving_the_release_through_a_nested_symlinks_dotdot_is_refused_before_upload(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """``a/d -> ../b`` stays inside; ``e -> a/d/../..`` reads as the release's root but the kernel
    resolves it to b/../.., the release's parent (APP_DIR/releases), and a tree below it (``f``)."""
    (instance_id,) = standin.launch(1)
    write_tgz(
        tmp_path / "web-api.tgz",
        [
            tar_member("version.txt", data="A\n"),
            tar_member("a", tarfile.DIRTYPE, 0o755),
            tar_member("b", tarfile.DIRTYPE, 0o755),
            tar_member("a/d", tarfile.SYMTYPE, 0o777, "../b"),
            tar_member("e", tarfile.SYMTYPE, 0o777, "a/d/../.."),
        ],
    )
    before = standin.calls_snapshot(include_instances=False)
    run = run_pipe(release_env(standin, [instance_id], tmp_path, bucket, service, ARTIFACT="web-api.tgz"))
    calls = standin.calls_snapshot(include_instances=False) - before

    assert run.returncode == 1, run.output
    assert "e is a symlink to a/d/../.., outside the release" in run.output, run.output
    assert "a/d is a symlink" not in run.output  # the link that stays inside is not refused
    assert calls["s3:PutObject"] == 0 and calls["ssm:SendCommand"] == 0
    assert not standin.instance_path(instance_id, APP_DIR).exists()
