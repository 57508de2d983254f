"""The seventh outside attack on VERIFY_PROCESSES (issue #17, "Done when"), in the box harness of
test_unit_release_verify.py: the release scripts run for real against a temp APP_DIR and read /proc.

Each test asserts what SHOULD hold. Findings (false positives: a healthy deploy failed with exit 90 and
switched back), each failed on the code the attack found it in:
- a server of the new release that set its title over its environment's memory (puma's cluster workers,
  gunicorn with setproctitle, nginx, unicorn, sidekiq, perl's $0) reads as an empty /proc/<pid>/environ
  and was condemned "without DB_PASSWORD, which this deploy exported", on every deploy;
- a server started through current before the switch and reloaded in place by ACTIVATE_COMMANDS
  (systemctl reload haproxy / nginx -s reload: same pid, same start time, new workers) serves the new
  release, and was condemned as running the release before;
- pm2 in cluster mode (the README's recipe with exec_mode: 'cluster'): a worker's environment is the
  daemon's, with the app's values applied from the pm2_env JSON at start (ProcessContainer.js), so after
  a rotation it serves the new secret while /proc/<pid>/environ shows the daemon's old value: condemned
  "with an old value of DB_PASSWORD".
Fixed: a server started through current before the switch with a child running its executable started
after the switch (the workers a reload forks) counts as reloaded, not as running the release before;
the values are compared in awk against the environment a process runs with (a cluster worker's
pm2_env values over the daemon's), and a process whose environment holds no entry is not compared (said
so in the verified line). A cluster worker whose env block does not list the secret still fails.
Held: a node server started with --require through current, restarted by every activation, after a
rotation (the last test).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from pipe.release.remote import ReleaseExit
from unit.release.test_unit_release_verify import PARAMETER, _service_pids
from unit.release.verify_support import box_with_secret, foreign, free_port, install
from unit.release_support import ACTIVATE, A, Artifact, B, Box, is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="reading other processes' /proc entries needs root")

SECRET = "att7ck-Secret-0c4d-value"


@pytest.fixture
def box() -> Iterator[Box]:
    yield from box_with_secret(SECRET)


# A server restarted from current by every activation, started with this deploy's environment, that
# then sets its process title the way puma's cluster workers, gunicorn (with setproctitle), nginx,
# unicorn, sidekiq or perl's `$0 = ...` do: over the memory of its arguments AND its environment, so
# /proc/<pid>/environ reads as NUL bytes although the process holds every value it was given
TITLED_SERVER = (
    ACTIVATE
    + 'if [ -f "$OUT/pids" ]; then kill "$(tail -n 1 "$OUT/pids")" 2>/dev/null; fi\n'
    + 'sh -c \'echo $$ >> "$OUT/pids"; exec perl -MIO::Socket::INET -e "'
    + "my \\$s = IO::Socket::INET->new(Listen => 5, LocalAddr => q(127.0.0.1:0)) or die;"
    + " \\$0 = q(puma: cluster worker 0: web-api); sleep 600\"' </dev/null >/dev/null 2>&1 &\n"
)


def test_a_server_whose_title_overwrote_its_environment_does_not_fail_a_healthy_deploy(box: Box) -> None:
    code, output = install(box, A, TITLED_SERVER)
    assert code == 0, output

    code, output = install(box, B, TITLED_SERVER)

    # B's server was started by B's activation with B's values: the deploy is healthy
    assert code == 0, output
    assert box.current() == f"releases/{B}"
    server = _service_pids(box)[-1]
    # and the message does not claim it holds values that could not be read
    claim = rf"process\(es\) [0-9 ]*\b{server}\b[0-9 ]* run release {B} with this deploy's values"
    assert not re.search(claim, output), output


def _haproxy_config(release: str, port: int) -> str:
    return (
        "global\n  maxconn 20\n"
        "defaults\n  mode http\n  timeout connect 2s\n  timeout client 5s\n  timeout server 5s\n"
        f"frontend web\n  bind 127.0.0.1:{port}\n"
        f'  http-request return status 200 content-type text/plain string "{release}"\n'
    )


# ACTIVATE_COMMANDS reloads the proxy in place (systemctl reload haproxy, nginx -s reload, a gunicorn
# HUP): the master keeps its pid and start time, re-reads its configuration through current, and
# serves the new release; the activation waits until it does
RELOAD = (
    ACTIVATE
    + 'if [ -f "$OUT/master" ]; then\n'
    + '  kill -USR2 "$(cat "$OUT/master")"\n'
    + '  until [ "$(curl -fsS "http://127.0.0.1:$(cat "$OUT/port")/")" = "$SSM_DEPLOY_RELEASE" ]; do sleep 0.2; done\n'
    + "fi\n"
)


@pytest.mark.skipif(not shutil.which("haproxy") or not shutil.which("curl"), reason="needs haproxy and curl")
@pytest.mark.parametrize("reloaded", [True, False])
def test_a_proxy_reloaded_in_place_through_current_does_not_fail_a_healthy_deploy(box: Box, reloaded: bool) -> None:
    """And one that is not reloaded (its workers too were started before the switch) still fails."""
    port = free_port()
    (box.out / "port").write_text(str(port))

    def artifact(release: str) -> Artifact:
        return box.release_artifact(release, **{"haproxy.cfg": _haproxy_config(release, port)})

    code, output = install(box, A, RELOAD, artifact(A))
    assert code == 0, output
    # systemd's haproxy.service: ExecStart=/usr/sbin/haproxy -Ws -f /srv/web-api/current/haproxy.cfg
    master = foreign(box, ["haproxy", "-W", "-db", "-f", f"{box.app_dir}/current/haproxy.cfg"], "/")
    (box.out / "master").write_text(str(master))
    serving = f'until [ "$(curl -fsS http://127.0.0.1:{port}/)" = {A} ]; do sleep 0.2; done'
    subprocess.run(["sh", "-c", serving], check=True, timeout=60)

    code, output = install(box, B, RELOAD if reloaded else ACTIVATE, artifact(B))

    if not reloaded:
        assert code == ReleaseExit.STALE_PROCESS, output
        assert f"process {master} " in output
        return
    assert code == 0, output
    served = subprocess.run(["curl", "-fsS", f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=30)
    assert served.stdout == B  # the fleet serves B: the proxy re-read B's configuration
    assert box.current() == f"releases/{B}"


PM2_BIN = "/usr/local/lib/ssm-deploy-standin/bin"  # the stand-in's real pm2 and node 20


def kill_pm2(box: Box) -> None:
    """Stop the pm2 daemon a test's activations started (PM2_HOME in the box), with its apps."""
    env = {"PATH": f"{PM2_BIN}:/usr/bin:/bin", "PM2_HOME": str(box.out / "pm2")}
    subprocess.run(["pm2", "kill"], env=env, capture_output=True, timeout=60, check=False)


