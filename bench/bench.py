"""Benchmarks of the pipe on the local stand-in; prints a table (no pass/fail: read the figures).

    .venv/bin/python bench/bench.py            # everything (a few minutes)
    .venv/bin/python bench/bench.py --quick    # fewer runs, smaller fleets and output

Measured, each in the same run as its baseline:
- finish latency: from the remote command's exit to the pipe's exit (median), against polling the
  way `aws ssm wait command-executed` does (GetCommandInvocation every 5 s);
- control-plane calls per poll cycle at 1, 50 and 500 instances, against one GetCommandInvocation
  per instance per cycle;
- start-up: process start to SendCommand;
- peak RSS of the pipe while it streams 10 MB and 100 MB of output from one instance.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "test")]

from standin import StandIn  # noqa: E402

PIPE = ROOT / "pipe" / "pipe.py"
EXIT_STAMP = 'date +%s.%N > "$HOME/exit-stamp"'


def run_pipe(env: dict[str, str]) -> float:
    """Run the pipe with its output discarded; return the wall time at which it exited."""
    subprocess.run([sys.executable, str(PIPE)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, check=True)
    return time.time()


def bench_env(aws: StandIn, clone: str, **variables: str) -> dict[str, str]:
    return aws.pipe_env(NO_COLOR="1", BITBUCKET_CLONE_DIR=clone, **variables)


def finish_latency(aws: StandIn, clone: str, runs: int) -> tuple[float, float]:
    pipe, waiter = [], []
    ssm = aws.client("ssm")
    for _ in range(runs):
        (instance_id,) = aws.launch(1)
        stamp = aws.instance(instance_id).home / "exit-stamp"
        exited = run_pipe(bench_env(aws, clone, INSTANCE_IDS=instance_id, COMMANDS=f"sleep 2\n{EXIT_STAMP}"))
        pipe.append(exited - float(stamp.read_text()))

        command_id = ssm.send_command(
            InstanceIds=[instance_id],
            DocumentName="AWS-RunShellScript",
            Parameters={"commands": ["sleep 2", EXIT_STAMP]},
        )["Command"]["CommandId"]
        time.sleep(0.2)  # the waiter's first call must find the invocation
        ssm.get_waiter("command_executed").wait(
            CommandId=command_id, InstanceId=instance_id, WaiterConfig={"Delay": 5, "MaxAttempts": 20}
        )
        waiter.append(time.time() - float(stamp.read_text()))
    return statistics.median(pipe), statistics.median(waiter)


def calls_per_cycle(aws: StandIn, clone: str, count: int) -> tuple[float, float, int]:
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    aws.launch(count, name="bench", tags={"Bench": tag})
    before = aws.calls_snapshot(include_instances=False)
    run_pipe(bench_env(aws, clone, TARGETS=f"tag:Bench={tag}", MAX_CONCURRENCY="100%", COMMANDS="sleep 3"))
    calls = aws.calls_snapshot(include_instances=False) - before
    cycles = calls["ssm:ListCommands"] - 1  # one ListCommands is the permission probe before sending
    status = calls["ssm:ListCommands"] + calls["ssm:ListCommandInvocations"] - 2  # less the two probes
    tail = calls["logs:FilterLogEvents"]
    return status / cycles, tail / cycles, cycles


def start_up(aws: StandIn, clone: str, runs: int) -> float:
    delays = []
    ssm = aws.client("ssm")
    for _ in range(runs):
        (instance_id,) = aws.launch(1)
        started = time.time()
        run_pipe(bench_env(aws, clone, INSTANCE_IDS=instance_id, COMMANDS="true"))
        requested = ssm.list_commands(InstanceId=instance_id)["Commands"][0]["RequestedDateTime"]
        delays.append(requested.astimezone(datetime.UTC).timestamp() - started)
    return float(statistics.median(delays))


def peak_rss_mb(aws: StandIn, clone: str, megabytes: int) -> float:
    (instance_id,) = aws.launch(1)
    command = f"head -c {megabytes}M /dev/zero | tr '\\0' x | fold -w 999"
    env = bench_env(aws, clone, INSTANCE_IDS=instance_id, COMMANDS=command, EXECUTION_TIMEOUT="1800")
    measure = (
        "import resource, subprocess, sys; "
        "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    done = subprocess.run(
        [sys.executable, "-c", measure, sys.executable, str(PIPE)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip()) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs, smaller fleets and output")
    args = parser.parse_args()
    runs = 3 if args.quick else 10
    fleets = (1, 50, 200) if args.quick else (1, 50, 500)
    outputs = (5, 20) if args.quick else (10, 100)
    resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as folder, StandIn(Path(folder) / "aws", upload_interval=0.2) as aws:
        clone = str(Path(folder) / "clone")
        os.makedirs(clone)
        pipe, waiter = finish_latency(aws, clone, runs)
        rows.append(
            (f"finish latency, median of {runs}", f"{pipe:.2f} s", f"{waiter:.2f} s (waiter, 5 s delay)", "<= 1 s")
        )
        for count in fleets:
            status, tail, cycles = calls_per_cycle(aws, clone, count)
            target = math.ceil(count / 50) + 1
            rows.append(
                (
                    f"status calls per poll, {count} instance(s) ({cycles} polls)",
                    f"{status:.1f} (+{tail:.1f} log reads)",
                    f"{count} (GetCommandInvocation each)",
                    f"<= {target}",
                )
            )
        rows.append(
            (
                f"start-up to SendCommand, median of {min(runs, 5)}",
                f"{start_up(aws, clone, min(runs, 5)):.2f} s",
                "-",
                "-",
            )
        )
        for megabytes in outputs:
            rows.append(
                (
                    f"peak RSS streaming {megabytes} MB",
                    f"{peak_rss_mb(aws, clone, megabytes):.0f} MB",
                    "-",
                    "<= 100 MB, flat",
                )
            )
    widths = [max(len(row[i]) for row in [("measure", "ssm-deploy", "baseline", "target"), *rows]) for i in range(4)]
    for row in [("measure", "ssm-deploy", "baseline", "target"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
