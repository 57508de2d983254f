"""Starting Live Tail sessions, and what to do when one cannot be started.

StartLiveTail's 5 calls a second are the account's, shared with every pipeline that starts at the
same moment (parallel steps) and with the console: a throttled start is tried again after a random
wait whose bound doubles with each throttle in a row, so pipelines that collided do not collide again
in step; a session that starts late loses nothing (``LogTail`` reads what came before once). A log
group that does not exist yet (the agent creates it with the first output) is tried again shortly.
Any other refusal (the deploy role may not call logs:StartLiveTail, the account's concurrent
sessions are all in use) falls back to FilterLogEvents when no session runs, or leaves those
commands to be read once at the end when others go on live.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipe.apply.watch.live_tail import LiveTailSession
from pipe.aws.errors import error_code, error_message, is_access_denied
from pipe.limits import LIVE_TAIL_MAX_PREFIXES

LIVE_TAIL_RETRY_SECONDS = 2.0  # StartLiveTail again while the log group does not exist yet
# After the n-th throttled StartLiveTail in a row, try again after a random 1 to min(8, 2**n) s: never
# sooner than the second in which the account's 5 calls were used up, and spread so the pipelines
# that collided take the tokens as they come back rather than all at once again.
THROTTLED_RETRY_SECONDS = 1.0
THROTTLED_RETRY_MAX_SECONDS = 8.0
log = logging.getLogger("ssm-deploy")


def throttled_retry_seconds(throttles: int, jitter: Callable[[float, float], float] = random.uniform) -> float:
    """How long to wait before StartLiveTail's next try after ``throttles`` (1 or more) in a row."""
    bound = min(THROTTLED_RETRY_MAX_SECONDS, THROTTLED_RETRY_SECONDS * 2 ** min(throttles, 8))
    return jitter(THROTTLED_RETRY_SECONDS, bound)


@dataclass
class Started:
    """What one round of starts gave: the sessions, the commands to read once at the end, and why
    Live Tail cannot be used at all (None: it can)."""

    sessions: list[LiveTailSession] = field(default_factory=list)
    read_at_end: list[str] = field(default_factory=list)
    unusable: str | None = None


class SessionStarts:
    def __init__(
        self,
        live_logs: Any,
        group: str,
        group_arn: str,
        clock: Callable[[], float],
        jitter: Callable[[float, float], float],
    ) -> None:
        self._logs = live_logs
        self._group = group
        self._group_arn = group_arn
        self._clock = clock
        self._jitter = jitter
        self._next_start = 0.0
        self._throttles = 0  # StartLiveTail throttled this many times in a row

    @property
    def due(self) -> bool:
        return self._clock() >= self._next_start

    def start(self, command_ids: list[str], others_run: bool) -> Started:
        """One session per 100 commands (StartLiveTail's most prefixes); ``others_run``: sessions of
        the phase already run, so a refused start leaves its commands to the end."""
        started = Started()
        for first in range(0, len(command_ids), LIVE_TAIL_MAX_PREFIXES):
            chunk = command_ids[first : first + LIVE_TAIL_MAX_PREFIXES]
            session = LiveTailSession(self._logs, self._group_arn, [f"{command_id}/" for command_id in chunk])
            try:
                session.start()
            except (ClientError, BotoCoreError) as error:
                session.close()
                self._refused(chunk, error, others_run or bool(started.sessions), started)
                return started
            started.sessions.append(session)
            self._throttles = 0
        return started

    def _refused(
        self, chunk: list[str], error: ClientError | BotoCoreError, others_run: bool, started: Started
    ) -> None:
        code = error_code(error) if isinstance(error, ClientError) else ""
        if code == "ResourceNotFoundException":  # the agent creates the group with the first output
            self._next_start = self._clock() + LIVE_TAIL_RETRY_SECONDS
        elif code == "ThrottlingException":  # StartLiveTail's 5 TPS are the account's
            self._throttles += 1
            wait = throttled_retry_seconds(self._throttles, self._jitter)
            self._next_start = self._clock() + wait
            log.debug(f"StartLiveTail was throttled ({self._throttles} in a row): trying again in {wait:.1f} s.")
        elif others_run:  # the others go on live: these are read once at the end
            started.read_at_end.extend(chunk)
            log.debug(f"No Live Tail session for command {', '.join(chunk)} ({error}): read at the end.")
        elif isinstance(error, ClientError):
            started.unusable = self._why_not_live(error)
        else:
            started.unusable = f"Live Tail could not be started ({error})"

    def _why_not_live(self, error: ClientError) -> str:
        if is_access_denied(error):
            return (
                f"the deploy role may not start a CloudWatch Logs Live Tail session on {self._group} "
                f"({error_message(error)}); allow logs:StartLiveTail on that log group"
            )
        if error_code(error) == "LimitExceededException":
            return (
                "the account's concurrent CloudWatch Logs Live Tail sessions are all in use "
                f"({error_message(error)}; the default quota is 15)"
            )
        return f"StartLiveTail failed: {error_code(error)}: {error_message(error)}"
