"""The fifth outside attack on VERIFY_PROCESSES, KEEP_RELEASES pruning and staging (issue #17, "Done
when"), in the box harness of test_unit_release_verify.py: the release scripts run for real against a
temp APP_DIR and read /proc.

Each test asserts what SHOULD hold; each failed on the code the attack found it in. Fixed:
- a release KEEP_RELEASES pruned condemned every process whose cwd was in it, pm2's God Daemon and an
  operator's terminal included: a deleted directory now condemns them no more than an existing one;
- the staging manifest left out a directory its owner cannot list (find's failure was ignored):
  such a release is now refused at staging (83) instead of staged with a partial manifest;
- the process check's masking was not longest first: a secret holding another was printed in part;
- after a reboot, .ssm-deploy/switched (seconds since boot) condemned a server restarted through
  current on a redeploy of the live release: the switch's time now counts only in the boot it was
  recorded in (its boot id).
- a worker started through current before the switch that does not listen was never condemned (the
  through-current rule needed a listening socket to stay clear of readers such as a log shipper's
  `tail -f current/logs/...`): fixed in the sixth attack, a reader is told by the file it holds open.
Held: the same redeploy without a reboot passes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipe.model import SecretRef
from pipe.release.remote import ReleaseExit, install_body, stage_body, verified_after
from unit.release.test_unit_release_verify import (
    GRACE,
    RESTARTED,
    SERVER_ONCE,
    _service_pids,
)
from unit.release.verify_support import box_with_secret, foreign, install
from unit.release_support import (
    ACTIVATE,
    COMMANDS,
    A,
    B,
    Box,
    C,
    D,
    ensure_app_user,
    is_root,
)

pytestmark = pytest.mark.skipif(not is_root(), reason="reading other processes' /proc entries needs root")

SECRET = "att5ck-Secret-3f1a-value"


@pytest.fixture
def box() -> Iterator[Box]:
    yield from box_with_secret(SECRET)


# pm2's daemon as test_unit_release_verify.py models it: started once (by the first `pm2 start` in
# current, so its cwd is the first release's physical directory), titled as pm2 titles it, and in
# cluster mode holding the app's listening socket
PM2_DAEMON = SERVER_ONCE.format(title="PM2 v5.4.3: God Daemon (/root/.pm2)")


def test_pm2s_daemon_whose_first_release_was_pruned_does_not_fail_later_deploys(box: Box) -> None:
    for release in (A, B, C):  # C's install prunes A (KEEP_RELEASES=2)
        code, output = install(box, release, PM2_DAEMON, keep_releases=2)
        assert code == 0, output
    assert A not in box.releases()
    [pid] = _service_pids(box)
    assert os.readlink(f"/proc/{pid}/cwd").endswith(f"/releases/{A} (deleted)")  # the daemon's cwd: A, gone

    code, output = install(box, D, PM2_DAEMON, keep_releases=2)

    assert code == 0, output


def test_an_operators_shell_in_a_pruned_release_does_not_fail_a_healthy_deploy(box: Box) -> None:
    code, output = install(box, A, RESTARTED)
    assert code == 0, output
    # `cd /srv/web-api/current` over ssh, then left open for the night: a shell with a terminal
    shell = f"cd {box.app_dir}/current && exec sleep 600"
    foreign(box, ["script", "-q", "-c", shell, "/dev/null"], "/")
    for release in (B, C):  # C's install prunes A (KEEP_RELEASES=2)
        code, output = install(box, release, RESTARTED, keep_releases=2)
        assert code == 0, output
    assert A not in box.releases()

    code, output = install(box, D, RESTARTED, keep_releases=2)

    assert code == 0, output


@pytest.mark.skipif(not is_root(), reason="RUN_AS needs root to create and become a second user")
def test_a_release_with_a_directory_its_owner_cannot_list_is_refused_at_staging(box: Box) -> None:
    user = ensure_app_user()
    code, output = install(box, A, ACTIVATE)  # no service: only the manifest is looked at
    assert code == 0, output
    files: dict[str, str | None] = {"app.txt": B, "private": None, "private/config.js": "module.exports = 'staged'"}
    commands = COMMANDS + "chmod 0311 private\n"  # the app reads private/config.js by name
    plan = box.plan(B, box.artifact(files), run_as=user.pw_name, commands=commands)

    # what should hold: no change can go unseen. A manifest that cannot list every entry is no
    # manifest: staging refuses the release (83, nothing switched) instead of recording a partial one
    staged = box.run(stage_body(plan))
    assert staged.code == ReleaseExit.UNPACK_FAILED, staged.stdout + staged.stderr
    assert "cannot record the checksums" in staged.stdout + staged.stderr
    assert box.current() == f"releases/{A}"


def test_a_worker_started_through_current_before_the_switch_and_left_running_fails_the_deploy(box: Box) -> None:
    code, output = install(box, A, RESTARTED)
    assert code == 0, output
    worker = f"{box.app_dir}/current/bin/start.sh"  # the kernel resolves current now: release A's file
    pid = foreign(box, ["sh", "-c", "while :; do sleep 1; done", worker], "/")

    code, output = install(box, B, RESTARTED)

    assert code == ReleaseExit.STALE_PROCESS, output
    assert f"process {pid} " in output
    assert box.current() == f"releases/{A}"


PASSWORD_PARAMETER, URL_PARAMETER = "/deploy/prod/db-password", "/deploy/prod/db-url"
PASSWORD = "Hunter-7x-pass"
URL_HOST = "db-4tt4ck5.internal"
URL = f"postgres://app:{PASSWORD}@{URL_HOST}/prod"  # a second secret that contains the first


def test_a_secret_containing_another_never_shows_in_part_in_the_process_checks_message(box: Box) -> None:
    box.store_parameter(PASSWORD_PARAMETER, PASSWORD)
    box.store_parameter(URL_PARAMETER, URL)
    secrets = (SecretRef("DB_PASSWORD", PASSWORD_PARAMETER), SecretRef("DB_URL", URL_PARAMETER))
    env_names = ("DB_PASSWORD", "DB_URL", "OUT")
    plan_a = box.plan(A, box.release_artifact(A), activate_commands=RESTARTED, env_names=env_names)
    assert box.run(install_body(plan_a), secrets=secrets).code == 0
    release_a = box.app_dir / "releases" / A
    # a worker of A left running, its database URL in its arguments
    pid = foreign(box, ["sh", "-c", "while :; do sleep 1; done", f"--db={URL}", f"{release_a}/bin/start.sh"], "/")
    plan_b = box.plan(B, box.release_artifact(B), activate_commands=RESTARTED, env_names=env_names, verify_grace=GRACE)

    run = box.run(install_body(plan_b), secrets=secrets)

    output = run.stdout + run.stderr
    assert run.code == ReleaseExit.STALE_PROCESS, output
    assert f"process {pid} " in output
    assert PASSWORD not in output
    assert URL_HOST not in output  # no part of DB_URL's value


# a server started through current from / (systemd's ExecStart=/usr/bin/python3 /srv/app/current/...
# with no WorkingDirectory=), restarted by every activation: it always runs what current points to
THROUGH_CURRENT_SERVER = (
    ACTIVATE
    + 'if [ -f "$OUT/pids" ]; then kill "$(tail -n 1 "$OUT/pids")" 2>/dev/null; fi\n'
    + 'server="$PWD/app.txt"; server=${server%/app.txt}; server=$(dirname "$server")/current/app.txt\n'
    + '(cd / && exec python3 -c \'import http.server as h; h.HTTPServer(("127.0.0.1", 0), '
    + 'h.SimpleHTTPRequestHandler).serve_forever()\' "$server" </dev/null >/dev/null 2>&1) &\n'
    + 'echo $! >> "$OUT/pids"\n'
)


# the health check: the server answers (it holds a listening socket)
LISTENING = "until ls -l /proc/{pid}/fd 2>/dev/null | grep -q socket; do sleep 0.2; done"


@pytest.mark.parametrize(
    "rebooted",
    [False, True],
)
def test_a_redeploy_of_the_live_release_passes_with_a_server_restarted_through_current_even_after_a_reboot(
    box: Box, rebooted: bool
) -> None:
    artifact_b = box.release_artifact(B)
    for release, artifact in ((A, box.release_artifact(A)), (B, artifact_b)):
        code, output = install(box, release, THROUGH_CURRENT_SERVER, artifact)
        assert code == 0, output
    assert "/srv/web-api/current/app.txt" in Path(f"/proc/{_service_pids(box)[-1]}/cmdline").read_text()
    # the instance rebooted since B went live: the switch's time (seconds since boot) is from before it
    switches = box.app_dir / ".ssm-deploy" / "switches"  # a line per switch: boot id, seconds since boot, from
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    if rebooted:  # the switches were in the boot before, ten days of uptime into it
        lines = [line.split(" ") for line in switches.read_text().splitlines()]
        assert lines and all(len(words) == 3 for words in lines)
        switches.write_text("".join(f"{uuid.uuid4()} {uptime + 864000:.2f} {words[2]}\n" for words in lines))

    # B again (say, to hand the service a rotated secret): activated again, its server restarted
    code, output = install(box, B, THROUGH_CURRENT_SERVER, artifact_b)
    assert code == 0, output
    plan = box.plan(B, artifact_b, activate_commands=THROUGH_CURRENT_SERVER, verify_grace=GRACE)
    health_check = LISTENING.format(pid=_service_pids(box)[-1])

    run = box.run(verified_after(health_check, plan))

    assert run.code == 0, run.stdout + run.stderr
