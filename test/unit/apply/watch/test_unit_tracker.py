"""pipe.apply.watch.tracker: the poll strategy against an in-memory SSM that counts every call."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import pytest

from pipe.apply.send import ChunkQueue, plan_chunks
from pipe.apply.watch.tracker import (
    FIRST_POLL_SECONDS,
    MAX_POLL_SECONDS,
    InvocationTracker,
    WaitTimedOut,
    wait_until_final,
)
from pipe.model import CommandSpec, SentCommand
from unit.fake_ssm import Command, FakeSSM, Row
from unit.unit_support import INSTANCE_A, INSTANCE_B, INSTANCE_C, FakeClock, make_settings

Step = Callable[[], None]


def sent(command: Command, targets: bool = False) -> SentCommand:
    ids = () if targets else tuple(command.rows)
    return SentCommand(command.command_id, ids, requested_at=command.requested_at)


def tracker_for(
    ssm: FakeSSM, commands: list[Command], steps: list[Step], targets: bool = False, **extra: Any
) -> tuple[InvocationTracker, FakeClock]:
    """A tracker whose clock runs one of ``steps`` (a change on the fake) at each sleep."""
    clock = FakeClock()
    pending = list(steps)

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if pending:
            pending.pop(0)()

    tracker = InvocationTracker(
        ssm,  # type: ignore[arg-type]
        [sent(c, targets) for c in commands],
        clock=clock,
        sleep=sleep,
        document_name="AWS-RunShellScript",
        **extra,
    )
    return tracker, clock


def fleet(ssm: FakeSSM, count: int) -> list[Command]:
    ids = [f"i-{n:017x}" for n in range(count)]
    return [ssm.add(ids[start : start + 50]) for start in range(0, count, 50)]


def finish_all(commands: list[Command], status: str = "Success") -> Step:
    def step() -> None:
        for command in commands:
            for instance_id in command.rows:
                command.set(instance_id, status)

    return step


def test_a_small_fleet_gets_a_line_per_instance_and_status(caplog: pytest.LogCaptureFixture) -> None:
    ssm = FakeSSM()
    command = ssm.add([INSTANCE_A, INSTANCE_B])
    command.set(INSTANCE_A, "InProgress")

    def a_done_b_runs() -> None:
        command.set(INSTANCE_A, "Success")
        command.set(INSTANCE_B, "InProgress")

    steps = [a_done_b_runs, lambda: command.set(INSTANCE_B, "Failed", code=3)]
    tracker, clock = tracker_for(ssm, [command], steps)
    with caplog.at_level(logging.INFO, logger="ssm-deploy"):
        result = wait_until_final(tracker, 600)

    assert [r.getMessage() for r in caplog.records] == [
        f"{INSTANCE_A}: InProgress",
        f"{INSTANCE_A}: Success",  # from the status listing: the exit code comes with the results
        f"{INSTANCE_B}: InProgress",
        f"{INSTANCE_B}: Failed (exit 3)",
    ]
    assert result[INSTANCE_A].succeeded and not result[INSTANCE_B].succeeded
    assert clock.sleeps == [FIRST_POLL_SECONDS, FIRST_POLL_SECONDS * 1.5]
    # per poll: the counts (1) and, for a small fleet, one listing; the results once, with Details
    assert ssm.calls["ListCommands"] == 3
    assert ssm.calls["ListCommandInvocations"] == 2 + 1
    assert ssm.calls["GetCommandInvocation"] == 0


def test_an_unlisted_invocation_stays_pending() -> None:
    ssm = FakeSSM()
    command = ssm.add([INSTANCE_A, INSTANCE_B])
    command.hidden = {INSTANCE_B}
    command.set(INSTANCE_A, "InProgress")
    tracker, _ = tracker_for(ssm, [command], [])

    tracker.poll()

    assert tracker.invocations[INSTANCE_B].status == "Pending"
    assert not tracker.finished


def test_instances_not_asked_for_are_ignored() -> None:
    ssm = FakeSSM()
    command = ssm.add([INSTANCE_A, INSTANCE_B])
    tracker = InvocationTracker(ssm, [SentCommand(command.command_id, (INSTANCE_A,))])  # type: ignore[arg-type]
    finish_all([command])()
    wait_until_final(tracker, 10)

    assert set(tracker.invocations) == {INSTANCE_A}


@pytest.mark.parametrize("count", [120, 2000])
def test_a_fleet_costs_one_call_per_poll_and_its_results_a_page_of_fifty(
    count: int, caplog: pytest.LogCaptureFixture
) -> None:
    ssm = FakeSSM()
    commands = fleet(ssm, count)
    running = [lambda: None] * 10  # ten polls while everything runs
    tracker, _ = tracker_for(ssm, commands, [*running, finish_all(commands)])
    with caplog.at_level(logging.INFO, logger="ssm-deploy"):
        wait_until_final(tracker, 600)

    polls = ssm.calls["ListCommands"]
    assert polls == 12  # one per poll: the deploy's commands in one filtered page
    assert ssm.calls["ListCommandInvocations"] == math.ceil(count / 50)  # the results, nothing while running
    assert ssm.calls["GetCommandInvocation"] == 0
    filters = next(r for name, r in ssm.requests if name == "ListCommands")["Filters"]
    assert {f["key"] for f in filters} == {"InvokedAfter", "DocumentName"}
    assert caplog.records[-1].getMessage().startswith(f"Progress: {count}/{count} finished ({count} Success)")


def test_a_fleet_names_a_failure_listing_only_the_command_whose_errors_grew() -> None:
    ssm = FakeSSM()
    commands = fleet(ssm, 150)
    doomed = list(commands[1].rows)[7]
    tracker, _ = tracker_for(ssm, commands, [])
    lines = tracker.poll()
    commands[1].set(doomed, "Failed", code=4)
    lines += tracker.poll() + tracker.poll()  # the failure, then nothing new
    listed = [r["CommandId"] for name, r in ssm.requests if name == "ListCommandInvocations"]

    assert listed == [commands[1].command_id]
    assert f"{doomed}: Failed" in lines
    assert "Progress: 1/150 finished (1 failed), 149 running or pending" in lines


def test_a_large_targets_command_lists_only_its_failures() -> None:
    ssm = FakeSSM()
    (command,) = fleet(ssm, 50)
    command.rows.update({f"i-{n:017x}": Row() for n in range(50, 200)})  # SSM resolved 200 targets
    tracker, _ = tracker_for(ssm, [command], [], targets=True, instance_count=200)
    tracker.poll()
    command.set("i-00000000000000063", "TimedOut", "ExecutionTimedOut")
    tracker.poll()
    statuses = [
        [f["value"] for f in r.get("Filters", [])] for name, r in ssm.requests if name == "ListCommandInvocations"
    ]

    assert statuses == [["Failed"], ["TimedOut"]]
    assert tracker.invocations["i-00000000000000063"].status == "TimedOut"


def test_times_out_naming_instances_still_running() -> None:
    ssm = FakeSSM()
    command = ssm.add([INSTANCE_A, INSTANCE_B, INSTANCE_C])
    command.set(INSTANCE_A, "Success")
    command.set(INSTANCE_B, "InProgress")
    tracker, clock = tracker_for(ssm, [command], [])
    with pytest.raises(WaitTimedOut) as error:
        wait_until_final(tracker, 2)

    message = str(error.value)
    assert f"Command {command.command_id} did not finish within 2 s" in message
    assert message.endswith(f"still running on {INSTANCE_B}, {INSTANCE_C}.")
    assert sum(clock.sleeps) >= 2 and clock.sleeps == sorted(clock.sleeps)


def test_the_poll_interval_grows_to_its_cap() -> None:
    ssm = FakeSSM()
    command = ssm.add([INSTANCE_A])
    command.set(INSTANCE_A, "InProgress")
    tracker, clock = tracker_for(ssm, [command], [lambda: None] * 7 + [finish_all([command])])
    wait_until_final(tracker, 3600)

    assert len(clock.sleeps) == 8
    assert clock.sleeps == sorted(clock.sleeps)
    assert clock.sleeps[-3:] == [MAX_POLL_SECONDS] * 3


@pytest.mark.parametrize("ended_after", [4.1, 5.3, 6.5, 7.9])
def test_a_command_is_seen_ended_at_most_half_a_second_after_it_ended(ended_after: float) -> None:
    # the end of every phase waits for the next poll; a plain 1 s poller waits half a second on average
    ssm = FakeSSM()
    command = ssm.add([INSTANCE_A])
    command.set(INSTANCE_A, "InProgress")
    clock = FakeClock()
    began = clock.now

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.now - began >= ended_after:
            command.set(INSTANCE_A, "Success")

    tracker = InvocationTracker(ssm, [sent(command)], clock=clock, sleep=sleep)  # type: ignore[arg-type]
    wait_until_final(tracker, 600)

    assert clock.now - began - ended_after <= 0.5


def test_results_come_from_the_listing_and_a_cut_head_is_marked() -> None:
    ssm = FakeSSM()
    command = ssm.add([INSTANCE_A, INSTANCE_B])
    finish_all([command])()
    command.rows[INSTANCE_A].output = "short\n\n----------ERROR-------\noops\n"
    command.rows[INSTANCE_B].output = "x" * 2378 + "\n---Output truncated---"
    tracker, _ = tracker_for(ssm, [command], [])
    result = wait_until_final(tracker, 10)

    a, b = result[INSTANCE_A], result[INSTANCE_B]
    assert (a.stdout, a.stderr, a.cut, a.head_only, a.elapsed) == ("short\n", "oops\n", frozenset(), False, "PT2.000S")
    assert (b.stdout, b.cut, b.head_only) == ("x" * 2378, frozenset({"stdout"}), True)
    assert ssm.calls["GetCommandInvocation"] == 0


# --- a paced rollout: more than 50 INSTANCE_IDS ---------------------------------------------------
def paced(ssm: FakeSSM, count: int, concurrency: str, errors: str) -> tuple[ChunkQueue, list[SentCommand]]:
    ids = tuple(f"i-{n:017x}" for n in range(count))
    settings = make_settings(instance_ids=list(ids), stream_output=False)
    spec = CommandSpec("deploy", ("true",), instance_ids=ids, max_concurrency=concurrency, max_errors=errors)
    plan = plan_chunks(ids, concurrency, errors)
    queue = ChunkQueue(ssm, settings, spec, plan, lambda: None, lambda _: None)
    first = [queue.send_next() for _ in range(plan.first_wave)]
    return queue, first


def test_chunks_held_back_by_max_concurrency_are_sent_as_others_end() -> None:
    ssm = FakeSSM()
    queue, first = paced(ssm, 150, "2", "0")  # 3 commands, 2 slots: 2 at once, 1 instance each
    later: list[SentCommand] = []
    tracker = InvocationTracker(ssm, first, rest=queue, on_sent=later.append)  # type: ignore[arg-type]
    assert [c.request["MaxConcurrency"] for c in ssm.commands.values()] == ["1", "1"]
    tracker.poll()
    assert not later
    finish_all([ssm.commands[first[0].command_id]])()
    tracker.poll()

    assert len(later) == 1 and ssm.calls["SendCommand"] == 3
    assert ssm.commands[later[0].command_id].request["MaxConcurrency"] == "1"
    assert tracker.invocations[later[0].instance_ids[0]].command_id == later[0].command_id


def test_max_errors_over_all_chunks_stops_what_has_not_started() -> None:
    ssm = FakeSSM()
    queue, first = paced(ssm, 150, "2", "1")  # one error allowed over the whole deploy
    tracker = InvocationTracker(ssm, first, rest=queue)  # type: ignore[arg-type]
    one, two = (ssm.commands[c.command_id] for c in first)
    a, b = next(iter(one.rows)), next(iter(two.rows))
    one.set(a, "Failed", code=1)
    two.set(b, "Failed", code=1)
    two.set(list(two.rows)[1], "InProgress")
    tracker.poll()

    cancels = [r for name, r in ssm.requests if name == "CancelCommand"]
    assert {c["CommandId"] for c in cancels} == {one.command_id, two.command_id}
    assert all(len(c["InstanceIds"]) in (49, 48) for c in cancels)  # the pending ones, not the running one
    skipped = [inv for inv in tracker.invocations.values() if inv.skipped]
    assert len(skipped) == 49 + 48 + 50  # the third chunk is never sent
    assert ssm.calls["SendCommand"] == 2
    assert not tracker.invocations[list(two.rows)[1]].skipped
