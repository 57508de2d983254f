"""Uploads an invocation's output to CloudWatch Logs while it runs, as the SSM Agent does."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import boto3

DEFAULT_LOG_GROUP = "/aws/ssm/AWS-RunShellScript"


class StreamUploader:
    """Collects lines of one stream and puts them to ``<group>/<stream>`` every ``interval`` seconds."""

    def __init__(self, client: Any, group: str, stream: str, interval: float) -> None:
        self._client = client
        self._group = group
        self._stream = stream
        self._interval = interval
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._created = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def add(self, line: str) -> None:
        with self._lock:
            self._pending.append(line)

    def close(self) -> None:
        """Stop and upload whatever is left."""
        self._stop.set()
        self._thread.join()
        self._flush()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            lines, self._pending = self._pending, []
        if not lines:
            return
        if not self._created:
            _ensure(self._client, self._group, self._stream)
            self._created = True
        now = int(time.time() * 1000)
        # CloudWatch takes at most 10,000 events or 1 MB a call
        for start in range(0, len(lines), 5000):
            events = [{"timestamp": now, "message": line} for line in lines[start : start + 5000]]
            self._client.put_log_events(logGroupName=self._group, logStreamName=self._stream, logEvents=events)


def logs_client(endpoint: str, region: str, keys: dict[str, str]) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        "logs", endpoint_url=endpoint, region_name=region, **keys
    )


def _ensure(client: Any, group: str, stream: str) -> None:
    with contextlib.suppress(client.exceptions.ResourceAlreadyExistsException):
        client.create_log_group(logGroupName=group)
    with contextlib.suppress(client.exceptions.ResourceAlreadyExistsException):
        client.create_log_stream(logGroupName=group, logStreamName=stream)
