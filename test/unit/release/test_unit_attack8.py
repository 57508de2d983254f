"""The eighth outside attack on VERIFY_PROCESSES (issue #17, "Done when"), in the box harness of
test_unit_release_verify.py: the release scripts run for real against a temp APP_DIR and read /proc.

Each test asserts what SHOULD hold. Findings:
- a queue worker run as a module from current (WorkingDirectory=/srv/web-api/current,
  ExecStart=python3 -m worker; `celery -A tasks worker`, `rq worker`) and left running keeps running
  the replaced release, and the deploy says "none runs a replaced release" (exit 0): no word of its
  command line is a file, it does not listen, so its directory alone condemned nothing. Fixed: a word
  naming a Python module in its directory (worker.py, tasks.py, app/worker.py) counts as a path;
- a prefork server started through current and never reloaded passes as "reloaded" as soon as it
  forks a worker after the switch (php-fpm's pm = ondemand, Apache prefork under load, gunicorn/uwsgi
  recycling a worker on --max-requests): the fork runs the master's old code (exit 0, stale). Not
  fixed: /proc does not tell such a fork from a reload's (same executable, a child started after the
  switch); the README states the limit and the remedies (restart such a server, or a health check
  asking for $SSM_DEPLOY_RELEASE);
- pm2's cluster recipe with increment_var: 'PORT' (pm2's documentation) fails every deploy, the first
  included: worker 1 holds PORT + 1 and is condemned "with an old value of PORT" (exit 90). Fixed:
  the name a pm2 process's increment_var names is not compared (cluster and fork mode).
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest

from pipe.model import SecretRef
from pipe.release.remote import ReleaseExit, install_body
from unit.release.test_unit_attack7 import PM2_BIN, SERVER_JS, kill_pm2
from unit.release.test_unit_release_verify import GRACE, PARAMETER, RESTARTED
from unit.release.verify_support import box_with_secret, foreign, free_port, install
from unit.release_support import ACTIVATE, A, Artifact, B, Box, is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="reading other processes' /proc entries needs root")

SECRET = "att8ck-Secret-7d3e-value"


@pytest.fixture
def box() -> Iterator[Box]:
    yield from box_with_secret(SECRET)


# a queue worker run as a module (systemd's WorkingDirectory=/srv/web-api/current with
# ExecStart=/usr/bin/python3 -m worker; `celery -A tasks worker`, `rq worker`, `python -m app.worker`):
# its working directory is the release current pointed to when it started, and no word of its command
# line is a file (worker.py is; `worker` is not)
WORKER_PY = "import time\nwhile True:\n    time.sleep(1)\n"


def test_a_worker_run_as_a_module_in_current_and_left_running_fails_the_deploy(box: Box) -> None:
    def artifact(release: str) -> Artifact:
        return box.release_artifact(release, **{"worker.py": WORKER_PY})

    code, output = install(box, A, RESTARTED, artifact(A))
    assert code == 0, output
    worker = foreign(box, ["python3", "-m", "worker"], f"{box.app_dir}/current")  # the kernel resolves it: A

    code, output = install(box, B, RESTARTED, artifact(B))

    # the worker still runs A's code: the deploy must not say "none runs a replaced release"
    assert code == ReleaseExit.STALE_PROCESS, output
    assert f"process {worker} " in output
    assert box.current() == f"releases/{A}"


# a prefork server started through current from / (systemd's ExecStart=/usr/bin/python3
# /srv/web-api/current/server.py, no WorkingDirectory=), never reloaded, that forks a worker on demand
# and keeps it while idle, as php-fpm's pm = ondemand, Apache's prefork under load and gunicorn/uwsgi
# recycling a worker (--max-requests) do. A worker forked after the switch (here for the activation's
# warm-up request) is a fork of the master: the code the master loaded before the switch, never a reload
PREFORK_PY = """\
import os, socket, sys, time
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen(5)
while True:
    connection, _ = listener.accept()
    master = os.getpid()
    if os.fork() == 0:
        connection.sendall(b"A")  # the code this master loaded
        connection.close()
        while os.getppid() == master:  # idle, kept for the next requests while its master runs
            time.sleep(0.5)
        os._exit(0)
    connection.close()
