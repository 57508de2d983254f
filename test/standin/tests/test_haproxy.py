"""The load balancers' data plane (test/standin/haproxy.py): real HAProxy processes driven through
the runtime API, in front of real HTTP targets on loopback addresses.

``Targets`` (a fixture here, used by test_load_balancer.py and test_load_generator.py too) stands
up the targets: one small HTTP server per address 127.0.0.2, 127.0.0.3, ... on one port (Linux
routes all of 127/8 to lo), each answering with ``X-Release`` and ``X-Served-By`` (the address the
request arrived on), and each able to stop (then connections are refused), to answer another
status, or to hang.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from standin.haproxy import HaproxyDataPlane, HaproxyError, installed
from standin.load_balancer import DRAIN, MAINT, READY, Server

GROUP = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef"
DEADLINE = 30.0  # seconds: generous, for a loaded machine; nothing waits this long when all is well


def require_haproxy() -> None:
    """Skip where HAProxy is not installed, except in CI (there its absence is an error)."""
    if not installed():
        if os.environ.get("CI"):
            raise AssertionError("HAProxy is not installed (apt-get install haproxy)")
        pytest.skip("HAProxy is not installed (apt-get install haproxy)")


# --- real targets on loopback addresses ---------------------------------------------------------------
class TargetApp:
    """A real HTTP target on ``address:port``: answers every GET with ``status`` (200 unless set),
    ``X-Release`` and ``X-Served-By``; ``GET /slow?seconds=<s>`` answers 200 after ``s`` seconds;
    with ``hang`` set it never answers (until the client goes or the app stops). Stopped, its
    address refuses connections and open ones are cut, as when the app's process is gone."""

    def __init__(self, address: str, port: int, release: str = "v1") -> None:
        self.address, self.port, self.release = address, port, release
        self.status = 200
        self.hang = False
        self.requests: list[tuple[float, str, str]] = []  # (time.monotonic(), path, User-Agent) as they arrived
        self.connections = 0  # connections accepted
        self.overlapping = 0  # requests that arrived while an earlier hanging one's client was still connected
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._hanging: set[socket.socket] = set()
        self._stopped = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> TargetApp:
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with app._lock:
                    app._open.add(self.connection)
                    app.connections += 1

            def finish(self) -> None:
                with app._lock:
                    app._open.discard(self.connection)
                super().finish()

            def do_GET(self) -> None:
                app.answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((self.address, self.port), Handler)
        server.daemon_threads = True
        server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]  # cut connections
        self._stopped.clear()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=f"app-{self.address}")
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopped.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            for connection in list(self._open):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def checks(self) -> list[tuple[float, str, str]]:
        """The health checks that reached the app (requests from ELB's checker)."""
        with self._lock:
            return [r for r in self.requests if r[2] == "ELB-HealthChecker/2.0"]

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        connection = handler.connection
        with self._lock:
            self.requests.append((time.monotonic(), handler.path, handler.headers.get("User-Agent", "")))
            self.overlapping += sum(1 for s in self._hanging if _peer_connected(s))
            hang, status = self.hang, self.status
        query = parse_qs(urlsplit(handler.path).query)
        if handler.path.startswith("/slow"):
            self._stopped.wait(float(query["seconds"][0]))
            status = 200
        elif hang:
            with self._lock:
                self._hanging.add(connection)
            while _peer_connected(connection) and not self._stopped.wait(0.01):
                pass
            with self._lock:
                self._hanging.discard(connection)
            handler.close_connection = True
            return
        body = f"{self.release} from {self.address}\n".encode()
        handler.send_response(status)
        handler.send_header("X-Release", self.release)
        handler.send_header("X-Served-By", connection.getsockname()[0])
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


def _peer_connected(connection: socket.socket) -> bool:
    """Whether the client is still connected (no EOF waiting on the socket)."""
    try:
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


class Targets:
    """Target apps on 127.0.0.2, 127.0.0.3, ... (one port for all), and ``address_of`` for them."""

    def __init__(self) -> None:
        self.apps: dict[str, TargetApp] = {}
        self.port = 0

    def add(self, instance_id: str, release: str = "v1", start: bool = True) -> TargetApp:
        app = TargetApp(f"127.0.0.{len(self.apps) + 2}", self.port, release)
        if not self.port:  # the first app takes a free port: every other one uses it too
            app.start()
            self.port = app.port = self._bound_port(app)
            if not start:
                app.stop()
        elif start:
            app.start()
        self.apps[instance_id] = app
        return app

    def address_of(self, instance_id: str) -> str | None:
        app = self.apps.get(instance_id)
        return app.address if app else None

    def stop(self) -> None:
        for app in self.apps.values():
            app.stop()

    @staticmethod
    def _bound_port(app: TargetApp) -> int:
        assert app._server is not None
        return int(app._server.server_address[1])


@pytest.fixture
def targets() -> Iterator[Targets]:
    running = Targets()
    yield running
    running.stop()


@pytest.fixture
def plane() -> Iterator[HaproxyDataPlane]:
    require_haproxy()
    data_plane = HaproxyDataPlane()
    yield data_plane
    data_plane.stop()