# answers its release, and on /secret whether it holds the value the test expects (never the value)
SERVER_JS = """\
const http = require('http');
const release = require('fs').readFileSync(__dirname + '/app.txt', 'utf8');
const holds = () => String(process.env.DB_PASSWORD === process.env.WANTED);
http.createServer((req, res) => res.end(req.url === '/secret' ? holds() : release))
  .listen(Number(process.env.PORT), '127.0.0.1');
"""


def _ecosystem(app_dir: str, port: int, listed: bool = True) -> str:
    secret = "DB_PASSWORD: process.env.DB_PASSWORD, " if listed else ""
    return (
        "module.exports = { apps: [{ name: 'web-api', script: 'server.js', exec_mode: 'cluster', instances: 2,\n"
        f"  cwd: '{app_dir}/current',\n"
        f"  env_prod: {{ PORT: '{port}', {secret}WANTED: process.env.WANTED }} }}] }};\n"
    )


# the README's recipe, in cluster mode: `pm2 startOrReload` reloads the workers one by one
PM2_CLUSTER = (
    ACTIVATE
    + f'export PATH="{PM2_BIN}:$PATH" PM2_HOME="$OUT/pm2" WANTED="$DB_PASSWORD"\n'
    + "pm2 startOrReload ecosystem.config.js --env prod >/dev/null\n"
    + 'until [ "$(curl -fsS "http://127.0.0.1:$(cat "$OUT/port")/")" = "$SSM_DEPLOY_RELEASE" ]; do sleep 0.2; done\n'
)


