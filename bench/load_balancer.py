"""Zero-downtime figures through the stand-in's real data plane; prints a table (no pass/fail).

    .venv/bin/python bench/load_balancer.py            # 3 runs of each
    .venv/bin/python bench/load_balancer.py --runs 1

Each run deploys 8 instances, each running the users' Node.js app (``instance_app.py``), whose
deploy restarts the app (down for about 1 s), while real HTTP clients send requests through the
target group's HAProxy (4 workers, half on keep-alive connections): once with TARGET_GROUPS
(BATCH_SIZE 25 %, MIN_HEALTHY 75 %, BAKE_TIME 2 s), once paced by MAX_CONCURRENCY 2 alone (the
baseline, same fleet size, same run). It reports the failed requests of both (non-2xx answers,
connection errors, timeouts, as the clients saw them), each instance's seconds out of service (not
in the load balancer's routing set, or routed to while its app does not answer, sampled every 50
ms), the deploy's wall time, and the seconds each batch spent draining, deploying, coming back
healthy and baking (from the result file). The stand-in's ELB clock runs at 0.1: a 5-s health-check
interval lasts 0.5 s and the groups' 20-s deregistration delay lasts 2 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "test")]

from standin import StandIn  # noqa: E402
from standin.instance_app import RESTART  # noqa: E402
from table import print_table  # noqa: E402

PIPE = ROOT / "pipe" / "pipe.py"
FLEET = 8
STEPS = ("drain", "deploy", "healthy", "bake")
SAMPLE = 0.05  # seconds between looks at the routing set


def answers(address: str | None) -> bool:
    """Whether the app at ``address`` answers its health check now."""
    if address is None:
        return False
    try:
        with urllib.request.urlopen(f"http://{address}:3000/health", timeout=0.5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class OutOfService:
    """Each instance's seconds out of service, sampled in a thread: not in the load balancer's
    routing set, or routed to while its app does not answer."""

    def __init__(self, aws: StandIn, arn: str, ids: list[str]) -> None:
        self._aws, self._arn, self._ids = aws, arn, ids
        self.seconds: dict[str, float] = defaultdict(float)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> OutOfService:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(SAMPLE):
            routed = set(self._aws.load_balancer.in_service(self._arn))
            now = time.monotonic()
            for instance_id in self._ids:
                if instance_id not in routed or not answers(self._aws.address_of(instance_id)):
                    self.seconds[instance_id] += now - last
            last = now


def deploy_under_traffic(
    aws: StandIn, clone: Path, draining: bool
) -> tuple[int, int, float, list[float], list[dict[str, float]]]:
    """One deploy of a fresh fleet; returns (requests, failed, wall seconds, each instance's seconds
    out of service, per-batch timings)."""
    ids = aws.launch(FLEET)
    for instance_id in ids:
        aws.app_up(instance_id)
    group = f"bench-{uuid.uuid4().hex[:8]}"
    arn = aws.create_target_group(group, ids, deregistration_delay=20)
    aws.wait_target_states(arn, ids, "healthy", timeout=60)
    result = clone / f"{group}.json"
    variables = {"INSTANCE_IDS": " ".join(ids), "COMMANDS": RESTART, "RESULT_FILE": str(result)}
    if draining:
        variables |= {"TARGET_GROUPS": group, "SERVICE": group, "BATCH_SIZE": "25%", "MIN_HEALTHY": "75%"}
        variables |= {"BAKE_TIME": "2"}
    else:
        variables |= {"MAX_CONCURRENCY": "2"}
    env = aws.pipe_env(NO_COLOR="1", BITBUCKET_CLONE_DIR=str(clone), **variables)
    started = time.monotonic()
    with aws.traffic(arn) as traffic, OutOfService(aws, arn, ids) as out:
        done = subprocess.run([sys.executable, str(PIPE)], env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode:
        raise RuntimeError(f"the pipe failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    batches = json.loads(result.read_text()).get("batches") or []
    summary = traffic.summary()
    outside = [out.seconds.get(i, 0.0) for i in ids]
    return summary.requests, summary.failed, wall, outside, [b["seconds"] for b in batches]


def spread(values: list[float], unit: str = "", digits: int = 0) -> str:
    return "/".join(f"{v:.{digits}f}" for v in (min(values), statistics.median(values), max(values))) + unit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, StandIn() as aws:
        aws.elb_time_scale = 0.1
        clone = Path(folder) / "clone"
        clone.mkdir()
        rolling = [deploy_under_traffic(aws, clone, draining=True) for _ in range(args.runs)]
        paced = [deploy_under_traffic(aws, clone, draining=False) for _ in range(args.runs)]
    rows = [
        (
            f"failed requests, {FLEET} instances, min/median/max of {args.runs}",
            spread([float(r[1]) for r in rolling]) + f" of ~{statistics.median(r[0] for r in rolling):.0f}",
            spread([float(r[1]) for r in paced]) + f" of ~{statistics.median(r[0] for r in paced):.0f}",
            "0",
        ),
        (
            f"out of service per instance (of {FLEET} x {args.runs})",
            spread([s for r in rolling for s in r[3]], " s", 1),
            spread([s for r in paced for s in r[3]], " s", 1),
            "-",
        ),
        ("deploy wall time", spread([r[2] for r in rolling], " s", 1), spread([r[2] for r in paced], " s", 1), "-"),
    ]
    for step in STEPS:
        values = [b[step] for r in rolling for b in r[4] if b.get(step) is not None]
        if values:
            rows.append((f"per batch: {step} (of 4 batches x {args.runs})", spread(values, " s", 1), "-", "-"))
    header = ("measure", "TARGET_GROUPS, 4 batches", "MAX_CONCURRENCY 2 (baseline)", "target")
    print_table(rows, header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
