"""Benchmarks of the pipe on the local stand-in; prints a table (no pass/fail: read the figures).

    .venv/bin/python bench/bench.py            # everything (a few minutes)
    .venv/bin/python bench/bench.py --quick    # fewer runs, smaller fleets and output

Measured, each in the same run as its baseline:
- the end of a phase: from the remote command's exit to the pipe's exit, 1 and 10 instances, over
  durations spread across 4-9 s, against a 1 s GetCommandInvocation poller in the same rounds
  (``phase_end.py``, which also runs alone);
- control-plane calls per poll cycle at 1, 50 and 500 instances, against one GetCommandInvocation
  per instance per cycle;
- start-up: process start to SendCommand;
- peak RSS of the pipe while it streams 10 MB and 100 MB of output from one instance, and while it
  follows 500 instances;
- every API call of a deploy by API and phase (TARGETS and INSTANCE_IDS, ``--sizes``)
  (``control_plane.py``, which also runs alone);
- live output's CloudWatch Logs reads per event printed, and K deploys at once against the 5 TPS
  FilterLogEvents quota (``live_output.py``, which also runs alone);
- release mode on 10 instances: the time from "health check failed" (on the instance) to "the
  previous release is live again" on every instance (the automatic switch back), against a new pipe
  run that deploys a release the instances still have (``RELEASE: <id>``, what a person would start).

- stage, then roll: rolling release deploys of 8 instances behind the load balancer with traffic, one
  at a time and in 25 % batches, staged and with ``STAGE_FIRST: 'false'`` (wall time, each
  instance's time out of service, failed requests), and going back (``RELEASE: previous``, and
  ``ROLLBACK_BATCH_SIZE: max``) against a fresh deploy (``staging.py``, which also runs alone).

Zero-downtime rollouts behind a load balancer (failed requests with and without draining, seconds
per batch) are measured by ``bench/load_balancer.py``.
"""

from __future__ import annotations

import argparse
import datetime
import io
import math
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "test")]

from live_output import live_output_rows  # noqa: E402
from standin import StandIn  # noqa: E402
from table import print_table  # noqa: E402

PIPE = ROOT / "pipe" / "pipe.py"
EXIT_STAMP = 'date +%s.%N > "$HOME/exit-stamp"'


