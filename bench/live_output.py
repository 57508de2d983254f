"""Live output's cost on CloudWatch Logs, measured on the stand-in (a section of bench.py, or alone):

    .venv/bin/python bench/live_output.py --seconds 20 60 --concurrent 4 10

- events and bytes read from CloudWatch per event printed, with 1, 5 and 20 instances printing a
  line every 50 ms for each duration; the baseline is the same deploy with every Live Tail session
  of the account in use (the pipe then polls FilterLogEvents);
- K deploys at once (2 chatty instances each, started 0.3 s apart) against the stand-in's 5 TPS
  FilterLogEvents bucket: throttled calls, and the delay from an instance printing a line to the
  build log showing it (median / max over every line), with the same baseline.
Reads are counted by the stand-in (``LogsReads.counters``), printed events by the pipe's debug line.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "test")]

from standin import StandIn  # noqa: E402
from table import print_table  # noqa: E402

PIPE = ROOT / "pipe" / "pipe.py"
LINE_EVERY = 0.05
CHATTY = (
    'end=$(( $(date +%s) + {seconds} )); while [ $(date +%s) -lt $end ]; do echo "tick $(date +%s.%N)"; '
    "sleep {every}; done"
)
PRINTED = re.compile(r"Live output from \S+: read \d+ events \(\d+ bytes\), printed (\d+) \((\d+) bytes\)")
TICK = re.compile(r"^\S+ \| tick (\d+\.\d+)$")
Row = tuple[str, str, str, str]


def _env(aws: StandIn, clone: str, instance_ids: list[str], seconds: float, group: str) -> dict[str, str]:
    return aws.pipe_env(
        NO_COLOR="1",
        BITBUCKET_CLONE_DIR=clone,
        DEBUG="true",
        INSTANCE_IDS=",".join(instance_ids),
        COMMANDS=CHATTY.format(seconds=int(seconds), every=LINE_EVERY),
        CLOUDWATCH_LOG_GROUP=group,
    )


def _group(aws: StandIn) -> str:
    group = f"/aws/ssm/bench-{uuid.uuid4().hex[:8]}"
    aws.client("logs").create_log_group(logGroupName=group)
    return group


class _Deploy:
    """A pipe process whose lines are stamped with the time they reached the build log."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(PIPE)], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))

    def wait(self) -> str:
        self.process.wait(timeout=600)
        self._reader.join()
        output = "\n".join(line for _, line in self.lines)
        if self.process.returncode:
            raise RuntimeError(f"the pipe failed:\n{output[-3000:]}")
        return output

    def delays(self) -> list[float]:
        """Seconds from each streamed line's printing on the instance to its arrival in the build log."""
        found = [(at, TICK.match(line)) for at, line in self.lines]
        return [at - float(match.group(1)) for at, match in found if match]


def _read_vs_printed(aws: StandIn, clone: str, count: int, seconds: float, live: bool) -> tuple[float, float, int]:
    """(events read per printed, bytes read per printed, FilterLogEvents calls) of one deploy."""
    aws.logs_reads.reset()
    if not live:
        aws.logs_reads.configure(concurrent_sessions=0)
    instance_ids = aws.launch(count, name="bench-chatty")
    output = _Deploy(_env(aws, clone, instance_ids, seconds, _group(aws))).wait()
    counters = aws.logs_reads.counters
    aws.logs_reads.reset()
    found = PRINTED.search(output)
    if found is None:
        raise RuntimeError("the pipe's debug line with the printed events is missing")
    events, size = int(found.group(1)), int(found.group(2))
    read = counters.tail_events + counters.filter_events
    read_bytes = counters.tail_bytes + counters.filter_bytes
    return read / max(events, 1), read_bytes / max(size, 1), counters.filter_calls


def _concurrent(aws: StandIn, clone: str, deploys: int, seconds: float, live: bool) -> tuple[int, int, list[float]]:
    """(calls, throttled calls, output delays) of ``deploys`` deploys at once."""
    aws.logs_reads.reset()
    if not live:
        aws.logs_reads.configure(concurrent_sessions=0)
    group = _group(aws)
    running = []
    for _ in range(deploys):
        running.append(_Deploy(_env(aws, clone, aws.launch(2, name="bench-concurrent"), seconds, group)))
        time.sleep(0.3)
    for deploy in running:
        deploy.wait()
    counters = aws.logs_reads.counters
    aws.logs_reads.reset()
    calls = counters.filter_calls + counters.sessions_started + counters.start_throttled + counters.sessions_refused
    throttled = counters.filter_throttled + counters.start_throttled
    return calls, throttled, [delay for deploy in running for delay in deploy.delays()]


def live_output_rows(aws: StandIn, clone: str, durations: list[float], concurrency: list[int]) -> list[Row]:
    rows: list[Row] = []
    for seconds in durations:
        for count in (1, 5, 20):
            events, size, calls = _read_vs_printed(aws, clone, count, seconds, live=True)
            baseline = "-"
            if seconds == min(durations):
                old_events, old_size, old_calls = _read_vs_printed(aws, clone, count, seconds, live=False)
                baseline = f"{old_events:.2f} / {old_size:.2f} ({old_calls} calls, the FilterLogEvents fallback)"
            rows.append(
                (
                    f"read per printed event / byte, {count} chatty instance(s), {seconds:.0f} s",
                    f"{events:.2f} / {size:.2f} ({calls} FilterLogEvents calls)",
                    baseline,
                    "<= 1.5",
                )
            )
    for deploys in concurrency:
        seconds = min(durations)
        measured = []
        for live in (True, False):
            calls, throttled, delays = _concurrent(aws, clone, deploys, seconds, live)
            spread = f"{statistics.median(delays):.2f} / {max(delays):.2f} s" if delays else "no lines"
            measured.append(f"{throttled} of {calls} calls throttled, delay {spread}")
        rows.append(
            (
                f"{deploys} deploys at once, 5 TPS FilterLogEvents (delay median / max)",
                measured[0],
                measured[1] + " (the FilterLogEvents fallback)",
                "0 throttled, ~2 s",
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[20, 60], help="how long the instances print")
    parser.add_argument("--concurrent", type=int, nargs="+", default=[4, 10], help="deploys at once")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, StandIn(upload_interval=0.2) as aws:
        clone = str(Path(folder) / "clone")
        os.makedirs(clone)
        rows = live_output_rows(aws, clone, args.seconds, args.concurrent)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
