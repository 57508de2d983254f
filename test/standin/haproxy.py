"""The stand-in's load balancers' data plane: one HAProxy process per target group, driven through
its runtime API.

Why this split: ``LoadBalancerModel`` (load_balancer.py) stays the control plane, in Python, so the
states ELBv2 documents (initial, healthy, unhealthy, draining, unused, their reason codes, the
thresholds, fail-open) are exact and observable through DescribeTargetHealth; HAProxy carries the
requests, so what clients see is real: TCP connections, keep-alive, a draining server that gets no
new request while its in-flight ones finish, a refused connection to a target whose app is down.
HAProxy runs no health checks of its own (its servers have no ``check``): the model tells it each
target's admin state through ``apply`` (see ``load_balancer.DataPlane``).

Each process (started on the group's first ``apply``, or when ``url``/``port`` ask for it) has a
frontend on 127.0.0.1 at a free port and a backend ``targets`` (round robin) that starts empty.
The listening socket is bound here and inherited (``bind fd@<n>``), so no other process can take
the port between choosing and binding it. Targets are dynamic servers:

* a new target: ``add server targets/<name> <address>:<port>``; a dynamic server starts in
  maintenance, then ``set server ... state ready|maint|drain`` gives it its mode;
* a target whose address changed: ``set server ... addr <address> port <port>``;
* a target gone (its deregistration delay is over): ``set server ... state maint``, ``shutdown
  sessions server ...`` (its remaining requests are cut, as ELB does when the delay ends), then
  ``del server ...``, repeated until HAProxy agrees (it refuses while connections are attached).

HAProxy 2.6 facts this relies on (management guide of 2.6, /usr/share/doc/haproxy/management.txt,
and checked against Debian's 2.6.12): ``add server`` needs no ``experimental-mode`` (2.4 did), a
dynamic server is created in maintenance, and the backend must use a dynamic algorithm
(roundrobin is one); ``del server`` "must be put in maintenance mode prior to its deletion" and
"is cancelled if the server still has active or idle connection"; "drain" "only removes the server
from load balancing" (a keep-alive client's next request goes to another server); answers are
"New server registered.", "Server deleted.", "Server still has connections attached to it, cannot
remove it.", "No such server.", an empty line for ``set server ... state``.

Proxy settings, as an Application Load Balancer behaves: ``retries 0`` and no ``option
redispatch`` (a refused connection fails the request, it is not replayed on another target);
requests are balanced one by one, client connections stay keep-alive. Differences remain, all in
what a failed request looks like to the client (each is still a failure): HAProxy answers 503 both
when no server is available and when the connection to the target is refused or times out (an ALB
answers 503, 502 and 504); when the target's connection breaks before any answer (the app died
during the request), HAProxy answers 502 to the first request of a client connection but closes a
keep-alive connection's later request without any answer ("A keep-alive request to the server
failed on a network error. The client is required to retry": ``abort_keep_alive`` in
``http_wait_for_response``, src/http_ana.c; observed here with Debian's 2.6.12), where an ALB
answers 502; a server gone after its deregistration delay has its requests in flight answered
502. And the connection to the target is closed after each response (``option
http-server-close``) where an ALB keeps it open. That last choice is
deliberate, instead of ``http-reuse never``: with ``never``, HAProxy 2.6.12 leaves a keep-alive
client's session its private idle connection to a server; ``del server`` succeeds anyway, and that
client's next request went to the deleted server's address (observed: a target gone after its
delay kept answering). With the server side closed after each response, no connection outlives
its request, so a drained target gets nothing once its requests are done, and ``del server``
finds no idle connection. Timeouts: connect 5 s, server 60 s (an ALB's idle timeout), client and
keep-alive 60 s, request headers 10 s.

A process that died is an error (``HaproxyError``, with the end of its log) at the next call; it
is not restarted. ``stop()`` kills every process and removes its files. Processes are started by one long-lived
thread under ``setpriv --pdeathsig KILL``, so they also die when this Python process does.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from standin.load_balancer import DRAIN, MAINT, READY, Server

BACKEND = "targets"
START_TIMEOUT = 20.0  # seconds for a new process to answer on its runtime API (a loaded machine)
DELETE_TIMEOUT = 2.0  # seconds ``apply`` retries ``del server`` before leaving it for the next call
NAME = re.compile(r"[A-Za-z0-9_.:-]+")
CONFIG = """\
global
    stats socket {socket} mode 600 level admin
    stats timeout 30s
    nbthread 1
    maxconn 4096

