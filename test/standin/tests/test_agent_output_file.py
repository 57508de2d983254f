"""The SSM Agent's CloudWatch upload of Run Command output, modelled in ``standin.cloudwatch`` (getNextMessage,
buildEventInfo and StreamData of amazon-ssm-agent's cloudwatchlogsservice.go; see the facts declared there)."""

from __future__ import annotations

import time
from typing import Any

from support import wait_until

from standin.cloudwatch import (
    AGENT_EVENTS_PER_TICK,
    AGENT_PIECE_BYTES,
    AgentOutputFile,
    LogsSink,
    StreamUploader,
)


def ticks(file: AgentOutputFile) -> list[list[str]]:
    """Every tick's events until nothing is left, each tick's upload landing."""
    out: list[list[str]] = []
    while True:
        events, end = file.next_events()
        if not events:
            return out
        out.append(events)
        file.uploaded = end


def test_lines_go_in_one_event_with_their_line_breaks_while_the_command_runs() -> None:
    file = AgentOutputFile()
    file.write(b"one\n\ntwo\r\nthree")

    assert ticks(file) == [["one\n\ntwo\n"]]  # "three" has no line break yet: it waits


def test_once_the_output_ended_the_last_line_goes_without_its_line_break() -> None:
    file = AgentOutputFile()
    file.write(b"one\n")
    assert ticks(file) == [["one\n"]]
    file.write(b"two\nthree\n")
    file.complete = True

    assert ticks(file) == [["two\nthree"]]
    assert file.done


def test_a_last_line_without_a_line_break_goes_once_the_output_ended() -> None:
    file = AgentOutputFile()
    file.write(b"partial")
    assert ticks(file) == []
    file.complete = True

    assert ticks(file) == [["partial"]]


def test_lines_are_packed_up_to_200000_bytes_an_event_the_next_line_starting_the_next() -> None:
    line = b"x" * 99_999 + b"\n"  # 100,000 bytes: two fill an event
    file = AgentOutputFile()
    file.write(line * 3)

    assert [[len(event) for event in tick] for tick in ticks(file)] == [[2 * len(line), len(line)]]


def test_at_most_four_events_a_tick_the_next_tick_going_on_from_there() -> None:
    line = b"y" * (AGENT_PIECE_BYTES - 1) + b"\n"  # one event each
    file = AgentOutputFile()
    file.write(line * (AGENT_EVENTS_PER_TICK + 2))
    file.complete = True

    assert [len(tick) for tick in ticks(file)] == [AGENT_EVENTS_PER_TICK, 2]


def test_a_line_longer_than_200000_bytes_goes_in_pieces_of_200000_bytes_each_an_event_of_its_own() -> None:
    file = AgentOutputFile()
    file.write(b"head\n" + b"a" * 450_000 + b"b\r\nshort\n")
    file.complete = True

    (events,) = ticks(file)
    assert events == ["head", "a" * 200_000, "a" * 200_000, "a" * 50_000 + "b\nshort"]


def test_a_piece_is_uploaded_before_its_line_ends() -> None:
    file = AgentOutputFile()
    file.write(b"z" * (AGENT_PIECE_BYTES + 10))

    assert ticks(file) == [["z" * AGENT_PIECE_BYTES]]


def test_a_character_the_200000_byte_cut_splits_reaches_cloudwatch_as_replacement_characters() -> None:
    file = AgentOutputFile()
    file.write(("x" * 199_999 + "é" + "y\n").encode())
    file.complete = True

    assert ticks(file) == [["x" * 199_999 + "\ufffd", "\ufffdy"]]


class RecordingSink(LogsSink):
    def __init__(self) -> None:
        super().__init__(client=None)
        self.calls: list[list[str]] = []

    def ensure_stream(self, group: str, stream: str) -> None:
        pass

    def put(self, group: str, stream: str, events: list[dict[str, Any]]) -> None:
        self.calls.append([event["message"] for event in events])


def test_a_lone_blank_line_left_once_the_output_ended_is_an_empty_event_its_call_never_lands() -> None:
    """The SDK refuses an empty message: the whole call fails every tick, the line before it lost too, and the
    agent gives up waiting after 60 ticks."""
    sink = RecordingSink()
    uploader = StreamUploader(sink, "group", "stream", interval=0.01)
    uploader.write(b"start\n")
    wait_until(lambda: sink.calls == [["start\n"]], "the first tick", timeout=5)
    uploader.write(b"x" * (AGENT_PIECE_BYTES - 1) + b"\n\n")
    uploader.end()
    began = time.monotonic()
    uploader.wait()

    assert time.monotonic() - began >= 0.5
    assert sink.calls == [["start\n"]]
    uploader.stop()