"""
# ACTIVATE_COMMANDS restart the app's worker service and warm the server up with one request
WARM_UP = (
    RESTARTED
    + "python3 -c 'import socket, sys; socket.create_connection((\"127.0.0.1\", int(sys.argv[1]))).recv(1)' "
    + '"$(cat "$OUT/port")"\n'
)


@pytest.mark.xfail(
    strict=True,
    reason="any child of its executable started after the switch counts as a reload: a worker the server forked "
    "on demand clears a server never reloaded",
)
def test_a_prefork_server_through_current_that_forks_a_worker_on_demand_is_not_taken_for_reloaded(
    box: Box,
) -> None:
    port = free_port()
    (box.out / "port").write_text(str(port))

    def artifact(release: str) -> Artifact:
        return box.release_artifact(release, **{"server.py": PREFORK_PY})

    code, output = install(box, A, RESTARTED, artifact(A))
    assert code == 0, output
    master = foreign(box, ["python3", f"{box.app_dir}/current/server.py", str(port)], "/")
    subprocess.run(["sh", "-c", f"until ls -l /proc/{master}/fd | grep -q socket; do sleep 0.2; done"], timeout=60)

    code, output = install(box, B, WARM_UP, artifact(B))

    # nothing reloaded it: it serves A's code, in its master and in every worker it forks
    assert code == ReleaseExit.STALE_PROCESS, output
    assert f"process {master} " in output
    assert box.current() == f"releases/{A}"


# the pm2 documentation's cluster recipe: one port per worker, PORT given by the deploy (VARIABLES)
# and incremented by pm2 for each further worker (increment_var), so worker 1 holds PORT + 1
def _incremented_ecosystem(app_dir: str, mode: str) -> str:
    return (
        f"module.exports = {{ apps: [{{ name: 'web-api', script: 'server.js', exec_mode: '{mode}', instances: 2,\n"
        f"  cwd: '{app_dir}/current', increment_var: 'PORT',\n"
        "  env_prod: { PORT: process.env.PORT, DB_PASSWORD: process.env.DB_PASSWORD,\n"
        "    WANTED: process.env.WANTED } }] };\n"
    )


def _free_port_pair() -> int:
    """A port that is free with the one after it, below the kernel's ephemeral range (32768 and up on
    Linux by default), where no outgoing connection of a parallel test takes either meanwhile."""
    while True:
        port = random.randrange(20000, 32000)
        with socket.socket() as first, socket.socket() as second:
            try:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


PM2_INCREMENTED = (
    ACTIVATE
    + f'export PATH="{PM2_BIN}:$PATH" PM2_HOME="$OUT/pm2" WANTED="$DB_PASSWORD"\n'
    + "pm2 startOrReload ecosystem.config.js --env prod >/dev/null\n"
    + 'for port in "$PORT" "$((PORT + 1))"; do\n'
    + "  tries=0\n"
    + '  until [ "$(curl -fsS "http://127.0.0.1:$port/")" = "$SSM_DEPLOY_RELEASE" ]; do\n'
    + '    tries=$((tries + 1)); [ "$tries" -lt 300 ] || { echo "nothing serves on $port" >&2; exit 1; }; sleep 0.2\n'
    + "  done\n"
    + "done\n"
)


@pytest.mark.skipif(not shutil.which("pm2", path=PM2_BIN) or not shutil.which("curl"), reason="needs pm2 and curl")
@pytest.mark.parametrize("mode", ["cluster", "fork"])
def test_pm2_instances_with_an_incremented_port_do_not_fail_a_healthy_deploy(box: Box, mode: str) -> None:
    """In fork mode the process's environment is pm2_env's top level, increment_var included."""
    port = _free_port_pair()
    files = {"server.js": SERVER_JS, "ecosystem.config.js": _incremented_ecosystem(str(box.app_dir), mode)}
    plan = box.plan(
        A,
        box.release_artifact(A, **files),
        activate_commands=PM2_INCREMENTED,
        verify_grace=GRACE,
        env_names=("DB_PASSWORD", "OUT", "PORT"),
    )
    try:
        run = box.run(
            install_body(plan), secrets=(SecretRef("DB_PASSWORD", PARAMETER),), variables=(("PORT", str(port)),)
        )

        # both workers serve A with this deploy's secret; worker 1's PORT is pm2's, not an old value
        output = run.stdout + run.stderr
        assert run.code == 0, output
        assert box.current() == f"releases/{A}"
    finally:
        kill_pm2(box)


# held: the same module worker restarted by every activation (systemctl restart) runs the new release
MODULE_WORKER = (
    ACTIVATE
    + 'if [ -f "$OUT/pids" ]; then kill "$(tail -n 1 "$OUT/pids")" 2>/dev/null; fi\n'
    + "sh -c 'echo $$ >> \"$OUT/pids\"; exec python3 -m worker' </dev/null >/dev/null 2>&1 &\n"
)


def test_a_worker_run_as_a_module_restarted_by_every_activation_passes(box: Box) -> None:
    def artifact(release: str) -> Artifact:
        return box.release_artifact(release, **{"worker.py": WORKER_PY})

    for release in (A, B):
        code, output = install(box, release, MODULE_WORKER, artifact(release))
        assert code == 0, output
    assert box.current() == f"releases/{B}"
