"""Stage, then roll: rolling release deploys through the stand-in's real data plane; prints a table
(no pass/fail).

    .venv/bin/python bench/staging.py            # 3 runs
    .venv/bin/python bench/staging.py --runs 1   # also bench/bench.py's --quick form
    .venv/bin/python bench/staging.py --runs 3 --real-clock-runs 2   # and going back at ELB clock 1.0

Each run launches 8 instances, each running the users' Node.js app (``instance_app.py``) behind a
target group (the real HAProxy, 4 HTTP clients, half on keep-alive connections), and ships one
release to them (not measured). Then, each a new release of the same service with an install
(``COMMANDS``) of about 5 s and an activation that restarts the app (down for about 1 s):

- one instance at a time (``BATCH_SIZE: 1``) and in 25 % batches, each with staging (the default)
  and with ``STAGE_FIRST: 'false'`` (the baseline, in the same run);
- going back: ``RELEASE: previous`` in 25 % batches (each batch only a switch), against the fresh
  25 % deploy measured just before; then ``RELEASE: <id>`` of an older release with
  ``ROLLBACK_BATCH_SIZE: max`` (MIN_HEALTHY 50 %: two batches of 4).

Figures: the pipe's wall time; each instance's seconds out of service (deregistered until healthy
again, from the result file); failed requests (non-2xx answers, connection errors, timeouts, as the
clients saw them); the staging phase's seconds; and each deploy's wall time against the staging
plus the batches' time out of service, a rollback's against its batches' drain-plus-health windows.
The stand-in's ELB clock runs at 0.1: the group's 20-s deregistration delay lasts 2 s and a 5-s
health-check interval 0.5 s, while the switch and the app's restart run in real time, so at 0.1 the
switch weighs ten times what it weighs against AWS's windows. ``--real-clock-runs N`` also measures
going back (``RELEASE: previous``, 25 % batches) N times at ELB clock 1.0 with the settings of an
AWS group (``REAL_CLOCK_GROUP``: a 30-s deregistration delay, the issue's example; health checks
every 5 s, healthy after 2 in a row, unhealthy after 2, as the 0.1 group has them): about 40 s a
batch, so the fleet's two releases are shipped at 0.1 and only the way back runs at 1.0.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "test")]

from standin import StandIn  # noqa: E402
from standin.instance_app import RESTART  # noqa: E402
from table import print_table  # noqa: E402

PIPE = ROOT / "pipe" / "pipe.py"
FLEET = 8
INSTALL = "sleep 5"  # COMMANDS: an install of about 5 s (npm ci stands here)
COMMIT = "0123456789abcdef0123456789abcdef01234567"
RUNS = ("1", "25%")  # BATCH_SIZE: one at a time, a quarter of the fleet
SCALED_CLOCK = 0.1  # the stand-in's ELB clock for every deploy but --real-clock-runs' rollbacks


@dataclass(frozen=True)
class GroupSettings:
    """The bench group's: health checks every ``interval`` s, healthy after ``healthy_threshold`` in
    a row, unhealthy after ``unhealthy_threshold`` (create_target_group's defaults)."""

    deregistration_delay: int
    interval: int = 5
    healthy_threshold: int = 2
    unhealthy_threshold: int = 2


SCALED_GROUP = GroupSettings(deregistration_delay=20)
REAL_CLOCK_GROUP = GroupSettings(deregistration_delay=30)  # at ELB clock 1.0: the 30-s delay
STEPS = ("drain", "deploy", "healthy")  # of each batch, from the result file


@dataclass
class Deploy:
    """One pipe run under traffic, as measured."""

    wall: float
    requests: int
    failed: int
    stage: float  # the staging phase's seconds (0 without one)
    out_of_service: list[float]  # each instance's, from the result file
    batches: list[dict[str, float]]  # each batch's seconds: drain, deploy, healthy, out_of_service

    @property
    def windows(self) -> float:
        """The batches' time out of service, one after another."""
        return sum(batch.get("out_of_service") or 0.0 for batch in self.batches)

    @property
    def drain_and_health(self) -> float:
        """The batches' drain-plus-health windows: what a rollback cannot avoid."""
        return sum((batch.get("drain") or 0.0) + (batch.get("healthy") or 0.0) for batch in self.batches)


class Service:
    """8 instances behind one target group, one ledger, one bucket: each ``deploy`` a pipe run."""

    def __init__(self, aws: StandIn, clone: Path, bucket: str, group: GroupSettings = SCALED_GROUP) -> None:
        self.aws, self.clone, self.bucket = aws, clone, bucket
        self.ids = aws.launch(FLEET)
        for instance_id in self.ids:
            aws.app_up(instance_id)
        self.name = f"stage-{uuid.uuid4().hex[:8]}"
        self.arn = aws.create_target_group(
            self.name,
            self.ids,
            deregistration_delay=group.deregistration_delay,
            interval=group.interval,
            healthy_threshold=group.healthy_threshold,
            unhealthy_threshold=group.unhealthy_threshold,
        )
        aws.wait_target_states(self.arn, self.ids, "healthy", timeout=60)
        self.build = 0

    def release_id(self, build: int) -> str:
        return f"{build:06d}-{COMMIT[:7]}"

    def deploy(self, **variables: str) -> Deploy:
        """A new build (or ``RELEASE``) rolled out under traffic."""
        self.build += 1
        result = self.clone / f"{self.name}-{self.build}.json"
        release = {"RELEASE": variables.pop("RELEASE")} if "RELEASE" in variables else {"ARTIFACT": self._artifact()}
        env = self.aws.pipe_env(
            NO_COLOR="1",
            BITBUCKET_CLONE_DIR=str(self.clone),
            BITBUCKET_BUILD_NUMBER=str(self.build),
            BITBUCKET_COMMIT=COMMIT,
            INSTANCE_IDS=" ".join(self.ids),
            TARGET_GROUPS=self.name,
            SERVICE=self.name,
            ENVIRONMENT="bench",
            ARTIFACT_BUCKET=self.bucket,
            APP_DIR="/srv/app",
            COMMANDS=INSTALL,
            ACTIVATE_COMMANDS=RESTART,
            RESULT_FILE=str(result),
            **release,
            **variables,
        )
        started = time.monotonic()
        with self.aws.traffic(self.arn) as traffic:
            done = subprocess.run([sys.executable, str(PIPE)], env=env, cwd=ROOT, capture_output=True, text=True)
        wall = time.monotonic() - started
        if done.returncode:
            raise RuntimeError(f"the pipe failed:\n{done.stdout[-4000:]}{done.stderr[-2000:]}")
        document = json.loads(result.read_text())
        summary = traffic.summary()
        seconds = document.get("out_of_service_seconds") or {}
        return Deploy(
            wall=wall,
            requests=summary.requests,
            failed=summary.failed,
            stage=float(document.get("stage_seconds") or 0.0),
            out_of_service=[float(seconds.get(i, 0.0)) for i in self.ids],
            batches=[batch["seconds"] for batch in document.get("batches") or []],
        )

    def _artifact(self) -> str:
        """A build of its own (its own bytes, so its own artifact and release)."""
        data = f"build {self.build}\n".encode()
        name = f"app-{self.build}.tgz"
        with tarfile.open(self.clone / name, "w:gz") as archive:
            info = tarfile.TarInfo("version.txt")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        return name


@dataclass
class Round:
    """One run's deploys: by (BATCH_SIZE, staged), and the two ways back."""

    deploys: dict[tuple[str, bool], Deploy]
    back: Deploy  # RELEASE: previous, 25 % batches
    back_largest: Deploy  # RELEASE: <id>, ROLLBACK_BATCH_SIZE max


def one_round(aws: StandIn, clone: Path, bucket: str) -> Round:
    service = Service(aws, clone, bucket)
    service.deploy(BATCH_SIZE="25%")  # the release live before: not measured
    deploys = {}
    for size in RUNS:
        for staged in (False, True):  # the fresh 25 % deploy the rollback is compared with comes last
            deploys[size, staged] = service.deploy(BATCH_SIZE=size, STAGE_FIRST="true" if staged else "false")
    back = service.deploy(RELEASE="previous", BATCH_SIZE="25%")
    older = service.release_id(service.build - 3)  # still on the instances (KEEP_RELEASES 5)
    back_largest = service.deploy(RELEASE=older, BATCH_SIZE="25%", ROLLBACK_BATCH_SIZE="max", MIN_HEALTHY="50%")
    return Round(deploys, back, back_largest)


def real_clock_round(aws: StandIn, clone: Path, bucket: str) -> Deploy:
    """Going back once at ELB clock 1.0, in a group with an AWS group's settings: the two releases
    shipped at the scaled clock (not measured), then ``RELEASE: previous`` in 25 % batches."""
    service = Service(aws, clone, bucket, REAL_CLOCK_GROUP)
    service.deploy(BATCH_SIZE="25%")
    service.deploy(BATCH_SIZE="25%")
    aws.elb_time_scale = 1.0
    try:
        return service.deploy(RELEASE="previous", BATCH_SIZE="25%")
    finally:
        aws.elb_time_scale = SCALED_CLOCK


def spread(values: Iterable[float], unit: str = " s", digits: int = 1) -> str:
    items = list(values)
    return "/".join(f"{v:.{digits}f}" for v in (min(items), statistics.median(items), max(items))) + unit


def rows(aws: StandIn, clone: Path, runs: int, real_clock_runs: int = 0) -> list[tuple[str, str, str, str]]:
    """The figures of ``runs`` rounds (and of ``real_clock_runs`` rollbacks at ELB clock 1.0), as
    table rows (measure, staging, baseline, target)."""
    scale, aws.elb_time_scale = aws.elb_time_scale, SCALED_CLOCK
    bucket = f"stage-{uuid.uuid4().hex[:8]}"
    aws.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": aws.region})
    try:
        rounds = [one_round(aws, clone, bucket) for _ in range(runs)]
        real = [real_clock_round(aws, clone, bucket) for _ in range(real_clock_runs)]
    finally:
        aws.elb_time_scale = scale
    table: list[tuple[str, str, str, str]] = []
    every = [d for r in rounds for d in (*r.deploys.values(), r.back, r.back_largest)] + real
    staged_all = [d for r in rounds for (_, staged), d in r.deploys.items() if staged]
    for size in RUNS:
        how = "one at a time" if size == "1" else "25 % batches"
        staged = [r.deploys[size, True] for r in rounds]
        baseline = [r.deploys[size, False] for r in rounds]
        table += [
            (f"{how}: wall time", spread(d.wall for d in staged), spread(d.wall for d in baseline), "-"),
            (
                f"{how}: out of service per instance ({FLEET} x {runs})",
                spread(s for d in staged for s in d.out_of_service),
                spread(s for d in baseline for s in d.out_of_service),
                "<= drain + switch + health (no install)",
            ),
            (f"{how}: staging phase", spread(d.stage for d in staged), "-", "-"),
            (
                f"{how}: wall / (staging + batches out of service)",
                spread((d.wall / (d.stage + d.windows) for d in staged), "", 2),
                spread((d.wall / d.windows for d in baseline), "", 2),
                "~1 (<= staging + windows)",
            ),
        ]
    fresh = [r.deploys["25%", True] for r in rounds]
    table += [
        (
            "per batch, staged: drain / deploy (switch) / healthy",
            " ".join(spread(b.get(step) or 0.0 for d in staged_all for b in d.batches) for step in STEPS),
            "-",
            "-",
        ),
        (
            "rollback (RELEASE: previous, 25 %): wall time",
            spread(r.back.wall for r in rounds),
            spread(d.wall for d in fresh) + " (fresh deploy, 25 %, staged)",
            "-",
        ),
        (
            "rollback wall / its batches' drain + health",
            spread((r.back.wall / r.back.drain_and_health for r in rounds), "", 2),
            "-",
            "<= 1.2",
        ),
        (
            "rollback: staging (already there) / batches out of service / the rest",
            " ".join(
                (
                    spread(r.back.stage for r in rounds),
                    spread(r.back.windows for r in rounds),
                    spread(r.back.wall - r.back.stage - r.back.windows for r in rounds),
                )
            ),
            "-",
            "-",
        ),
        (
            "rollback, ROLLBACK_BATCH_SIZE max (2 x 4): wall time",
            spread(r.back_largest.wall for r in rounds),
            spread(r.back.wall for r in rounds) + " (25 % batches)",
            "-",
        ),
    ]
    if real:
        table += real_clock_rows(real)
    table += [
        (
            f"failed requests, all {len(every)} deploys",
            spread((float(d.failed) for d in every), "", 0)
            + f" of ~{statistics.median(d.requests for d in every):.0f}"
            + " each",
            "-",
            "0",
        ),
    ]
    return table


def real_clock_rows(real: list[Deploy]) -> list[tuple[str, str, str, str]]:
    group = REAL_CLOCK_GROUP
    how = (
        f"at ELB clock 1.0 ({group.deregistration_delay}-s deregistration delay, checks every "
        f"{group.interval} s, healthy after {group.healthy_threshold}; {len(real)} runs)"
    )
    return [
        (f"rollback (RELEASE: previous, 25 %) {how}: wall time", spread(d.wall for d in real), "-", "-"),
        (
            "the same: wall / its batches' drain + health",
            spread((d.wall / d.drain_and_health for d in real), "", 2),
            "-",
            "<= 1.2",
        ),
        (
            "the same, per batch: drain / deploy (switch) / healthy",
            " ".join(spread(b.get(step) or 0.0 for d in real for b in d.batches) for step in STEPS),
            "-",
            "-",
        ),
        (
            "the same: staging (already there) / batches out of service / the rest",
            " ".join(
                (
                    spread(d.stage for d in real),
                    spread(d.windows for d in real),
                    spread(d.wall - d.stage - d.windows for d in real),
                )
            ),
            "-",
            "-",
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--real-clock-runs", type=int, default=0, help="rollbacks at ELB clock 1.0 (~3 min each)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, StandIn() as aws:
        clone = Path(folder) / "clone"
        clone.mkdir()
        table = rows(aws, clone, args.runs, args.real_clock_runs)
    print_table(table, ("measure", "staging (STAGE_FIRST default)", "baseline (same run)", "target"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
