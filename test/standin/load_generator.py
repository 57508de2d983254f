"""Real HTTP traffic to a load balancer on this machine, to see what a deploy does to its clients.

``LoadGenerator`` runs ``workers`` threads that send ``GET`` requests with ``http.client`` to one
URL on a loopback address (the stand-in's load balancer, ``HaproxyDataPlane.url``; any other host
is refused). Part of the workers (``keepalive``) keep one connection open across requests, as
browsers and SDKs do; the others open a new connection for every request (``Connection: close``),
so both the long-lived and the fresh connections of a rollout are exercised. Each worker pauses
``pause`` seconds between requests. The traffic is bounded: it stops by itself after ``duration``
seconds or ``max_requests`` requests, whichever comes first, or at ``stop()`` / the end of a
``with`` block.

What is counted is what the client saw, nothing inferred: every answer by its status; a connection
that was refused, reset or closed without a complete answer as a connection error; no answer
within ``timeout`` seconds as a timeout. A request failed when its answer is not 2xx, or on a
connection error or timeout; each failure is kept (``failures``: when, kind, detail). Answers
carrying ``X-Release`` (the app's release) and ``X-Served-By`` (the target address the request
arrived on) are counted by those (whatever the status; an answer of the load balancer itself has
neither). Through HAProxy, a target that goes away during a request shows as a 502, or, on a
keep-alive connection's later request, as a connection closed without an answer (see haproxy.py).

The timeline has one bucket per second since the start: requests, answers per release and
failures, so a demo can print the share answered by each release over time (``Summary.shares``,
``Summary.render``).
"""

from __future__ import annotations

import collections
import http.client
import ipaddress
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urlsplit

STATUS, CONNECTION, TIMEOUT = "status", "connection", "timeout"  # the kinds of failure
USER_AGENT = "standin-load-generator"


@dataclass(frozen=True)
class Failure:
    at: float  # seconds from start() to when the request was sent
    kind: str  # STATUS (an answer that is not 2xx), CONNECTION or TIMEOUT
    detail: str  # "503 Service Unavailable", or the exception
    served_by: str | None = None  # X-Served-By of a STATUS failure the target answered


@dataclass(frozen=True)
class Second:
    """One bucket of the timeline: the requests sent during second ``second`` since the start."""

    second: int
    requests: int
    releases: dict[str, int]  # answers per X-Release
    failures: int


@dataclass(frozen=True)
class Summary:
    requests: int  # requests that ended (answered, or failed without an answer)
    ok: int  # 2xx answers
    failed: int  # non-2xx answers, connection errors and timeouts
    statuses: dict[int, int]  # answers by status
    connection_errors: int
    timeouts: int
    releases: dict[str, int]  # answers by X-Release
    served_by: dict[str, int]  # answers by X-Served-By
    timeline: list[Second]
    duration: float  # seconds from start() to the end (or until now, while it runs)

    def shares(self) -> list[tuple[int, dict[str, float]]]:
        """Per second: the share of the answers each release gave (seconds with no answer left out)."""
        shares = []
        for bucket in self.timeline:
            answered = sum(bucket.releases.values())
            if answered:
                shares.append((bucket.second, {r: n / answered for r, n in sorted(bucket.releases.items())}))
        return shares

    def render(self) -> str:
        """The timeline as text: one line per second, the share of each release and the failures."""
        lines = []
        for bucket in self.timeline:
            answered = sum(bucket.releases.values())
            parts = [f"{r} {100 * n / answered:5.1f}%" for r, n in sorted(bucket.releases.items())] if answered else []
            lines.append(
                f"{bucket.second:4d}s {bucket.requests:5d} requests  {'  '.join(parts)}  failed {bucket.failures}"
            )
        return "\n".join(lines)


@dataclass
class _Bucket:
    requests: int = 0
    failures: int = 0
    releases: collections.Counter[str] = field(default_factory=collections.Counter)


