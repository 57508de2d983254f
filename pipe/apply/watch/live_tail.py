"""One CloudWatch Logs Live Tail session: the events of some log streams, pushed as they are ingested.

StartLiveTail (API Reference) answers with an event stream: one ``sessionStart``, then every second
a ``sessionUpdate`` holding the events ingested in that second (sampled down to 500 above 500 a
second, and then ``sessionMetadata.sampled`` says so), until the client closes the stream, the
session times out after three hours (``SessionTimeoutException``) or the service fails
(``SessionStreamingException``). A session costs no per-call quota while it runs; it takes one of
the account's concurrent Live Tail sessions (15 by default) and is billed per minute it is open.

The stream is read by a daemon thread into a queue that ``take`` empties; ``close`` ends the
session. Nothing here prints or decides what to do about a failure: ``LogTail`` does.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipe.aws.console import partition_of
from pipe.aws.errors import error_code, error_message


def _close_quietly(stream: Any) -> None:
    with contextlib.suppress(Exception):  # closing a stream that already broke
        stream.close()


def log_group_arn(region: str, account: str, group: str) -> str:
    """The log group's ARN, as StartLiveTail wants it ("Specify each log group by its ARN"; without
    the ``:*`` that DescribeLogGroups appends), in the region's partition."""
    return f"arn:{partition_of(region)}:logs:{region}:{account}:log-group:{group}"


@dataclass(frozen=True)
class StreamEnd:
    """Why a session stopped delivering: the error code and message, or a broken connection."""

    code: str
    message: str

    @property
    def timed_out(self) -> bool:
        return self.code == "SessionTimeoutException"


class LiveTailSession:
    """A started Live Tail session. ``start`` raises the ClientError of StartLiveTail itself."""

    def __init__(self, logs: Any, group_arn: str, prefixes: list[str]) -> None:
        self._logs = logs
        self._group_arn = group_arn
        self.prefixes = prefixes
        self._events: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._stream: Any = None
        self._closing = threading.Event()
        self.ready = threading.Event()  # sessionStart received: events ingested from now on come here
        self.sampled = False  # an update was a sample: events were dropped
        self.end: StreamEnd | None = None

    def start(self) -> None:
        response = self._logs.start_live_tail(
            logGroupIdentifiers=[self._group_arn], logStreamNamePrefixes=list(self.prefixes)
        )
        self._stream = response["responseStream"]
        threading.Thread(target=self._read, name="live-tail", daemon=True).start()

    def take(self) -> list[dict[str, Any]]:
        """The events delivered since the last call (LiveTailSessionLogEvent fields), in order."""
        with self._lock:
            taken = list(self._events)
            self._events.clear()
        return taken

    def close(self) -> None:
        """End the session without waiting for it: closing the stream waits for the reader thread's
        read, which returns only with the next update (up to a second later, at the end of every phase)."""
        self._closing.set()
        stream = self._stream
        if stream is not None:
            threading.Thread(target=_close_quietly, args=(stream,), name="live-tail-close", daemon=True).start()

    def _read(self) -> None:
        try:
            for message in self._stream:
                if self._closing.is_set():
                    return
                if "sessionStart" in message:
                    self.ready.set()
                update = message.get("sessionUpdate")
                if update is None:
                    continue
                if (update.get("sessionMetadata") or {}).get("sampled"):
                    self.sampled = True
                with self._lock:
                    self._events.extend(update.get("sessionResults") or [])
            self._ended(StreamEnd("StreamClosed", "CloudWatch Logs closed the Live Tail stream"))
        except ClientError as error:  # an exception event in the stream (botocore's EventStreamError)
            self._ended(StreamEnd(error_code(error), error_message(error)))
        except (BotoCoreError, OSError, ValueError) as error:  # the connection broke, or a frame did not parse
            self._ended(StreamEnd(type(error).__name__, str(error)))
        except Exception as error:  # urllib3's errors on a closed connection, among others
            self._ended(StreamEnd(type(error).__name__, str(error)))

    def _ended(self, end: StreamEnd) -> None:
        if not self._closing.is_set():
            self.end = end
        self.ready.set()