@pytest.mark.skipif(not shutil.which("pm2", path=PM2_BIN) or not shutil.which("curl"), reason="needs pm2 and curl")
def test_pm2_in_cluster_mode_reloaded_with_a_rotated_secret_passes(box: Box) -> None:
    port = free_port()
    (box.out / "port").write_text(str(port))

    def artifact(release: str) -> Artifact:
        files = {"server.js": SERVER_JS, "ecosystem.config.js": _ecosystem(str(box.app_dir), port)}
        return box.release_artifact(release, **files)

    try:
        code, output = install(box, A, PM2_CLUSTER, artifact(A))
        assert code == 0, output
        box.store_parameter(PARAMETER, SECRET + '-rot"at\\ed')  # escaped in pm2_env's JSON: \" and \\

        code, output = install(box, B, PM2_CLUSTER, artifact(B))

        # the workers serve B and hold the rotated secret: the deploy is healthy
        url = f"http://127.0.0.1:{port}/"
        served = [
            subprocess.run(["curl", "-fsS", url + path], capture_output=True, text=True, timeout=30).stdout
            for path in ("", "secret")
        ]
        assert code == 0, output
        assert served == [B, "true"]
        assert box.current() == f"releases/{B}"
    finally:
        kill_pm2(box)


# held: `node --require ./tracing.js current/...` restarted by every activation, a rotated secret
NODE_REQUIRE = (
    ACTIVATE
    + 'if [ -f "$OUT/pids" ]; then kill "$(tail -n 1 "$OUT/pids")" 2>/dev/null; fi\n'
    + 'PORT=$(cat "$OUT/port"); export PORT\n'
    + f'sh -c \'echo $$ >> "$OUT/pids"; exec "$0" "$@"\' {PM2_BIN}/node --require ./tracing.js '
    + '"$PWD/server.js" </dev/null >/dev/null 2>&1 &\n'
    + 'until curl -fsS "http://127.0.0.1:$PORT/" >/dev/null 2>&1; do sleep 0.2; done\n'
)


@pytest.mark.skipif(not shutil.which("node", path=PM2_BIN) or not shutil.which("curl"), reason="needs node and curl")
def test_a_node_server_with_a_required_module_restarted_after_a_rotation_passes(box: Box) -> None:
    (box.out / "port").write_text(str(free_port()))

    def deploy(release: str) -> tuple[int, str]:
        files = {"server.js": SERVER_JS, "tracing.js": "globalThis.traced = true;\n"}
        return install(box, release, NODE_REQUIRE, box.release_artifact(release, **files))

    code, output = deploy(A)
    assert code == 0, output
    box.store_parameter(PARAMETER, SECRET + "-rotated")

    code, output = deploy(B)

    assert code == 0, output
    assert box.current() == f"releases/{B}"


@pytest.mark.skipif(not shutil.which("pm2", path=PM2_BIN) or not shutil.which("curl"), reason="needs pm2 and curl")
def test_pm2_in_cluster_mode_without_the_secret_in_its_env_block_still_fails_after_a_rotation(box: Box) -> None:
    """The other side of the cluster fix: pm2 keeps the first start's value of a secret its env block
    does not list (the README's pm2 trap), in the pm2_env JSON too: still condemned."""
    port = free_port()
    (box.out / "port").write_text(str(port))

    def artifact(release: str) -> Artifact:
        files = {"server.js": SERVER_JS, "ecosystem.config.js": _ecosystem(str(box.app_dir), port, listed=False)}
        return box.release_artifact(release, **files)

    try:
        code, output = install(box, A, PM2_CLUSTER, artifact(A))
        assert code == 0, output
        box.store_parameter(PARAMETER, SECRET + "-rotated")

        code, output = install(box, B, PM2_CLUSTER, artifact(B))

        assert code == ReleaseExit.STALE_PROCESS, output
        assert "with an old value of DB_PASSWORD" in output
        assert box.current() == f"releases/{A}"
    finally:
        kill_pm2(box)
