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
from botocore.exceptions import BotoCoreError, ClientError

DEFAULT_LOG_GROUP = "/aws/ssm/AWS-RunShellScript"
# How the SSM Agent uploads Run Command output to CloudWatch Logs (CloudWatchOutputConfig), from
# amazon-ssm-agent 3.3.1142.0 (commit 1c217c89b42de51d4f4063363d8ec1f2eef56055):
# - agent/framework/processor/executer/iohandler/iomodule/fileS3.go, File.Read: the plugin's stdout and stderr
#   are each copied byte by byte into a file, which a goroutine (StreamData) uploads as it grows; when the
#   output ends the file is marked complete and Read waits for the upload to finish, one tick at a time, at
#   most maxCloudWatchUploadRetry (60) ticks, before the plugin's result is reported (the goroutine goes on).
# - agent/agentlogstocloudwatch/cloudwatchlogspublisher/cloudwatchlogsservice.go:
#   StreamData: every UploadFrequency (1 s) tick, getNextMessage reads the file on from the last line uploaded
#   and one PutLogEvents call sends its events; after a failed call the same lines are read again next tick.
#   getNextMessage: bufio.NewReaderSize(file, MessageLengthThresholdInBytes) and ReadSlice('\n'): each line,
#   its line break kept, is packed in the current message unless message + line would pass 200,000 bytes,
#   then the message is an event and the line starts the next; a line longer than the buffer comes in pieces
#   of exactly 200,000 bytes (bufio.ErrBufferFull), each then an event of its own. At most
#   maxNumberOfEventsPerCall (4) events a tick. A last line without its line break waits for the file's end.
#   buildEventInfo: CRLF becomes LF; the message's last line break is dropped only once the file is complete
#   (events uploaded while the command runs end with one). Timestamp: the instance's time.Now().
# The SDK's validation refuses an empty message (InputLogEvent.Message, min length 1): a lone blank line
# left for an event once the file is complete fails its whole call, every tick, and never lands.
AGENT_PIECE_BYTES = 200 * 1000
AGENT_EVENTS_PER_TICK = 4
AGENT_FINAL_TICKS = 60
INSTANCE_APP_ID = "standin-instance"  # User-Agent marker of calls made from "instances"
POOL_CONNECTIONS = 128


def _read_slice(data: bytes | bytearray, at: int) -> tuple[int, bool]:
    """Where bufio's ReadSlice('\n') from ``at`` ends, and whether it reached the end of ``data`` without a line
    break (io.EOF) rather than ending a line or filling the 200,000-byte buffer (bufio.ErrBufferFull)."""
    newline = data.find(b"\n", at, at + AGENT_PIECE_BYTES)
    if newline >= 0:
        return newline + 1, False
    if len(data) - at >= AGENT_PIECE_BYTES:
        return at + AGENT_PIECE_BYTES, False
    return len(data), True


class AgentOutputFile:
    """One stream's output file as the agent uploads it: bytes appended as the process writes them, and
    each tick's events (getNextMessage); ``uploaded`` moves on only once a tick's events landed."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._lock = threading.Lock()
        self.uploaded = 0
        self.complete = False

    def write(self, data: bytes) -> None:
        with self._lock:
            self._data += data

    def text(self) -> str:
        with self._lock:
            return self._data.decode("utf-8", errors="replace")

    @property
    def done(self) -> bool:
        """The file is complete and all of it was uploaded (getNextMessage's eof)."""
        with self._lock:
            return self.complete and self.uploaded == len(self._data)

    def next_events(self) -> tuple[list[str], int]:
        """The messages of the next tick (at most AGENT_EVENTS_PER_TICK) and where they take ``uploaded``."""
        with self._lock:
            data, complete = bytes(self._data), self.complete
        events: list[str] = []
        start = at = self.uploaded
        while True:
            end, at_eof = _read_slice(data, at)
            if at_eof and (end == at or not complete):
                break
            if end - start > AGENT_PIECE_BYTES:
                events.append(_event_message(data[start:at], complete))
                if len(events) >= AGENT_EVENTS_PER_TICK:
                    return events, at
                start = at
            at = end
        if at > start:
            events.append(_event_message(data[start:at], complete))
        return events, at


def _event_message(raw: bytes, complete: bool) -> str:
    """buildEventInfo: CRLF as LF, the last line break dropped once the file is complete (a character a
    200,000-byte cut split decodes as U+FFFD)."""
    message = raw.decode("utf-8", errors="replace").replace("\r\n", "\n")
    return message[:-1] if complete and message.endswith("\n") else message


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
    """Uploads one stream's ``AgentOutputFile`` to ``<group>/<stream>`` a tick (``interval`` seconds) at a time,
    as the agent's StreamData does."""

    def __init__(self, sink: LogsSink, group: str, stream: str, interval: float, clock_skew: float = 0.0) -> None:
        """``clock_skew``: seconds the instance's clock is off; events carry its time, as the agent's do."""
        self._sink = sink
        self._clock_skew = clock_skew
        self._group = group
        self._stream = stream
        self._interval = interval
        self.file = AgentOutputFile()
        self._created = False
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def end(self) -> None:
        """The output ended: the file is complete (SetIsFileComplete)."""
        self.file.complete = True

    def wait(self) -> None:
        """Wait for the upload, at most AGENT_FINAL_TICKS ticks (it goes on after that)."""
        self._finished.wait(self._interval * AGENT_FINAL_TICKS)

    def stop(self) -> None:
        """The agent died: nothing more is uploaded."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self.file.done:
                break
            self._tick()
        self._finished.set()

    def _tick(self) -> None:
        messages, end = self.file.next_events()
        if not messages:
            return
        if not self._created:
            self._sink.ensure_stream(self._group, self._stream)
            self._created = True
        if not all(messages):
            return  # the SDK refuses the call: the same lines are read again next tick
        now = int((time.time() + self._clock_skew) * 1000)
        try:
            self._sink.put(self._group, self._stream, [{"timestamp": now, "message": text} for text in messages])
        except (BotoCoreError, ClientError):
            return  # the agent logs it and reads the same lines again next tick
        self.file.uploaded = end


def instance_config() -> Config:
    """The agent's clients: marked as instance traffic, pooled for many streams."""
    return Config(user_agent_appid=INSTANCE_APP_ID, max_pool_connections=POOL_CONNECTIONS)  # type: ignore[call-arg]


def logs_client(endpoint: str, region: str, keys: dict[str, str]) -> Any:
    """The agent's CloudWatch Logs client."""
    return boto3.client(  # type: ignore[call-overload]
        "logs", endpoint_url=endpoint, region_name=region, config=instance_config(), **keys
    )
