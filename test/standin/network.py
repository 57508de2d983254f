"""A TCP forwarder in front of the stand-in that can break the network for a while.

Point a pipe at ``FlakyProxy.endpoint`` instead of the stand-in's own endpoint; ``reset_for``
answers every new connection with a TCP reset, ``refuse_for`` closes the listening port so
connections are refused, each for the given number of seconds. ``reset_from_first_connection``
starts the reset period when the first connection arrives, however late the client starts.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time


class FlakyProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = self._listen(0)
        self.port = self._listener.getsockname()[1]
        self._reset_until = 0.0
        self._reset_pending = 0.0  # seconds of resets that start at the next connection
        self._refuse_until = 0.0
        self._stopped = threading.Event()
        self.resets = 0
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
        pumps = [
            threading.Thread(target=_pump, args=(client, upstream), daemon=True),
            threading.Thread(target=_pump, args=(upstream, client), daemon=True),
        ]
        for pump in pumps:
            pump.start()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
