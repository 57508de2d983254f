"""Whatever the SSM Agent makes of an instance's output in CloudWatch events, the build log shows each of its
lines once, whole, in order, a secret in it masked (attack 43).

The events come from the stand-in's model of the agent (``standin.cloudwatch.AgentOutputFile``, after
amazon-ssm-agent's getNextMessage and buildEventInfo): lines packed up to 200,000 bytes with their line
breaks, a longer line in 200,000-byte pieces, at most 4 events a tick, the last line break dropped once the
output ended. The output reaches the agent's file in arbitrary chunks with ticks in between, and the pipe
reads the events with FilterLogEvents (``StreamBook.print_read``), one batch per tick."""

from __future__ import annotations

import io

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from standin.cloudwatch import AgentOutputFile
from unit.unit_support import COMMAND_ID, INSTANCE_A

from pipe.apply.watch.streams import StreamBook
from pipe.report.console import OutputPrinter
from pipe.runtime.redaction import Redactor

SECRET = "Wj4r-Hx7q-0123456789-Pb2m"
STREAM = f"{COMMAND_ID}/{INSTANCE_A}/aws-runShellScript/stdout"
# around the agent's 200,000-byte buffer: one byte short of a line that fills it, a line that fills it, cut ones
LENGTHS = [0, 1, 40, 99_998, 199_998, 199_999, 200_000, 200_001, 400_010]
ACROSS_CUT = [199_976, 199_988, 199_999, 399_990]  # where a secret starts in its line so a cut splits it


@st.composite
def outputs(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """An output (lines with LF or CRLF, blank lines, long lines, a secret in some, maybe no last line break)
    and where its writes end (a tick follows each)."""
    lines = []
    for number in range(draw(st.integers(1, 6))):
        length = draw(st.sampled_from(LENGTHS))
        secret = draw(st.booleans())
        body = "" if not length else f"L{number}:" + ("é" if draw(st.booleans()) else "") + "x" * length
        if secret and body:
            at = min(len(body), draw(st.one_of(st.integers(0, len(body)), st.sampled_from(ACROSS_CUT))))
            body = body[:at] + SECRET + body[at:]
        lines.append(body + draw(st.sampled_from(["\n", "\r\n"])))
    data = "".join(lines).encode()
    if draw(st.booleans()):
        data = data.rstrip(b"\r\n")
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=5)))
    return data, [*cuts, len(data)]


def agent_events(data: bytes, writes: list[int]) -> list[list[str]]:
    """Each tick's events, as the agent uploads ``data`` written up to each of ``writes``, then completed."""
    file = AgentOutputFile()
    ticks: list[list[str]] = []
    written = 0
    for end in writes:
        file.write(data[written:end])
        written = end
        ticks.append(tick(file))
    file.complete = True
    while not file.done:
        ticks.append(tick(file))
    return [events for events in ticks if events]


def tick(file: AgentOutputFile) -> list[str]:
    events, end = file.next_events()
    assume(all(events))  # an empty last event never lands (stand-in test_agent_output_file.py): not this test's
    file.uploaded = end
    return events


def printed_lines(ticks: list[list[str]], redactor: Redactor) -> list[str]:
    out = io.StringIO()
    printer = OutputPrinter(redactor, stream=out, colour=False)
    book = StreamBook([COMMAND_ID], printer)
    for number, events in enumerate(ticks):
        at = 1_000 * (number + 1)  # one PutLogEvents batch a tick: one ingestion time
        book.print_read(
            [
                {"logStreamName": STREAM, "timestamp": at, "ingestionTime": at, "eventId": f"{at}-{n}", "message": text}
                for n, text in enumerate(events)
            ],
            0.0,
        )
    printer.flush_held()
    return [line.removeprefix(f"{INSTANCE_A} | ") for line in out.getvalue().splitlines()]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(outputs())
def test_each_line_of_the_output_is_printed_once_whole_in_order_whatever_events_the_agent_made(
    output: tuple[bytes, list[int]],
) -> None:
    data, writes = output
    redactor = Redactor()
    redactor.add(SECRET, "API_TOKEN")
    printed = printed_lines(agent_events(data, writes), redactor)

    expected = [line.removesuffix("\r").replace(SECRET, "****") for line in data.decode().split("\n")]
    # blank lines may not reach CloudWatch (the agent drops an event's last line break once the output ended)
    assert [line for line in printed if line] == [line for line in expected if line]
    assert not any(SECRET[:12] in line or SECRET[-12:] in line for line in printed)
