"""Live output within CloudWatch Logs' quotas: one Live Tail session per phase reads each event about
once; FilterLogEvents when the sessions are used up; many deploys at once and no throttled read."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from standin import StandIn
from standin.live_tail import LogsReads
from support import PipeRun, run_pipe

CHATTY = 'for n in $(seq 1 {lines}); do echo "line $n of $(hostname)-{tag}"; sleep 0.05; done'
PRINTED = re.compile(r"Live output from \S+: read (\d+) events \((\d+) bytes\), printed (\d+) \((\d+) bytes\)")


@pytest.fixture
def reads(standin: StandIn) -> Iterator[LogsReads]:
    standin.logs_reads.reset()
    yield standin.logs_reads
    standin.logs_reads.reset()


def chatty_env(standin: StandIn, instance_ids: list[str], lines: int, group: str, **extra: str) -> dict[str, str]:
    return standin.pipe_env(
        INSTANCE_IDS=",".join(instance_ids),
        COMMANDS=CHATTY.format(lines=lines, tag=uuid.uuid4().hex[:6]),
        CLOUDWATCH_LOG_GROUP=group,
        DEBUG="true",
        **extra,
    )


def existing_group(standin: StandIn) -> str:
    """A log group that exists before the deploy, as it does in an account after the first one."""
    group = f"/aws/ssm/live-{uuid.uuid4().hex[:8]}"
    standin.client("logs").create_log_group(logGroupName=group)
    return group


def printed_events(run: PipeRun) -> tuple[int, int]:
    """(events, bytes) the pipe printed from CloudWatch, from its debug line."""
    found = PRINTED.search(run.output)
    assert found, run.output
    return int(found.group(3)), int(found.group(4))


def test_chatty_instances_stream_through_live_tail_reading_each_event_about_once(
    standin: StandIn, reads: LogsReads
) -> None:
    instance_ids = standin.launch(5)
    run = run_pipe(chatty_env(standin, instance_ids, 60, existing_group(standin)))

    assert run.returncode == 0, run.output
    for instance_id in instance_ids:
        assert f"{instance_id} | line 60 of" in run.output
        assert f"---- output of {instance_id}" not in run.output  # nothing had to come from SSM's copy
    events, size = printed_events(run)
    counters = reads.counters
    served = counters.tail_events + counters.filter_events
    assert events == 5 * 60
    assert served / events <= 1.5  # today's polls read 11-15x
    assert (counters.tail_bytes + counters.filter_bytes) / size <= 1.5
    assert counters.sessions_started == 1 and counters.tail_events >= events / 2  # mostly pushed, not polled
    assert counters.filter_calls <= 2  # one read of what came before the session (and a drain read)
    assert wait_sessions_closed(reads)  # the pipe closed its session: sessions are billed while open


def wait_sessions_closed(reads: LogsReads, seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while reads.active_sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    return reads.active_sessions == 0


def test_with_every_live_tail_session_in_use_it_says_so_and_polls_filter_log_events(
    standin: StandIn, reads: LogsReads
) -> None:
    reads.configure(concurrent_sessions=0)
    instance_ids = standin.launch(2)
    run = run_pipe(chatty_env(standin, instance_ids, 20, existing_group(standin)))

    assert run.returncode == 0, run.output
    assert run.output.count("Live output falls back to FilterLogEvents polls") == 1
    assert "concurrent CloudWatch Logs Live Tail sessions are all in use" in run.output
    for instance_id in instance_ids:
        assert f"{instance_id} | line 20 of" in run.output
    assert reads.counters.sessions_refused == 1 and reads.counters.filter_calls >= 1
    # each line shown once: polled live, or (what the once-a-second polls had not reached when the
    # command ended) from SSM's copy at the end
    for instance_id in instance_ids:
        for n in range(1, 21):
            assert len(re.findall(rf"{instance_id} \| line {n} of ", run.output)) == 1, (instance_id, n)
    assert 0 < printed_events(run)[0] <= 2 * 20


@pytest.mark.slow
def test_ten_concurrent_deploys_stream_live_with_no_throttled_call(standin: StandIn, reads: LogsReads) -> None:
    """Ten deploys of two chatty instances each, started 0.3 s apart (as pipelines are, never within
    the same instant), all running at once against the 5 TPS FilterLogEvents bucket."""
    group = existing_group(standin)
    fleets = [standin.launch(2) for _ in range(10)]
    runs: list[PipeRun | None] = [None] * len(fleets)

    def deploy(index: int) -> None:
        runs[index] = run_pipe(chatty_env(standin, fleets[index], 80, group), timeout=240)

    threads = [threading.Thread(target=deploy, args=(index,)) for index in range(len(fleets))]
    for thread in threads:
        thread.start()
        time.sleep(0.3)
    for thread in threads:
        thread.join()

    for run, instance_ids in zip(runs, fleets, strict=True):
        assert run is not None and run.returncode == 0, run and run.output
        assert "falls back" not in run.output and "Live output is off" not in run.output
        for instance_id in instance_ids:
            assert f"{instance_id} | line 80 of" in run.output
    counters = reads.counters
    assert counters.filter_throttled == 0 and counters.start_throttled == 0 and counters.sessions_refused == 0
    assert counters.sessions_peak >= 2  # the deploys did overlap
    assert counters.sessions_started == 10