def run_pipe(env: dict[str, str]) -> float:
    """Run the pipe with its output discarded; return the wall time at which it exited."""
    done = subprocess.run([sys.executable, str(PIPE)], env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"the pipe failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return time.time()


def bench_env(aws: StandIn, clone: str, **variables: str) -> dict[str, str]:
    return aws.pipe_env(NO_COLOR="1", BITBUCKET_CLONE_DIR=clone, **variables)


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
    """Peak RSS of the pipe while one instance prints ``megabytes`` MB."""
    (instance_id,) = aws.launch(1)
    command = f"head -c {megabytes}M /dev/zero | tr '\\0' x | fold -w 999"
    return _peak_rss(bench_env(aws, clone, INSTANCE_IDS=instance_id, COMMANDS=command, EXECUTION_TIMEOUT="1800"))


def peak_rss_fleet_mb(aws: StandIn, clone: str, count: int) -> float:
    """Peak RSS of the pipe while it follows ``count`` instances that each print a few lines."""
    ids = aws.launch(count)
    command = 'for n in 1 2 3; do echo "line $n"; sleep 1; done'
    return _peak_rss(bench_env(aws, clone, INSTANCE_IDS="\n".join(ids), COMMANDS=command, MAX_CONCURRENCY="100%"))


def _peak_rss(env: dict[str, str]) -> float:
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


def _artifact(clone: str, version: str) -> str:
    data = f"{version}\n".encode()
    with tarfile.open(Path(clone) / "app.tgz", "w:gz") as archive:
        info = tarfile.TarInfo("version.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return "app.tgz"


def rollback_seconds(aws: StandIn, clone: str, runs: int, count: int = 10) -> tuple[list[float], list[float]]:
    """Release mode: health check failure -> previous release live again on all ``count`` instances."""
    automatic, manual = [], []
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    aws.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": aws.region})
    for run in range(runs):
        ids = aws.launch(count)
        service = f"bench{uuid.uuid4().hex[:6]}"
        common = {
            "INSTANCE_IDS": " ".join(ids),
            "ENVIRONMENT": "bench",
            "SERVICE": service,
            "ARTIFACT_BUCKET": bucket,
            "APP_DIR": "/srv/app",
            # each activation stamps the time it made a release live
            "ACTIVATE_COMMANDS": 'echo "$(date +%s.%N) $(cat version.txt)" >> /srv/app/activations',
        }
        run_pipe(bench_env(aws, clone, **common, ARTIFACT=_artifact(clone, "A"), BITBUCKET_BUILD_NUMBER=f"{run}1"))
        failing = {
            **common,
            "ARTIFACT": _artifact(clone, "B"),
            "BITBUCKET_BUILD_NUMBER": f"{run}2",
            "HEALTHCHECK_COMMANDS": (
                f'[ "$AWS_SSM_INSTANCE_ID" != "{ids[0]}" ] || {{ date +%s.%N > /srv/app/failed; exit 1; }}'
            ),
            "HEALTHCHECK_RETRIES": "1",
        }
        subprocess.run(
            [sys.executable, str(PIPE)],
            env=bench_env(aws, clone, **failing),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        failed = float(aws.instance_path(ids[0], "/srv/app/failed").read_text())
        live_again = max(
            float(aws.instance_path(i, "/srv/app/activations").read_text().splitlines()[-1].split()[0]) for i in ids
        )
        automatic.append(live_again - failed)
        started = time.time()
        release_a = f"{int(f'{run}1'):06d}-0123456"  # live again after the switch back: go to it by id
        run_pipe(bench_env(aws, clone, **common, RELEASE=release_a, BITBUCKET_BUILD_NUMBER=f"{run}3"))
        manual.append(time.time() - started)
    return automatic, manual


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs, smaller fleets and output")
    parser.add_argument("--live-seconds", type=float, nargs="+", help="how long chatty instances print (20 60)")
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="fleets for the calls per deploy (default 1 50; 500 2000 take minutes)"
    )
    args = parser.parse_args()
    live_seconds = args.live_seconds or ([10] if args.quick else [20, 60])
    runs = 3 if args.quick else 10
    fleets = (1, 50, 200) if args.quick else (1, 50, 500)
    outputs = (5, 20) if args.quick else (10, 100)
    resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as folder, StandIn(upload_interval=0.2) as aws:
        clone = str(Path(folder) / "clone")
        os.makedirs(clone)
        from phase_end import rows as phase_end_rows  # it imports this module's helpers

        rows.extend(phase_end_rows(aws, clone, 4 if args.quick else 10, [1, 10]))
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
        fleet = 200 if args.quick else 500
        rows.append(
            (
                f"peak RSS following {fleet} instances",
                f"{peak_rss_fleet_mb(aws, clone, fleet):.0f} MB",
                "-",
                "<= 100 MB",
            )
        )
        automatic, manual = rollback_seconds(aws, clone, min(runs, 3))
        rows.append(
            (
                f"release rollback, 10 instances, min/median/max of {len(automatic)}",
                "/".join(f"{value:.2f}" for value in (min(automatic), statistics.median(automatic), max(automatic)))
                + " s (health check failed -> previous live)",
                "/".join(f"{value:.2f}" for value in (min(manual), statistics.median(manual), max(manual)))
                + " s (a new run, RELEASE: <id>)",
                "< 5 s",
            )
        )
        rows.extend(live_output_rows(aws, clone, live_seconds, [10] if args.quick else [4, 10]))
        from control_plane import rows as control_plane_rows  # it imports this module's helpers

        rows.extend(control_plane_rows(aws, clone, args.sizes or [1, 50], 5.0))
        from staging import rows as staging_rows

        rows.extend(staging_rows(aws, Path(clone), 1 if args.quick else 3))
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
