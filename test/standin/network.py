"""A TCP forwarder in front of the stand-in that can break the network for a while.

Point a pipe at ``FlakyProxy.endpoint`` instead of the stand-in's own endpoint; ``reset_for``
answers every new connection with a TCP reset, ``refuse_for`` closes the listening port so
connections are refused, each for the given number of seconds. Two faults aim at one API action
(its ``X-Amz-Target``, e.g. ``SendCommand``): ``drop_response_to`` forwards the request, waits
for the stand-in's answer (so the action happened) and resets the connection instead of relaying
it, as when a connection dies between AWS accepting a request and the reply arriving;
``reset_request_to`` resets the connection without forwarding the request (it never reached AWS).
``on_request`` calls back as a request for an action arrives, before forwarding it (a test stops the
client while that call is under way). Query-protocol actions (Auto Scaling's ``Action=SuspendProcesses``
in the body) are matched too.
``reset_from_first_connection`` starts the reset period when the first connection arrives, however
late the client starts.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

HEAD_END = b"\r\n\r\n"
MAX_HEAD_BYTES = 64 * 1024


@dataclass
class _Fault:
    action: str
    drop_response: bool  # False: the request is not forwarded at all
    remaining: int
    spared: int  # matching requests still let through before the fault acts
    callback: Callable[[], None] | None = None  # set: called, then the request is forwarded and answered


@dataclass
class _Connection:
    drop_next_response: bool = False


class FlakyProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = self._listen(0)
        self.port = self._listener.getsockname()[1]
        self._reset_until = 0.0
        self._reset_pending = 0.0  # seconds of resets that start at the next connection
        self._refuse_until = 0.0
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.resets = 0
        self.dropped_responses: list[str] = []  # the action of each request answered, then reset
        self.reset_requests: list[str] = []  # the action of each request reset before forwarding
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset_for(self, seconds: float) -> None:
        self._reset_until = time.monotonic() + seconds

    def reset_from_first_connection(self, seconds: float) -> None:
        self._reset_pending = seconds

    def refuse_for(self, seconds: float) -> None:
        self._refuse_until = time.monotonic() + seconds

    def drop_response_to(self, action: str, times: int = 1, after: int = 0) -> None:
        """``times`` requests for ``action`` (once ``after`` more have passed) reach the stand-in;
        their answers are lost."""
        with self._lock:
            self._faults.append(_Fault(action, drop_response=True, remaining=times, spared=after))

    def reset_request_to(self, action: str, times: int = 1, after: int = 0) -> None:
        """``times`` requests for ``action`` (once ``after`` more have passed) are reset before
        reaching the stand-in."""
        with self._lock:
            self._faults.append(_Fault(action, drop_response=False, remaining=times, spared=after))

    def on_request(self, action: str, callback: Callable[[], None], after: int = 0) -> None:
        """Call ``callback`` (in the proxy's thread) when a request for ``action`` (once ``after`` more
        have passed) arrives, then forward it and relay its answer as usual."""
        with self._lock:
            self._faults.append(_Fault(action, drop_response=False, remaining=1, spared=after, callback=callback))

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(5)

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        listener.settimeout(0.1)
        return listener

    def _serve(self) -> None:
        while not self._stopped.is_set():
            if time.monotonic() < self._refuse_until:
                self._listener.close()  # nothing listens: connect() is refused
                while time.monotonic() < self._refuse_until and not self._stopped.is_set():
                    time.sleep(0.05)
                if self._stopped.is_set():
                    return
                self._listener = self._listen(self.port)
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            if self._reset_pending:
                self._reset_until, self._reset_pending = time.monotonic() + self._reset_pending, 0.0
            if time.monotonic() < self._reset_until:
                self.resets += 1
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()  # linger 0: the peer sees "connection reset"
                continue
            threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._target, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        connection = _Connection()
        pumps = [
            threading.Thread(target=self._pump_requests, args=(client, upstream, connection), daemon=True),
            threading.Thread(target=self._pump_responses, args=(upstream, client, connection), daemon=True),
        ]
        for pump in pumps:
            pump.start()

    def _pump_requests(self, client: socket.socket, upstream: socket.socket, connection: _Connection) -> None:
        """Forward the client's requests one whole request at a time (the SDK does not pipeline),
        so a fault can act on one request; a body without Content-Length is passed on as it comes."""
        buffer = b""
        try:
            while True:
                while HEAD_END not in buffer:
                    data = client.recv(65536)
                    if not data:
                        raise ConnectionResetError
                    buffer += data
                    if len(buffer) > MAX_HEAD_BYTES and HEAD_END not in buffer:
                        return _pump(client, upstream, first=buffer)
                head = buffer[: buffer.index(HEAD_END) + len(HEAD_END)]
                length = _content_length(head)
                if length is None:
                    return _pump(client, upstream, first=buffer)
                while len(buffer) < len(head) + length:
                    data = client.recv(65536)
                    if not data:
                        raise ConnectionResetError
                    buffer += data
                request, buffer = buffer[: len(head) + length], buffer[len(head) + length :]
                fault = self._take_fault(head, request[len(head) :])
                if fault is not None and fault.callback is not None:
                    fault.callback()
                    fault = None
                if fault is not None and not fault.drop_response:
                    self.reset_requests.append(fault.action)
                    _reset(client)
                    _close(upstream)
                    return
                if fault is not None:
                    self.dropped_responses.append(fault.action)
                    connection.drop_next_response = True
                upstream.sendall(request)
        except OSError:
            _close(client, upstream)

    def _pump_responses(self, upstream: socket.socket, client: socket.socket, connection: _Connection) -> None:
        try:
            while data := upstream.recv(65536):
                if connection.drop_next_response:  # the stand-in answered: the action happened
                    _reset(client)
                    _close(upstream)
                    return
                client.sendall(data)
        except OSError:
            pass
        _close(upstream, client)

    def _take_fault(self, head: bytes, body: bytes) -> _Fault | None:
        action = _target_action(head) or _query_action(body)
        with self._lock:
            for fault in self._faults:
                if fault.remaining <= 0 or fault.action != action:
                    continue
                if fault.spared > 0:
                    fault.spared -= 1
                    continue
                fault.remaining -= 1
                return fault
        return None


def _target_action(head: bytes) -> str:
    """The action of a JSON-protocol request (``X-Amz-Target: AmazonSSM.SendCommand``)."""
    found = re.search(rb"^x-amz-target:\s*([^\r\n]*)", head, flags=re.IGNORECASE | re.MULTILINE)
    return found.group(1).decode("latin-1").strip().rsplit(".", 1)[-1] if found else ""


def _query_action(body: bytes) -> str:
    """The action of a query-protocol request (``Action=SuspendProcesses&...`` in the form body)."""
    found = re.search(rb"(?:^|&)Action=([A-Za-z0-9]+)", body)
    return found.group(1).decode("ascii") if found else ""


def _content_length(head: bytes) -> int | None:
    if re.search(rb"^transfer-encoding:", head, flags=re.IGNORECASE | re.MULTILINE):
        return None
    found = re.search(rb"^content-length:\s*([0-9]+)", head, flags=re.IGNORECASE | re.MULTILINE)
    return int(found.group(1)) if found else 0


def _reset(sock: socket.socket) -> None:
    """Close with linger 0: the peer sees "connection reset"."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)  # wakes the other pump's recv(); sends nothing to the peer
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _pump(source: socket.socket, target: socket.socket, first: bytes = b"") -> None:
    try:
        if first:
            target.sendall(first)
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        _close(source, target)
