"""The users' app fixture (test/fixtures/web-api) on the pinned Node.js and pm2 of the instances.

Every process a test starts is stopped by the test; addresses are 127.0.0.1 only; waits poll with
generous deadlines and no test asserts how long anything took.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from app_fixture import APP_FILES, FIXTURE_DIR, pack_release
from support import ROOT, wait_until

from standin import tools

HOST = "127.0.0.1"
DEADLINE = 60  # seconds: generous for any wait; a healthy run needs a fraction
RELEASE_A = "000041-0a1b2c3"
RELEASE_B = "000042-4d5e6f7"


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    tools.require()


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: str

    def json(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.body)
        return decoded


def get(port: int, path: str) -> Answer:
    connection = http.client.HTTPConnection(HOST, port, timeout=DEADLINE)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return Answer(response.status, dict(response.getheaders()), response.read().decode())
    finally:
        connection.close()


def answers(port: int, path: str = "/health") -> Answer | None:
    """The app's answer, or None while nothing listens (starting, restarting)."""
    try:
        return get(port, path)
    except (ConnectionError, http.client.HTTPException, TimeoutError):
        return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def sha16(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def unpack(artifact: Path, release_dir: Path) -> Path:
    """Unpack as an instance does (``tar -xzf ... --no-same-owner``) into ``release_dir``."""
    release_dir.mkdir(parents=True)
    subprocess.run(
        ["tar", "-xzf", str(artifact), "-C", str(release_dir), "--no-same-owner"],
        check=True,
        capture_output=True,
        timeout=DEADLINE,
    )
    return release_dir


def release_dir(tmp_path: Path, release: str, *, broken: bool = False) -> Path:
    artifact = pack_release(tmp_path / "build", release, broken=broken)
    return unpack(artifact, tmp_path / "releases" / release)


class App:
    """``node server.js`` run with the pinned node; its output lines are kept as they come."""

    def __init__(self, cwd: Path, env: Mapping[str, str]) -> None:
        self.port = free_port()
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self.process = subprocess.Popen(
            [str(tools.NODE), "server.js"],
            cwd=cwd,
            env={"PATH": f"{tools.TOOLS_BIN}:/usr/bin:/bin", "PORT": str(self.port), **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_until(lambda: answers(self.port) is not None or self.process.poll() is not None, "the app to listen")
        assert self.process.poll() is None, f"the app exited: {self.output()}"

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._seen:
                self.lines.append(line.rstrip("\n"))
                self._seen.notify_all()

    def output(self) -> str:
        with self._seen:
            return "\n".join(self.lines)

    def wait_for_line(self, text: str) -> None:
        with self._seen:
            found = self._seen.wait_for(lambda: any(text in line for line in self.lines), timeout=DEADLINE)
        assert found, f"no line with {text!r} in the app's output:\n{self.output()}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=DEADLINE)
        self._reader.join(timeout=DEADLINE)


StartApp = Callable[..., App]


@pytest.fixture
def start_app() -> Iterator[StartApp]:
    started: list[App] = []

    def start(cwd: Path, **env: str) -> App:
        app = App(cwd, env)
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()


def test_the_app_answers_its_release_the_password_hash_and_the_address_it_was_reached_on(
    tmp_path: Path, start_app: StartApp
) -> None:
    folder = release_dir(tmp_path, RELEASE_A)
    app = start_app(folder, DB_PASSWORD="correct horse")

    root = get(app.port, "/")
    assert root.status == 200
    assert root.json() == {
        "release": RELEASE_A,
        "db_password_sha256": sha16("correct horse"),
        "pid": app.process.pid,
        "cwd": str(folder.resolve()),
    }
    assert root.headers["X-Release"] == RELEASE_A
    assert root.headers["X-Served-By"] == HOST
    version = get(app.port, "/version")
    assert (version.status, version.body, version.headers["X-Release"]) == (200, RELEASE_A, RELEASE_A)
    health = get(app.port, "/health")
    assert (health.status, health.body) == (200, "ok")
    assert get(app.port, "/nothing-here").status == 404


def test_a_release_packed_broken_fails_its_health_check_and_without_a_password_says_null(
    tmp_path: Path, start_app: StartApp
) -> None:
    app = start_app(release_dir(tmp_path, RELEASE_B, broken=True))

    assert get(app.port, "/health").status == 500
    root = get(app.port, "/")
    assert root.status == 200
    assert root.json()["release"] == RELEASE_B
    assert root.json()["db_password_sha256"] is None


def test_sigint_lets_an_in_flight_request_finish_closes_idle_connections_and_exits_0(
    tmp_path: Path, start_app: StartApp
) -> None:
    app = start_app(release_dir(tmp_path, RELEASE_A), SLOW_MS="2000", DB_PASSWORD="s")
    idle = socket.create_connection((HOST, app.port), timeout=DEADLINE)  # a keep-alive connection, idle
    idle.sendall(f"GET /health HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    assert idle.recv(65536).startswith(b"HTTP/1.1 200")
    in_flight: list[Answer] = []
    request = threading.Thread(target=lambda: in_flight.append(get(app.port, "/")))
    request.start()
    try:
        app.wait_for_line("holding GET /")
        app.process.send_signal(signal.SIGINT)
        app.wait_for_line("SIGINT, shutting down")
        with pytest.raises(ConnectionRefusedError):  # nothing new is accepted
            socket.create_connection((HOST, app.port), timeout=DEADLINE).close()
        assert idle.recv(65536) == b"", "the idle keep-alive connection is closed"
    finally:
        request.join(timeout=DEADLINE)
        idle.close()

    assert [(answer.status, answer.json()["release"]) for answer in in_flight] == [(200, RELEASE_A)]
    assert app.process.wait(timeout=DEADLINE) == 0
    app.wait_for_line("stopped")


def test_packing_is_the_readme_build_step_and_the_same_release_packs_to_the_same_bytes(tmp_path: Path) -> None:
    first = pack_release(tmp_path / "one", RELEASE_A)
    again = pack_release(tmp_path / "two", RELEASE_A)
    broken = pack_release(tmp_path / "one", RELEASE_A, broken=True)

    assert first.name == "web-api.tgz"
    assert first.read_bytes() == again.read_bytes()
    with tarfile.open(first) as archive:
        assert sorted(archive.getnames()) == sorted([*APP_FILES, "release.txt"])
        release_txt = archive.extractfile("release.txt")
        assert release_txt is not None and release_txt.read() == f"{RELEASE_A}\n".encode()
    with tarfile.open(broken) as archive:
        assert "broken" in archive.getnames()
    with pytest.raises(ValueError):
        pack_release(tmp_path, "../escape")


def test_npm_ci_installs_the_fixture_offline(tmp_path: Path) -> None:
    folder = release_dir(tmp_path, RELEASE_A)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": f"{tools.TOOLS_BIN}:/usr/bin:/bin",
        "HOME": str(home),
        "npm_config_registry": f"http://{HOST}:9/",  # nothing listens there: any download would fail
        "npm_config_update_notifier": "false",
    }
    done = subprocess.run(
        [str(tools.NPM), "ci", "--omit=dev"], cwd=folder, env=env, capture_output=True, text=True, timeout=DEADLINE
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_each_env_block_of_the_ecosystem_file_reads_the_secret_from_the_shell() -> None:
    shown = subprocess.run(
        [str(tools.NODE), "-e", "console.log(JSON.stringify(require('./ecosystem.config.js')))"],
        cwd=FIXTURE_DIR,
        env={"PATH": "/usr/bin:/bin", "DB_PASSWORD": "from-the-shell"},
        capture_output=True,
        text=True,
        check=True,
        timeout=DEADLINE,
    )
    [app] = json.loads(shown.stdout)["apps"]
    assert (app["name"], app["script"], app["cwd"]) == ("web-api", "server.js", "/srv/web-api/current")
    for environment in ("dev", "stg", "prod"):
        assert app[f"env_{environment}"]["DB_PASSWORD"] == "from-the-shell"


def test_the_install_script_and_tools_py_pin_the_same_versions() -> None:
    script = (ROOT / "scripts" / "ensure-standin-tools.sh").read_text(encoding="utf-8")
    assert re.search(rf"^NODE_VERSION={re.escape(tools.NODE_VERSION)}\b", script, re.MULTILINE)
    assert re.search(rf"^PM2_VERSION={re.escape(tools.PM2_VERSION)}\b", script, re.MULTILINE)
    assert tools.installed_versions().get("node") == tools.NODE_VERSION
    assert tools.installed_versions().get("pm2") == tools.PM2_VERSION
    requirements = (ROOT / "requirements-dev.txt").read_text(encoding="utf-8")
    [pin] = re.findall(r"^awscli==(\S+)", requirements, re.MULTILINE)
    assert tools.installed_versions().get("awscli") == pin
    lock = json.loads((FIXTURE_DIR / "package-lock.json").read_text(encoding="utf-8"))
    package = json.loads((FIXTURE_DIR / "package.json").read_text(encoding="utf-8"))
    assert lock["lockfileVersion"] == 3
    assert (lock["name"], lock["version"]) == (package["name"], package["version"]) == ("web-api", lock["version"])
    assert "dependencies" not in package


# ------------------------------------------------------------------ the real pm2


class Pm2:
    """The pinned pm2 with a daemon of its own (PM2_HOME under the test's tmp_path)."""

    def __init__(self, tmp_path: Path) -> None:
        home = tmp_path / "home"
        home.mkdir()
        self.pm2_home = tmp_path / "pm2"
        self.port = free_port()
        self.env = {
            "PATH": f"{tools.TOOLS_BIN}:/usr/bin:/bin",
            "HOME": str(home),
            "PM2_HOME": str(self.pm2_home),
            "PORT": str(self.port),
        }
        self.app_pids: set[int] = set()

    def run(self, *args: str, cwd: Path, **env: str) -> str:
        done = subprocess.run(
            [str(tools.PM2), *args],
            cwd=cwd,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=DEADLINE * 2,
        )
        assert done.returncode == 0, f"pm2 {' '.join(args)} exited {done.returncode}:\n{done.stdout}"
        return done.stdout

    def kill(self) -> None:
        """``pm2 kill``; then make sure the daemon and every app process it ran are gone."""
        pid_file = self.pm2_home / "pm2.pid"
        daemon = int(pid_file.read_text()) if pid_file.exists() else None
        subprocess.run(
            [str(tools.PM2), "kill"],
            env=self.env,
            cwd=self.pm2_home.parent,
            capture_output=True,
            timeout=DEADLINE * 2,
            check=False,
        )
        for pid in [*self.app_pids, *([daemon] if daemon else [])]:
            try:
                wait_until(partial(gone, pid), f"process {pid} to end after pm2 kill", timeout=DEADLINE)
            except AssertionError:
                os.kill(pid, signal.SIGKILL)
                raise


def gone(pid: int) -> bool:
    """The process has ended (or is a zombie its parent has not reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def switch(app_dir: Path, release: str) -> None:
    """Point ``current`` at ``release`` by rename, as the pipe does."""
    staged = app_dir / "current.new"
    staged.unlink(missing_ok=True)
    staged.symlink_to(f"releases/{release}")
    staged.replace(app_dir / "current")


def test_pm2_start_or_reload_follows_current_to_the_new_release_with_the_rotated_secret(tmp_path: Path) -> None:
    app_dir = tmp_path / "srv" / "web-api"
    for release in (RELEASE_A, RELEASE_B):
        folder = unpack(pack_release(tmp_path / "build", release), app_dir / "releases" / release)
        ecosystem = folder / "ecosystem.config.js"  # the test copy: cwd is this test's APP_DIR/current
        recipe = ecosystem.read_text(encoding="utf-8")
        assert "cwd: '/srv/web-api/current'," in recipe
        ecosystem.write_text(recipe.replace("/srv/web-api/current", str(app_dir / "current")), encoding="utf-8")
    current = app_dir / "current"
    pm2 = Pm2(tmp_path)

    def serving(release: str, secret: str) -> dict[str, Any] | None:
        answer = answers(pm2.port, "/")
        if answer is None or answer.status != 200:
            return None
        body = answer.json()
        pm2.app_pids.add(body["pid"])
        matches = body["release"] == release and body["db_password_sha256"] == sha16(secret)
        return body if matches else None

    try:
        switch(app_dir, RELEASE_A)
        pm2.run("startOrReload", "ecosystem.config.js", "--env", "prod", cwd=current, DB_PASSWORD="first-secret")
        wait_until(lambda: serving(RELEASE_A, "first-secret") is not None, "release A to answer", timeout=DEADLINE)

        switch(app_dir, RELEASE_B)
        pm2.run("startOrReload", "ecosystem.config.js", "--env", "prod", cwd=current, DB_PASSWORD="rotated-secret")
        wait_until(lambda: serving(RELEASE_B, "rotated-secret") is not None, "release B to answer", timeout=DEADLINE)

        body = serving(RELEASE_B, "rotated-secret")
        assert body is not None
        assert body["cwd"] == str((app_dir / "releases" / RELEASE_B).resolve())
        assert Path(f"/proc/{body['pid']}/cwd").resolve() == (app_dir / "releases" / RELEASE_B).resolve()
        environ = Path(f"/proc/{body['pid']}/environ").read_bytes().split(b"\0")
        assert b"DB_PASSWORD=rotated-secret" in environ
        assert b"NODE_ENV=production" in environ
    finally:
        pm2.kill()
