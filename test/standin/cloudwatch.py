"""Uploads an invocation's output to CloudWatch Logs while it runs, as the SSM Agent does.

Every invocation's uploaders share one ``LogsSink`` per set of instance credentials: one boto3
client (clients are thread-safe; creating one costs tens of milliseconds, and creating them
from many threads at once through boto3's default session is not thread-safe) with a connection
pool sized for hundreds of concurrent streams, and a memory of the log groups already created,
so each stream costs one CreateLogStream plus its PutLogEvents calls.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

DEFAULT_LOG_GROUP = "/aws/ssm/AWS-RunShellScript"
# The agent reads its stdout/stderr file with a bufio.Reader of this size and ReadSlice('\n'): a longer line
# comes back in pieces of exactly this many bytes (bufio.ErrBufferFull), each its own event, the line's
# rest starting the next one (amazon-ssm-agent, agent/agentlogstocloudwatch/cloudwatchlogspublisher/
# cloudwatchlogsservice.go: MessageLengthThresholdInBytes, getNextMessage)
AGENT_PIECE_BYTES = 200 * 1000
MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 1_048_576
BATCH_EVENT_OVERHEAD = 26
INSTANCE_APP_ID = "standin-instance"  # User-Agent marker of calls made from "instances"
POOL_CONNECTIONS = 128


def line_events(raw: bytes) -> list[str]:
    """The messages the agent uploads for one line of output (``raw``, its line break included): the line
    in pieces of AGENT_PIECE_BYTES bytes (a piece may end inside a character: its bytes decode as U+FFFD),
    CRLF turned into LF, without the line break, and no empty message (PutLogEvents takes none)."""
    pieces = [raw[start : start + AGENT_PIECE_BYTES] for start in range(0, len(raw), AGENT_PIECE_BYTES)]
    messages = [piece.decode("utf-8", errors="replace").replace("\r\n", "\n").removesuffix("\n") for piece in pieces]
    return [message for message in messages if message]


class LogsSink:
    """A shared CloudWatch Logs client, plus the groups known to exist."""

    def __init__(self, client: Any, s3_client: Callable[[], Any] | None = None) -> None:
        self.client = client
        self._s3_client = s3_client
        self._s3: Any = None
        self._groups: set[str] = set()
        self._lock = threading.Lock()  # held while a group is created: one CreateLogGroup per group

    def ensure_stream(self, group: str, stream: str) -> None:
        with self._lock:
            if group not in self._groups:
                with contextlib.suppress(self.client.exceptions.ResourceAlreadyExistsException):
                    self.client.create_log_group(logGroupName=group)
                self._groups.add(group)
        with contextlib.suppress(self.client.exceptions.ResourceAlreadyExistsException):
            self.client.create_log_stream(logGroupName=group, logStreamName=stream)

    def put(self, group: str, stream: str, events: list[dict[str, Any]]) -> None:
        self.client.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)

    def put_object(self, bucket: str, key: str, body: str) -> None:
        """The agent's S3 output (OutputS3BucketName): the full text of one stream."""
        with self._lock:
            if self._s3 is None and self._s3_client is not None:
                self._s3 = self._s3_client()
        if self._s3 is not None:
            self._s3.put_object(Bucket=bucket, Key=key, Body=body.encode())


class LogsSinks:
    """One ``LogsSink`` per (endpoint, region, credentials), created on first use."""

    def __init__(self) -> None:
        self._sinks: dict[tuple[str, ...], LogsSink] = {}
        self._lock = threading.Lock()
        self.created = 0  # clients created: stays 1 unless the instances' credentials change

    def get(self, endpoint: str, region: str, keys: dict[str, str]) -> LogsSink:
        key = (endpoint, region, *(f"{name}={value}" for name, value in sorted(keys.items())))
        with self._lock:
            sink = self._sinks.get(key)
            if sink is None:
                sink = LogsSink(
                    logs_client(endpoint, region, keys),
                    lambda: boto3.client(  # type: ignore[call-overload]
                        "s3", endpoint_url=endpoint, region_name=region, config=instance_config(), **keys
                    ),
                )
                self._sinks[key] = sink
                self.created += 1
            return sink


class StreamUploader:
    """Collects lines of one stream and puts them to ``<group>/<stream>`` every ``interval`` seconds."""

    def __init__(self, sink: LogsSink, group: str, stream: str, interval: float, clock_skew: float = 0.0) -> None:
        """``clock_skew``: seconds the instance's clock is off; events carry its time, as the agent's do."""
        self._sink = sink
        self._clock_skew = clock_skew
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
            self._sink.ensure_stream(self._group, self._stream)
            self._created = True
        now = int((time.time() + self._clock_skew) * 1000)
        for batch in batches(lines):
            self._sink.put(self._group, self._stream, [{"timestamp": now, "message": line} for line in batch])


def batches(messages: list[str]) -> list[list[str]]:
    """``messages`` in PutLogEvents calls: at most 10,000 events and 1,048,576 bytes a call (the messages in
    UTF-8 plus 26 bytes an event; API Reference, PutLogEvents)."""
    out: list[list[str]] = [[]]
    size = 0
    for message in messages:
        cost = len(message.encode()) + BATCH_EVENT_OVERHEAD
        if out[-1] and (len(out[-1]) >= MAX_BATCH_EVENTS or size + cost > MAX_BATCH_BYTES):
            out.append([])
            size = 0
        out[-1].append(message)
        size += cost
    return [batch for batch in out if batch]


def instance_config() -> Config:
    """The agent's clients: marked as instance traffic, pooled for many streams."""
    return Config(user_agent_appid=INSTANCE_APP_ID, max_pool_connections=POOL_CONNECTIONS)  # type: ignore[call-arg]


def logs_client(endpoint: str, region: str, keys: dict[str, str]) -> Any:
    """The agent's CloudWatch Logs client."""
    return boto3.client(  # type: ignore[call-overload]
        "logs", endpoint_url=endpoint, region_name=region, config=instance_config(), **keys
    )
