"""The pipe's cost on the control plane and how fast it notices the end, on the local stand-in.

    .venv/bin/python bench/control_plane.py                     # 1 and 50 instances, 5 latency runs
    .venv/bin/python bench/control_plane.py --sizes 1 50 500 2000 --seconds 30

Measured, each with its baseline in the same run:
- every API call of one deploy, by API and by phase (before SendCommand / after), at each size,
  with TARGETS and with INSTANCE_IDS; calls per second over the deploy. Baseline: what polling each
  instance with GetCommandInvocation once a second would cost over the same time;
- finish latency (the remote command's exit to the pipe's exit), min/median/max over command
  durations spread evenly over 4-9 s, so no run is phase-locked to the poll period; baselines: the
  AWS CLI's ``aws ssm wait command-executed`` (botocore's CommandExecuted waiter: every 5 s) and a
  GetCommandInvocation poller every 1 s, each on the same duration.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "test"), str(ROOT / "bench")]

from standin import StandIn  # noqa: E402
from table import print_table  # noqa: E402

from bench import EXIT_STAMP, bench_env, run_pipe  # noqa: E402

Row = tuple[str, str, str, str]
FINAL = frozenset({"Success", "Failed", "TimedOut", "Cancelled"})


def spread(value: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in (min(value), statistics.median(value), max(value)))


# --- calls per deploy ---------------------------------------------------------------------------------
def calls_per_deploy(
    aws: StandIn, clone: str, count: int, by_targets: bool, seconds: float
) -> tuple[collections.Counter[str], collections.Counter[str], float]:
    """(calls before the first SendCommand, calls after it, the deploy's wall time)."""
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    ids = aws.launch(count, name="bench", tags={"Bench": tag})
    where = {"TARGETS": f"tag:Bench={tag}"} if by_targets else {"INSTANCE_IDS": "\n".join(ids)}
    env = bench_env(aws, clone, MAX_CONCURRENCY="100%", COMMANDS=f"sleep {seconds}", **where)
    start = aws.calls_snapshot(include_instances=False)
    before_send: list[collections.Counter[str]] = []
    done = threading.Event()

    def watch() -> None:  # the counters just before the first SendCommand arrived
        last = start
        while not done.is_set():
            now = aws.calls_snapshot(include_instances=False)
            if (now - start)["ssm:SendCommand"]:
                before_send.append(last - start)
                return
            last = now
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    began = time.time()
    run_pipe(env)
    wall = time.time() - began
    done.set()
    watcher.join()
    total = aws.calls_snapshot(include_instances=False) - start
    before = before_send[0] if before_send else collections.Counter()
    return +_services(before), +_services(total - before), wall


def _services(calls: collections.Counter[str]) -> collections.Counter[str]:
    """Only the service:Action keys (the stand-in also counts SSM and Logs under the bare name)."""
    return collections.Counter({key: value for key, value in calls.items() if ":" in key})


def call_rows(aws: StandIn, clone: str, sizes: list[int], seconds: float) -> list[Row]:
    rows: list[Row] = []
    for count in sizes:
        for by_targets in (True, False):
            before, after, wall = calls_per_deploy(aws, clone, count, by_targets, seconds)
            where = "TARGETS" if by_targets else "INSTANCE_IDS"
            total = sum(before.values()) + sum(after.values())
            naive = count * wall  # GetCommandInvocation per instance every second
            rows.append(
                (
                    f"calls per deploy, {count} instance(s) by {where}, {wall:.0f} s",
                    f"{total} ({total / wall:.1f}/s): {sum(before.values())} before SendCommand, "
                    f"{sum(after.values())} after",
                    f"{naive:.0f} (GetCommandInvocation each, 1/s)",
                    "<= 400 at 2,000 / 35 s",
                )
            )
            for key in sorted(set(before) | set(after)):
                rows.append(
                    (
                        f"  {key}",
                        f"{before[key]} before + {after[key]} after ({(before[key] + after[key]) / wall:.2f}/s)",
                        "",
                        "",
                    )
                )
    return rows


# --- finish latency -------------------------------------------------------------------------------------
def finish_latency(aws: StandIn, clone: str, runs: int) -> tuple[list[float], list[float], list[float]]:
    """Exit-to-noticed seconds for the pipe, the CLI's waiter and a 1 s poller, durations 4-9 s."""
    pipe, waiter, poller = [], [], []
    ssm = aws.client("ssm")
    for index in range(runs):
        duration = 4 + 5 * index / max(1, runs - 1)
        script = [f"sleep {duration:.3f}", EXIT_STAMP]
        (instance_id,) = aws.launch(1)
        stamp = aws.instance(instance_id).home / "exit-stamp"
        exited = run_pipe(bench_env(aws, clone, INSTANCE_IDS=instance_id, COMMANDS="\n".join(script)))
        pipe.append(exited - float(stamp.read_text()))

        command_id = _send(ssm, instance_id, script)
        time.sleep(0.2)  # the waiter's first call must find the invocation
        ssm.get_waiter("command_executed").wait(
            CommandId=command_id, InstanceId=instance_id, WaiterConfig={"Delay": 5, "MaxAttempts": 20}
        )
        waiter.append(time.time() - float(stamp.read_text()))

        command_id = _send(ssm, instance_id, script)
        while True:
            time.sleep(1.0)
            item = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
            if item["Status"] in FINAL:
                break
        poller.append(time.time() - float(stamp.read_text()))
    return pipe, waiter, poller


def _send(ssm: Any, instance_id: str, script: list[str]) -> str:
    response = ssm.send_command(
        InstanceIds=[instance_id], DocumentName="AWS-RunShellScript", Parameters={"commands": script}
    )
    return str(response["Command"]["CommandId"])


def latency_rows(aws: StandIn, clone: str, runs: int) -> list[Row]:
    pipe, waiter, poller = finish_latency(aws, clone, runs)
    return [
        (
            f"finish latency, durations 4-9 s, min/median/max of {runs}",
            f"{spread(pipe)} s",
            f"{spread(waiter)} s (CLI waiter, 5 s); {spread(poller)} s (1 s poller)",
            "<= the 1 s poller",
        )
    ]


def rows(aws: StandIn, clone: str, sizes: list[int], seconds: float, runs: int) -> list[Row]:
    return latency_rows(aws, clone, runs) + call_rows(aws, clone, sizes, seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 50], help="fleet sizes (500 2000: minutes)")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each instance runs")
    parser.add_argument("--runs", type=int, default=5, help="finish-latency runs")
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (16384, 16384))
    with tempfile.TemporaryDirectory() as folder, StandIn(upload_interval=0.2) as aws:
        clone = str(Path(folder) / "clone")
        os.makedirs(clone)
        table = rows(aws, clone, args.sizes, args.seconds, args.runs)
    print_table(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