def get(url: str, path: str = "/", timeout: float = DEADLINE) -> tuple[int, str | None, str | None]:
    """(status, X-Release, X-Served-By) of one GET on a new connection."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("X-Release"), response.getheader("X-Served-By")
    finally:
        connection.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout} s")
        time.sleep(0.01)


def in_background(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``work`` in a thread; its result (or exception) lands in the list."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(work())
        except Exception as error:
            result.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def servers(targets: Targets, **modes: str) -> dict[str, Server]:
    """Server name -> Server for the apps named, each in the given mode."""
    return {name: Server(targets.apps[name].address, targets.port, mode) for name, mode in modes.items()}


# --- the tests ------------------------------------------------------------------------------------------
def test_a_group_gets_its_own_process_on_a_free_port_whose_empty_backend_answers_503(plane: HaproxyDataPlane) -> None:
    other = GROUP.replace("web", "api")

    url = plane.url(GROUP)

    assert url == f"http://127.0.0.1:{plane.port(GROUP)}"
    assert plane.port(other) != plane.port(GROUP)
    assert get(url) == (503, None, None)  # no server: HAProxy's own answer
    assert plane.states(GROUP) == {}


def test_requests_reach_only_ready_servers(plane: HaproxyDataPlane, targets: Targets) -> None:
    for name in ("a", "b", "c", "d"):
        targets.add(name)

    plane.apply(GROUP, servers(targets, a=READY, b=MAINT, c=DRAIN, d=READY))
    answers = [get(plane.url(GROUP)) for _ in range(20)]

    assert plane.states(GROUP) == {"a": READY, "b": MAINT, "c": DRAIN, "d": READY}
    assert {served_by for _, _, served_by in answers} == {targets.apps["a"].address, targets.apps["d"].address}
    assert {status for status, _, _ in answers} == {200}
    assert not targets.apps["b"].requests and not targets.apps["c"].requests


def test_a_draining_server_finishes_its_in_flight_request_gets_no_new_one_and_is_deleted_when_gone(
    plane: HaproxyDataPlane, targets: Targets
) -> None:
    a, b = targets.add("a"), targets.add("b")
    plane.apply(GROUP, servers(targets, a=READY, b=MAINT))
    slow, result = in_background(lambda: get(plane.url(GROUP), "/slow?seconds=1.5"))
    wait_for(lambda: len(a.requests) == 1, "the slow request at a")

    plane.apply(GROUP, servers(targets, a=DRAIN, b=READY))
    during = [get(plane.url(GROUP)) for _ in range(10)]
    slow.join(DEADLINE)
    plane.apply(GROUP, servers(targets, b=READY))

    assert result == [(200, "v1", a.address)]  # in flight when the drain began: it completed
    assert {served_by for _, _, served_by in during} == {b.address}
    assert len(a.requests) == 1
    assert plane.states(GROUP) == {"b": READY}  # deleted (del server)
    assert a.address not in plane.command(GROUP, "show servers state targets")


def test_a_gone_server_loses_the_requests_still_in_flight(plane: HaproxyDataPlane, targets: Targets) -> None:
    a, _ = targets.add("a"), targets.add("b")
    plane.apply(GROUP, servers(targets, a=READY, b=MAINT))
    slow, result = in_background(lambda: get(plane.url(GROUP), "/slow?seconds=60"))
    wait_for(lambda: len(a.requests) == 1, "the slow request at a")
    plane.apply(GROUP, servers(targets, a=DRAIN, b=READY))

    plane.apply(GROUP, servers(targets, b=READY))  # the deregistration delay is over
    slow.join(DEADLINE)

    assert result == [(502, None, None)]  # "shutdown sessions server": HAProxy answers 502 Bad Gateway
    assert plane.states(GROUP) == {"b": READY}


def test_a_refused_connection_is_a_503_and_is_not_retried_on_another_server(
    plane: HaproxyDataPlane, targets: Targets
) -> None:
    down, up = targets.add("down"), targets.add("up")
    down.stop()
    plane.apply(GROUP, servers(targets, down=READY, up=READY))

    answers = [get(plane.url(GROUP)) for _ in range(20)]

    assert sorted(set(answers)) == [(200, "v1", up.address), (503, None, None)]
    assert answers.count((503, None, None)) == 10  # round robin, retries 0, no redispatch: every other one
    assert len(up.requests) == 10


def test_a_server_can_change_address_and_come_back_after_it_was_deleted(
    plane: HaproxyDataPlane, targets: Targets
) -> None:
    a, b = targets.add("a"), targets.add("b")
    plane.apply(GROUP, {"x": Server(a.address, targets.port, READY)})
    first = get(plane.url(GROUP))

    plane.apply(GROUP, {"x": Server(b.address, targets.port, READY)})
    moved = get(plane.url(GROUP))
    plane.apply(GROUP, {})
    gone = get(plane.url(GROUP))
    plane.apply(GROUP, {"x": Server(a.address, targets.port, READY)})
    back = get(plane.url(GROUP))

    assert [first, moved, gone, back] == [
        (200, "v1", a.address),
        (200, "v1", b.address),
        (503, None, None),
        (200, "v1", a.address),
    ]


def test_a_name_haproxy_would_refuse_is_an_error(plane: HaproxyDataPlane, targets: Targets) -> None:
    app = targets.add("a")

    with pytest.raises(ValueError, match="server name"):
        plane.apply(GROUP, {"i-1 port 80": Server(app.address, targets.port, READY)})


def test_stop_kills_every_process_and_removes_its_files(targets: Targets) -> None:
    require_haproxy()
    plane = HaproxyDataPlane()
    app = targets.add("a")
    plane.apply(GROUP, servers(targets, a=READY))
    ports = [plane.port(GROUP), plane.port(GROUP.replace("web", "api"))]
    directories = [Path(p.directory) for p in plane._processes.values()]
    pids = [p.popen.pid for p in plane._processes.values()]

    plane.stop()

    assert all(not d.exists() for d in directories)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=DEADLINE).close()
    with pytest.raises(HaproxyError, match="stopped"):
        plane.url(GROUP)
    assert app.running