class LoadGenerator:
    """Threads sending real HTTP requests to ``url`` (see the module); a context manager."""

    def __init__(
        self,
        url: str,
        *,
        workers: int = 4,
        keepalive: float = 0.5,
        duration: float = 60.0,
        max_requests: int = 100_000,
        pause: float = 0.01,
        timeout: float = 5.0,
    ) -> None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme != "http" or not (host == "localhost" or _loopback(host)):
            raise ValueError(f"LoadGenerator sends traffic to http:// on a loopback address only, not {url!r}")
        self.url = url
        self._host, self._port = host, parts.port or 80
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._keepalive_workers = round(workers * keepalive)
        self._duration, self._max_requests, self._pause, self._timeout = duration, max_requests, pause, timeout
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, args=(i < self._keepalive_workers,), name=f"load-{i}", daemon=True)
            for i in range(workers)
        ]
        self._started = 0.0
        self._ended: float | None = None
        self._claimed = 0
        self._requests = 0
        self._statuses: collections.Counter[int] = collections.Counter()
        self._connection_errors = 0
        self._timeouts = 0
        self._releases: collections.Counter[str] = collections.Counter()
        self._served_by: collections.Counter[str] = collections.Counter()
        self._buckets: dict[int, _Bucket] = {}
        self.failures: list[Failure] = []

    # --- life cycle ------------------------------------------------------------------------------
    def start(self) -> LoadGenerator:
        if self._started:
            raise RuntimeError("a LoadGenerator runs once")
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop now (a request under way ends first, within ``timeout``)."""
        self._stop.set()
        self.wait()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the traffic has stopped (by itself, or after ``stop``); whether it has."""
        if not self._started:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        done = not any(thread.is_alive() for thread in self._threads)
        if done:
            with self._lock:
                self._ended = self._ended or time.monotonic()
        return done

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # --- results ----------------------------------------------------------------------------------
    def summary(self) -> Summary:
        with self._lock:
            last = max(self._buckets, default=-1)
            buckets = [(s, self._buckets.get(s, _Bucket())) for s in range(last + 1)]
            timeline = [Second(s, b.requests, dict(b.releases), b.failures) for s, b in buckets]
            ok = sum(n for status, n in self._statuses.items() if 200 <= status < 300)
            return Summary(
                requests=self._requests,
                ok=ok,
                failed=self._requests - ok,
                statuses=dict(self._statuses),
                connection_errors=self._connection_errors,
                timeouts=self._timeouts,
                releases=dict(self._releases),
                served_by=dict(self._served_by),
                timeline=timeline,
                duration=(self._ended or time.monotonic()) - self._started if self._started else 0.0,
            )

    # --- the workers -----------------------------------------------------------------------------
    def _claim(self) -> bool:
        """Whether one more request may be sent (the count and time bounds)."""
        with self._lock:
            if self._claimed >= self._max_requests or time.monotonic() - self._started >= self._duration:
                return False
            self._claimed += 1
            return True

    def _work(self, keepalive: bool) -> None:
        connection: http.client.HTTPConnection | None = None
        headers = {"User-Agent": USER_AGENT} if keepalive else {"User-Agent": USER_AGENT, "Connection": "close"}
        try:
            while not self._stop.is_set() and self._claim():
                if connection is None:
                    connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
                sent = time.monotonic()
                try:
                    connection.request("GET", self._path, headers=headers)
                    response = connection.getresponse()
                    response.read()
                except TimeoutError as error:
                    self._record(sent, None, None, None, TIMEOUT, _describe(error))
                    connection.close()
                    connection = None
                except (OSError, http.client.HTTPException) as error:
                    self._record(sent, None, None, None, CONNECTION, _describe(error))
                    connection.close()
                    connection = None
                else:
                    status = response.status
                    release, served_by = response.getheader("X-Release"), response.getheader("X-Served-By")
                    failed = not 200 <= status < 300
                    detail = f"{status} {response.reason}"
                    self._record(sent, status, release, served_by, STATUS if failed else None, detail)
                    if not keepalive or response.will_close:
                        connection.close()
                        connection = None
                self._stop.wait(self._pause)
        finally:
            if connection is not None:
                connection.close()

    def _record(
        self,
        sent: float,
        status: int | None,
        release: str | None,
        served_by: str | None,
        failure: str | None,
        detail: str,
    ) -> None:
        at = sent - self._started
        with self._lock:
            bucket = self._buckets.setdefault(int(at), _Bucket())
            self._requests += 1
            bucket.requests += 1
            if status is not None:
                self._statuses[status] += 1
            if release is not None:
                self._releases[release] += 1
                bucket.releases[release] += 1
            if served_by is not None:
                self._served_by[served_by] += 1
            if failure is not None:
                bucket.failures += 1
                if failure == CONNECTION:
                    self._connection_errors += 1
                elif failure == TIMEOUT:
                    self._timeouts += 1
                self.failures.append(Failure(at, failure, detail, served_by))


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
