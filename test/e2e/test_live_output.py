"""Live output within CloudWatch Logs' quotas: one Live Tail session per phase reads each event about
once; FilterLogEvents when the sessions are used up; a throttled StartLiveTail tried again later;
many deploys at once, each streaming live without polling."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from itertools import pairwise

import pytest
from standin import StandIn
from standin.live_tail import LogsReads, StartAttempt
from support import PipeRun, run_pipe

from pipe.apply.watch.live_starts import THROTTLED_RETRY_SECONDS

CHATTY = 'for n in $(seq 1 {lines}); do echo "line $n of $(hostname)-{tag}"; sleep {pause}; done'
# 80 lines 0.125 s apart: 10 s, longer than a session start throttled twice may wait (2 + 4 s at most,
# each plus a poll), so the session starts while the command still prints (a slow machine slows both)
LONG_LINES, LONG_PAUSE = 80, 0.125
PRINTED = re.compile(r"Live output from \S+: read (\d+) events \((\d+) bytes\), printed (\d+) \((\d+) bytes\)")
READS = re.compile(r"(\d+) FilterLogEvents calls, (\d+) Live Tail sessions")


@pytest.fixture
def reads(standin: StandIn) -> Iterator[LogsReads]:
    standin.logs_reads.reset()
    yield standin.logs_reads
    standin.logs_reads.reset()


def chatty_env(
    standin: StandIn, instance_ids: list[str], lines: int, group: str, pause: float = 0.05, **extra: str
) -> dict[str, str]:
    return standin.pipe_env(
        INSTANCE_IDS=",".join(instance_ids),
        COMMANDS=CHATTY.format(lines=lines, tag=uuid.uuid4().hex[:6], pause=pause),
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


def pipe_reads(run: PipeRun) -> tuple[int, int]:
    """(FilterLogEvents calls, Live Tail sessions) the pipe made itself (not counting the SDK's retries)."""
    found = READS.search(run.output)
    assert found, run.output
    return int(found.group(1)), int(found.group(2))


def assert_each_line_once(run: PipeRun, instance_ids: list[str], lines: int) -> None:
    for instance_id in instance_ids:
        for n in range(1, lines + 1):
            assert len(re.findall(rf"{instance_id} \| line {n} of ", run.output)) == 1, (instance_id, n, run.output)


def starts_by_deploy(attempts: list[StartAttempt]) -> dict[tuple[str, ...], list[StartAttempt]]:
    """Each deploy's StartLiveTail calls, in order (a deploy's prefixes are its command ids)."""
    found: dict[tuple[str, ...], list[StartAttempt]] = {}
    for attempt in attempts:
        found.setdefault(attempt.prefixes, []).append(attempt)
    return found


def assert_paced_until_started(attempts: list[StartAttempt]) -> None:
    """A deploy's StartLiveTail calls: throttled ones, each tried again no sooner than a second
    later, then the one that started its session, and no other."""
    assert [attempt.answer for attempt in attempts] == ["ThrottlingException"] * (len(attempts) - 1) + ["ok"]
    assert all(later.at - earlier.at >= THROTTLED_RETRY_SECONDS for earlier, later in pairwise(attempts)), attempts


def test_chatty_instances_stream_through_live_tail_reading_each_event_about_once(
    standin: StandIn, reads: LogsReads
) -> None:
    instance_ids = standin.launch(5)
    run = run_pipe(chatty_env(standin, instance_ids, 60, existing_group(standin)))

    assert run.returncode == 0, run.output
    assert_each_line_once(run, instance_ids, 60)
    summary = run.output.index("Summary of command")
    for instance_id in instance_ids:
        assert run.output.index(f"{instance_id} | line 60 of") < summary  # all of it before the summary
        assert f"---- output of {instance_id}" not in run.output  # nothing had to come whole from SSM's copy
    events, size = printed_events(run)
    counters = reads.counters
    served = counters.tail_events + counters.filter_events
    # the lines of the last second, which Live Tail had not sent yet when the command ended, come
    # from SSM's whole copy rather than being waited for. Counted in bytes: the agent packs the lines of a
    # tick in one event, line breaks kept, so how many events 300 lines make depends on the ticks
    output = sum(len(line) + 1 for line in re.findall(r"\| (line \d+ of \S+)$", run.output, re.MULTILINE))
    assert output / 2 <= size <= output
    assert 0 < events <= 5 * 60
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
def test_a_throttled_start_live_tail_is_tried_again_later_and_every_line_still_streams_once(
    standin: StandIn, reads: LogsReads
) -> None:
    """StartLiveTail's 5 TPS are the account's: here other callers took the tokens twice."""
    reads.throttle_starts(2)
    instance_ids = standin.launch(2)
    run = run_pipe(chatty_env(standin, instance_ids, LONG_LINES, existing_group(standin), pause=LONG_PAUSE))

    assert run.returncode == 0, run.output
    assert "falls back" not in run.output and "Live output is off" not in run.output
    assert "StartLiveTail was throttled (2 in a row)" in run.output
    assert_each_line_once(run, instance_ids, LONG_LINES)
    filter_calls, sessions = pipe_reads(run)
    assert sessions == 1 and filter_calls <= 2  # one read of what came before the session (and a drain read)
    (attempts,) = starts_by_deploy(reads.counters.start_attempts).values()
    assert len(attempts) == 3
    assert_paced_until_started(attempts)
    assert wait_sessions_closed(reads)


@pytest.mark.slow
def test_ten_deploys_started_together_each_stream_every_line_live_once_without_polling(
    standin: StandIn, reads: LogsReads
) -> None:
    """Ten deploys of two chatty instances each, started at the same moment (as parallel steps are),
    all running at once against the account's 5 TPS StartLiveTail and FilterLogEvents buckets.
    Whether their starts collide depends on how fast each pipe gets there, so a throttled call may
    happen; what holds whatever the machine's speed: each deploy streams through one Live Tail session
    (tried again no sooner than a second after a throttle) and prints each line once, and its only
    FilterLogEvents call is the read of what came before its session (polls would need 10 TPS)."""
    group = existing_group(standin)
    fleets = [standin.launch(2) for _ in range(10)]
    envs = [chatty_env(standin, instance_ids, LONG_LINES, group, pause=LONG_PAUSE) for instance_ids in fleets]
    runs: list[PipeRun | None] = [None] * len(fleets)
    together = threading.Barrier(len(fleets))

    def deploy(index: int) -> None:
        together.wait()
        runs[index] = run_pipe(envs[index], timeout=240)

    threads = [threading.Thread(target=deploy, args=(index,)) for index in range(len(fleets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for run, instance_ids in zip(runs, fleets, strict=True):
        assert run is not None and run.returncode == 0, run and run.output
        assert "falls back" not in run.output and "Live output is off" not in run.output
        assert_each_line_once(run, instance_ids, LONG_LINES)
        filter_calls, sessions = pipe_reads(run)
        assert sessions == 1 and filter_calls <= 2, run.output  # no polls: 10 s of them would be 10 calls
    counters = reads.counters
    deploys = starts_by_deploy(counters.start_attempts)
    assert len(deploys) == len(fleets)
    for attempts in deploys.values():
        assert_paced_until_started(attempts)
    assert counters.sessions_started == len(fleets) and counters.sessions_refused == 0
    assert counters.sessions_peak >= 2  # the deploys did overlap
