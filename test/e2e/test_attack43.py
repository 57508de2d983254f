"""The forty-third outside attack (issues #16, #17): live output against the SSM Agent's real CloudWatch upload.

The stand-in now uploads an instance's output as amazon-ssm-agent does (``standin.cloudwatch``,
``AgentOutputFile``): each tick, the lines written since the last one packed in events of up to 200,000 bytes
with their line breaks, at most 4 events a tick, a longer line in 200,000-byte pieces, a last line without its
line break only once the output ended, and then the event's last line break dropped. A lone blank line left for
an event once the output ended is an empty message the SDK refuses: that call never lands, and the agent waits
60 ticks before it reports the command. Every arrangement of such events is checked against the build log in
``test/functional/test_agent_events.py``; here, the whole pipe against the stand-in's agent."""

from __future__ import annotations

from e2e.test_build_log import lines_of
from standin import StandIn
from support import run_pipe

# held: the last event is empty and never lands; the pipe knows the stream is whole (SSM's copy is, and only
# line breaks differ) and says nothing of missing output
COMMANDS_ENDING_WITH_A_LONE_BLANK_LINE = (
    "echo first\nprintf 'second\\r\\n'\nsleep 1\nprintf 'third\\n\\n'\nsleep 1\necho"
)


def test_output_whose_last_event_never_lands_being_a_lone_blank_line_is_shown_once_whole(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    run = run_pipe(standin.pipe_env(INSTANCE_IDS=instance_id, COMMANDS=COMMANDS_ENDING_WITH_A_LONE_BLANK_LINE))

    assert run.returncode == 0, run.output
    assert [line for line in lines_of(run, instance_id) if line.strip() != f"{instance_id} |"] == [
        f"{instance_id} | first",
        f"{instance_id} | second",
        f"{instance_id} | third",
    ]
    assert "CloudWatch did not deliver" not in run.output
    assert "---- output of" not in run.output and "---- rest of" not in run.output


def test_megabytes_of_output_uploaded_four_events_a_tick_arrive_each_line_once_from_cloudwatch(
    standin: StandIn,
) -> None:
    """held: 2.5 MB of 100-byte lines are 13 packed events, uploaded over 4 ticks; SSM's copy is cut at 24,000
    characters, so all of the rest can only come from CloudWatch."""
    (instance_id,) = standin.launch(1)
    command = "seq -f '%099g' 1 25000\necho end"
    run = run_pipe(standin.pipe_env(INSTANCE_IDS=instance_id, COMMANDS=command))

    assert run.returncode == 0, run.output
    shown = lines_of(run, instance_id)
    assert shown == [f"{instance_id} | {n:099d}" for n in range(1, 25001)] + [f"{instance_id} | end"]
    assert "character limit" not in run.output and "CloudWatch did not deliver" not in run.output
