"""The pipe's cost on the control plane, on the local stand-in.

    .venv/bin/python bench/control_plane.py                     # 1 and 50 instances
    .venv/bin/python bench/control_plane.py --sizes 1 50 500 2000 --seconds 30

Measured, each with its baseline in the same run:
- every API call of one deploy, by API and by phase (before SendCommand / after), at each size,
  with TARGETS and with INSTANCE_IDS; calls per second over the deploy. Baseline: what polling each
  instance with GetCommandInvocation once a second would cost over the same time.

How fast the pipe notices the end of a phase is measured by ``phase_end.py``.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "test"), str(ROOT / "bench")]

from standin import StandIn  # noqa: E402
from table import print_table  # noqa: E402

from bench import bench_env, run_pipe  # noqa: E402

Row = tuple[str, str, str, str]


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


def rows(aws: StandIn, clone: str, sizes: list[int], seconds: float) -> list[Row]:
    return call_rows(aws, clone, sizes, seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 50], help="fleet sizes (500 2000: minutes)")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each instance runs")
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (16384, 16384))
    with tempfile.TemporaryDirectory() as folder, StandIn(upload_interval=0.2) as aws:
        clone = str(Path(folder) / "clone")
        os.makedirs(clone)
        table = rows(aws, clone, args.sizes, args.seconds)
    print_table(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
