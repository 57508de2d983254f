"""The sixth outside attack on VERIFY_PROCESSES (issue #17, "Done when"), in the box harness of
test_unit_release_verify.py: the release scripts run for real against a temp APP_DIR and read /proc.

Each test asserts what SHOULD hold. Findings, each failed on the code the attack found it in, fixed:
- a server started from APP_DIR with a path relative to it (systemd's WorkingDirectory=/srv/app,
  ExecStart=/usr/bin/node current/server.js) and left running kept serving the replaced release, and the
  deploy said "none runs a replaced release" (exit 0): such a path now counts as one under current;
- an operator's command with a terminal naming a file of an older release by its absolute path (`less
  /srv/app/releases/<old>/config.js` over ssh) failed a healthy deploy: a terminal's commands are judged
  only as servers, for those paths too;
- a stale process holding the value a secret had before its rotation (in its environment, as the last
  deploy exported it, and on its command line) was named with that old value unmasked: the masking now
  takes the process's own values of the exported names too.
The fix of test_unit_attack5.py's worker (a process started through current before the switch that does
not listen) must not condemn a log shipper following a file through current: the last test.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from pipe.release.remote import ReleaseExit
from unit.release.test_unit_release_verify import PARAMETER, RESTARTED
from unit.release.verify_support import box_with_secret, foreign, install
from unit.release_support import ACTIVATE, A, Artifact, B, Box, is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="reading other processes' /proc entries needs root")

SECRET = "att6ck-Secret-5e2b-value"
OLD_SECRET = "att6ck-Rotated-91c0-old"


@pytest.fixture
def box() -> Iterator[Box]:
    yield from box_with_secret(SECRET)


def _listening(pid: int) -> None:
    """Wait until ``pid`` holds a socket (the server is up)."""
    check = f"until ls -l /proc/{pid}/fd 2>/dev/null | grep -q socket; do sleep 0.2; done"
    subprocess.run(["sh", "-c", check], check=True, timeout=60)


def test_a_server_started_through_current_by_a_relative_path_and_left_running_fails_the_deploy(box: Box) -> None:
    code, output = install(box, A, RESTARTED)
    assert code == 0, output
    # systemd: WorkingDirectory=/srv/web-api, ExecStart=/usr/bin/python3 ... current/app.txt: the kernel
    # resolves current now, so the server loaded release A's file
    server = "import http.server as h; h.HTTPServer(('127.0.0.1', 0), h.SimpleHTTPRequestHandler).serve_forever()"
    pid = foreign(box, ["python3", "-c", server, "current/app.txt"], str(box.app_dir))
    _listening(pid)

    code, output = install(box, B, RESTARTED)

    assert code == ReleaseExit.STALE_PROCESS, output
    assert f"process {pid} " in output
    assert box.current() == f"releases/{A}"


def test_an_operators_command_naming_an_older_releases_file_does_not_fail_a_healthy_deploy(box: Box) -> None:
    code, output = install(box, A, RESTARTED)
    assert code == 0, output
    # `ssh instance; tail -f /srv/web-api/releases/<A>/app.txt`: tail has the session's terminal
    spawn = f"import pty; pty.spawn(['tail', '-f', '{box.app_dir}/releases/{A}/app.txt'])"
    foreign(box, ["python3", "-c", spawn], "/")

    code, output = install(box, B, RESTARTED)

    # the service was restarted on B: the deploy is healthy, whoever reads a file of A
    assert code == 0, output
    assert box.current() == f"releases/{B}"


# A's activation starts a worker once (never restarted by later activations), its token as an argument
# (--token=..., java -Dtoken=...), its environment the one A's deploy exported
WORKER_ONCE = (
    ACTIVATE
    + 'if [ "$(cat app.txt)" = "$SSM_DEPLOY_RELEASE" ] && ! [ -f "$OUT/worker" ]; then\n'
    + '  sh -c \'while :; do sleep 1; done\' "--token=$DB_PASSWORD" "$PWD/bin/start.sh" </dev/null >/dev/null 2>&1 &\n'
    + '  echo $! >> "$OUT/pids"; echo $! > "$OUT/worker"\n'
    + "fi\n"
)


def test_a_stale_worker_holding_a_secrets_value_from_before_its_rotation_is_named_with_it_masked(box: Box) -> None:
    box.store_parameter(PARAMETER, OLD_SECRET)
    code, output = install(box, A, WORKER_ONCE)
    assert code == 0, output
    worker = int((box.out / "worker").read_text())
    box.store_parameter(PARAMETER, SECRET)  # rotated: B's deploy exports the new value

    code, output = install(box, B, WORKER_ONCE)

    assert code == ReleaseExit.STALE_PROCESS, output
    assert f"process {worker} " in output
    assert OLD_SECRET not in output
    assert OLD_SECRET[:12] not in output  # not in part either


@pytest.mark.parametrize("shared", [False, True])
def test_a_log_shippers_tail_through_current_started_before_the_switch_does_not_fail_a_healthy_deploy(
    box: Box, shared: bool
) -> None:
    """The other side of the worker of test_unit_attack5.py: a reader that follows a file through current
    (started before the switch, no terminal, not listening) holds the file open, and is no release's code."""
    paths = ("logs/",) if shared else ()

    def artifact(release: str) -> Artifact:
        return box.release_artifact(release, logs=None, **{"logs/app.log": f"{release} started"})

    code, output = install(box, A, RESTARTED, artifact(A), shared_paths=paths)
    assert code == 0, output
    log = f"{box.app_dir}/current/logs/app.log"
    pid = foreign(box, ["tail", "-f", log], "/")
    opened = f"until ls -l /proc/{pid}/fd 2>/dev/null | grep -q app.log; do sleep 0.2; done"
    subprocess.run(["sh", "-c", opened], check=True, timeout=60)

    code, output = install(box, B, RESTARTED, artifact(B), shared_paths=paths)

    assert code == 0, output
    assert box.current() == f"releases/{B}"
