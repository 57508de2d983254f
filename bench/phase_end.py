"""The end of a phase: from the remote command's exit to the pipe's exit, on the local stand-in (a
section of bench.py, or alone):

    .venv/bin/python bench/phase_end.py --rounds 10 --fleets 1 10

Each round runs one duration, spread over 4-9 s so that no round is phase-locked to a 1 s poll
(the golden ratio's multiples, modulo 1), on every fleet size: the pipe deploys ``sleep <d>`` and a
stamp of the exit time to every instance (the phase ends with the last one), then, in the same
round on the same instances, the baseline sends the same command and polls each instance with
GetCommandInvocation every second until all are final (the way a plain poller would). Reported:
min / median / max over the rounds, and how much of the pipe's time came after its last AWS call
(``StandIn.last_call_at``: what it does after it knows, down to its process exit).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "test"), str(ROOT / "bench")]

from standin import StandIn  # noqa: E402
from table import print_table  # noqa: E402

from bench import EXIT_STAMP, bench_env, run_pipe  # noqa: E402

Row = tuple[str, str, str, str]
FINAL = frozenset({"Success", "Failed", "TimedOut", "Cancelled"})
GOLDEN = (5**0.5 - 1) / 2
POLL_SECONDS = 1.0  # the baseline's period


def durations(rounds: int, shortest: float = 4.0, longest: float = 9.0) -> list[float]:
    """``rounds`` durations spread over [shortest, longest) with fractional parts spread over the
    poll period: a low-discrepancy sequence, so neither side is phase-locked to its polls."""
    return [shortest + (longest - shortest) * ((index * GOLDEN) % 1.0) for index in range(rounds)]


def spread(values: list[float]) -> str:
    return "/".join(f"{value:.2f}" for value in (min(values), statistics.median(values), max(values)))


@dataclass
class Figures:
    pipe: list[float] = field(default_factory=list)  # exit of the last instance's command -> pipe's exit
    after_last_call: list[float] = field(default_factory=list)  # the pipe's last AWS call -> its exit
    poller: list[float] = field(default_factory=list)  # exit -> a 1 s GetCommandInvocation poller knows


def _last_exit(aws: StandIn, instance_ids: list[str]) -> float:
    return max(float((aws.instance(i).home / "exit-stamp").read_text()) for i in instance_ids)


def _poller(ssm: Any, instance_ids: list[str], script: list[str]) -> float:
    """Send ``script`` and poll each instance every second; return when all were seen final."""
    command_id = ssm.send_command(
        InstanceIds=instance_ids, DocumentName="AWS-RunShellScript", Parameters={"commands": script}
    )["Command"]["CommandId"]
    waiting = set(instance_ids)
    while waiting:
        time.sleep(POLL_SECONDS)
        for instance_id in sorted(waiting):
            try:
                item = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
            except ssm.exceptions.InvocationDoesNotExist:
                continue
            if item["Status"] in FINAL:
                waiting.discard(instance_id)
    return time.time()


def measure(aws: StandIn, clone: str, rounds: int, fleets: list[int]) -> dict[int, Figures]:
    figures = {count: Figures() for count in fleets}
    ssm = aws.client("ssm")
    instances = {count: aws.launch(count, name=f"bench-phase-end-{count}") for count in fleets}
    for duration in durations(rounds):
        script = [f"sleep {duration:.3f}", EXIT_STAMP]
        for count, instance_ids in instances.items():
            env = bench_env(
                aws, clone, INSTANCE_IDS="\n".join(instance_ids), MAX_CONCURRENCY="100%", COMMANDS="\n".join(script)
            )
            exited = run_pipe(env)
            figures[count].pipe.append(exited - _last_exit(aws, instance_ids))
            figures[count].after_last_call.append(exited - aws.last_call_at)
            known = _poller(ssm, instance_ids, script)
            figures[count].poller.append(known - _last_exit(aws, instance_ids))
    return figures


def rows(aws: StandIn, clone: str, rounds: int, fleets: list[int]) -> list[Row]:
    table: list[Row] = []
    for count, measured in measure(aws, clone, rounds, fleets).items():
        table.append(
            (
                f"phase end, {count} instance(s), durations 4-9 s, min/median/max of {rounds}",
                f"{spread(measured.pipe)} s ({spread(measured.after_last_call)} s after its last call)",
                f"{spread(measured.poller)} s (GetCommandInvocation every 1 s)",
                "median <= 0.5 s and <= the poller's",
            )
        )
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="rounds (one duration each)")
    parser.add_argument("--fleets", type=int, nargs="+", default=[1, 10], help="fleet sizes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, StandIn(upload_interval=0.2) as aws:
        clone = str(Path(folder) / "clone")
        os.makedirs(clone)
        table = rows(aws, clone, args.rounds, args.fleets)
    print_table(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
