"""Helpers for tests that run the pipe as a separate process against the stand-in."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from standin import StandIn

ROOT = Path(__file__).resolve().parent.parent
PIPE = ROOT / "pipe" / "pipe.py"


@dataclass
class PipeRun:
    returncode: int
    output: str


# Bitbucket's clone directory, where the pipe writes RESULT_FILE by default: never the repository.
CLONE_DIR = tempfile.mkdtemp(prefix="ssm-deploy-clone-")


def plain(env: dict[str, str]) -> dict[str, str]:
    """Instance labels without colour codes (NO_COLOR), so tests can match ``<id> | <line>``."""
    return {"NO_COLOR": "1", "BITBUCKET_CLONE_DIR": CLONE_DIR, **env}


def run_pipe(env: dict[str, str], timeout: float = 120, colour: bool = False) -> PipeRun:
    """Run ``python3 pipe/pipe.py`` to the end; stdout and stderr together, as in the build log."""
    completed = subprocess.run(
        [sys.executable, str(PIPE)],
        cwd=ROOT,
        env=env if colour else plain(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    return PipeRun(completed.returncode, completed.stdout)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30, every: float = 0.02) -> None:
    """Poll ``condition`` every ``every`` seconds (longer when each poll calls the stand-in) until it
    holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def instance_process(standin: StandIn, instance_id: str, pid_file: str) -> int | None:
    """This machine's pid of the process whose pid (the instance's own number: each instance has its
    own PID namespace) ``pid_file`` on the instance holds, or None when the file is missing or that
    process no longer runs there."""
    path = standin.instance_path(instance_id, pid_file)
    text = path.read_text().strip() if path.exists() else ""
    return standin.host_pid(instance_id, int(text)) if text.isdigit() else None


def kill_instance_processes(standin: StandIn, instance_id: str, *pid_files: str) -> None:
    """SIGKILL the instance's processes whose pids ``pid_files`` on the instance hold, where they run."""
    for pid_file in pid_files:
        pid = instance_process(standin, instance_id, pid_file)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


TIME_OF_DAY = re.compile(r"\d{2}:\d{2}:\d{2}")
DATE_BEFORE = re.compile(r"(?:^|\D)\d{4}-\d{2}-\d{2}[ T]?$")


def undated_times(text: str) -> list[str]:
    """Each time of day in ``text`` (``13:56:40``) not directly preceded by its date
    (``2026-12-06 13:56:40`` or ``2026-12-06T13:56:40Z``), with the words before it."""
    return [
        text[max(0, match.start() - 20) : match.end()]
        for match in TIME_OF_DAY.finditer(text)
        if not DATE_BEFORE.search(text[: match.start()])
    ]


class LivePipe:
    """A pipe process whose output is read line by line as it appears."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(PIPE)],
            cwd=ROOT,
            env=plain(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append((time.monotonic(), line))
                self._changed.notify_all()

    def wait_for_line(self, text: str, timeout: float = 30) -> float:
        """Wait until a line containing ``text`` appears; return when it did."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for when, line in self.lines:
                    if text in line:
                        return when
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no line with {text!r}; output so far:\n{self.output}")
                self._changed.wait(min(remaining, 0.1))

    def signal(self, signum: signal.Signals) -> None:
        os.kill(self.process.pid, signum)

    def finish(self, timeout: float = 60) -> PipeRun:
        try:
            returncode = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()  # a failing test leaves no pipe behind
            raise
        self._reader.join(timeout)
        return PipeRun(returncode, self.output)

    @property
    def output(self) -> str:
        return "".join(line for _, line in self.lines)