defaults
    mode http
    option http-server-close
    retries 0
    no option redispatch
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s
    timeout queue 5s

frontend elb
    bind fd@{fd}
    option forwardfor
    default_backend {backend}

backend {backend}
    balance roundrobin
"""
ADMIN_BITS = {"maint": 0x01 | 0x02 | 0x04 | 0x20 | 0x40, "drain": 0x08 | 0x10}  # srv_admin_state flags


class HaproxyError(RuntimeError):
    """HAProxy refused a runtime command, or a process would not start or died."""


def installed() -> bool:
    return shutil.which("haproxy") is not None


@dataclass
class _Process:
    """One target group's HAProxy process and what its backend holds."""

    directory: Path
    port: int
    popen: subprocess.Popen[bytes]
    servers: dict[str, Server]  # as HAProxy has them (a server being deleted: mode MAINT)
    doomed: set[str]  # gone from the routing state; ``del server`` not yet accepted

    @property
    def socket(self) -> Path:
        return self.directory / "admin.sock"

    def command(self, line: str, timeout: float = 10.0) -> str:
        """One runtime API command (the CLI answers and closes); its answer, stripped."""
        if self.popen.poll() is not None:
            raise HaproxyError(f"HAProxy on port {self.port} exited ({self.popen.returncode}): {self.log()}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as cli:
            cli.settimeout(timeout)
            cli.connect(str(self.socket))
            cli.sendall(line.encode() + b"\n")
            answer = b""
            while chunk := cli.recv(65536):
                answer += chunk
        return answer.decode(errors="replace").strip()

    def expect(self, line: str, *answers: str) -> str:
        """Run ``line``; an answer that does not start with one of ``answers`` is an error ("": the
        answer must be empty)."""
        answer = self.command(line)
        if not any(answer.startswith(expected) if expected else not answer for expected in answers):
            raise HaproxyError(f"{line!r}: {answer!r}")
        return answer

    def log(self) -> str:
        try:
            return (self.directory / "haproxy.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def apply(self, wanted: Mapping[str, Server]) -> None:
        for name, server in wanted.items():
            if not NAME.fullmatch(name):
                raise ValueError(f"not a server name HAProxy accepts: {name!r}")
            have = self.servers.get(name)
            self.doomed.discard(name)
            target = f"{BACKEND}/{name}"
            if have is None:
                self.expect(f"add server {target} {server.address}:{server.port}", "New server registered.")
                have = Server(server.address, server.port, MAINT)  # a dynamic server starts in maintenance
            elif (have.address, have.port) != (server.address, server.port):
                self.expect(f"set server {target} addr {server.address} port {server.port}", "IP changed", "no need")
            if have.mode != server.mode:
                self.expect(f"set server {target} state {server.mode}", "")
            self.servers[name] = server
        for name in set(self.servers) - set(wanted) - self.doomed:
            self.expect(f"set server {BACKEND}/{name} state maint", "")
            self.expect(f"shutdown sessions server {BACKEND}/{name}", "")
            self.servers[name] = replace(self.servers[name], mode=MAINT)
            self.doomed.add(name)
        self.delete_doomed()

    def delete_doomed(self) -> None:
        deadline = time.monotonic() + DELETE_TIMEOUT
        while self.doomed:
            for name in sorted(self.doomed):
                answer = self.command(f"del server {BACKEND}/{name}")
                if answer.startswith(("Server deleted.", "No such server.")):
                    self.doomed.discard(name)
                    del self.servers[name]
                elif not answer.startswith("Server still has connections"):
                    raise HaproxyError(f"del server {BACKEND}/{name}: {answer!r}")
                else:  # sessions were shut: they end at HAProxy's next wake-up
                    self.command(f"shutdown sessions server {BACKEND}/{name}")
            if not self.doomed or time.monotonic() > deadline:
                return
            time.sleep(0.02)

    def states(self) -> dict[str, str]:
        """Server name -> "ready", "maint" or "drain", as HAProxy reports them (``show servers state``)."""
        states = {}
        lines = self.command(f"show servers state {BACKEND}").splitlines()
        header = next((line[2:].split() for line in lines if line.startswith("# be_id")), [])
        for line in lines:
            if not line or line.startswith("#") or line == "1":
                continue
            row = dict(zip(header, line.split(), strict=False))
            admin = int(row["srv_admin_state"])
            states[row["srv_name"]] = (
                MAINT if admin & ADMIN_BITS["maint"] else DRAIN if admin & ADMIN_BITS["drain"] else READY
            )
        return states

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        shutil.rmtree(self.directory, ignore_errors=True)


class HaproxyDataPlane:
    """``load_balancer.DataPlane`` with one HAProxy process per target group (see the module)."""

    def __init__(self, executable: str = "haproxy") -> None:
        self._executable = executable
        self._processes: dict[str, _Process] = {}
        self._lock = threading.RLock()
        self._stopped = False
        # One thread starts every process: --pdeathsig fires when the thread that started the
        # process ends, so it must be one that lives as long as the data plane
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="haproxy-spawner")

    def apply(self, group_arn: str, servers: Mapping[str, Server]) -> None:
        with self._lock:
            self._process(group_arn).apply(servers)

    def url(self, group_arn: str) -> str:
        """Where clients send the group's requests: ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port(group_arn)}"

    def port(self, group_arn: str) -> int:
        with self._lock:
            return self._process(group_arn).port

    def states(self, group_arn: str) -> dict[str, str]:
        """Server name -> mode, as the group's HAProxy reports it (its servers' admin states)."""
        with self._lock:
            return self._process(group_arn).states()

    def command(self, group_arn: str, line: str) -> str:
        """A runtime API command to the group's HAProxy (for tests and debugging)."""
        with self._lock:
            return self._process(group_arn).command(line)

    def stop(self) -> None:
        """Kill every process and remove its files; the data plane cannot be used again."""
        with self._lock:
            self._stopped = True
            processes, self._processes = list(self._processes.values()), {}
        for process in processes:
            process.stop()
        self._spawner.shutdown(wait=True)

    def _process(self, group_arn: str) -> _Process:
        """The group's process (lock held), started when it has none."""
        if self._stopped:
            raise HaproxyError("the data plane was stopped")
        process = self._processes.get(group_arn)
        if process is None:
            process = self._processes[group_arn] = self._start()
        return process

    def _start(self) -> _Process:
        directory = Path(tempfile.mkdtemp(prefix="elb-haproxy-"))
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            port = int(listener.getsockname()[1])
            config = directory / "haproxy.cfg"
            config.write_text(
                CONFIG.format(socket=directory / "admin.sock", fd=listener.fileno(), backend=BACKEND), encoding="utf-8"
            )
            command = [self._executable, "-f", str(config), "-db"]
            if shutil.which("setpriv"):
                command = ["setpriv", "--pdeathsig", "KILL", "--", *command]
            with open(directory / "haproxy.log", "wb") as log:
                popen = self._spawner.submit(
                    subprocess.Popen,
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(listener.fileno(),),
                    start_new_session=True,  # a Ctrl-C of the test run does not stop it before stop() does
                ).result()
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        finally:
            listener.close()  # HAProxy has its own copy
        process = _Process(directory, port, popen, {}, set())
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                process.command("show info", timeout=2)
                return process
            except HaproxyError:
                process.stop()
                raise
            except OSError as error:
                if time.monotonic() > deadline:
                    output = process.log()
                    process.stop()
                    raise HaproxyError(f"HAProxy did not answer on {process.socket}: {error}; {output}") from error
                time.sleep(0.02)
