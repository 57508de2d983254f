"""Each line of an instance's output is in the build log once: what CloudWatch streamed is not printed
again from SSM's copy when the command ends, and the warning that CloudWatch did not deliver
everything comes only when it really did not, naming the time really waited.

In process: ``LogTail`` reads a fake CloudWatch Logs that holds what the test says the agent
uploaded, SSM's listing head is cut the way the SSM Agent cuts it (``standin.listings``, after
amazon-ssm-agent's TruncateOutput: bytes, so a character may be cut in two), and the drain's
clock only moves when it sleeps: what is missing is decided by the test, never by a race."""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest
from standin.listings import truncate_output
from unit.apply.watch.test_unit_live_tail import ARN, poll_until, pushed
from unit.apply.watch.test_unit_live_tail import FakeLogs as LiveLogs
from unit.unit_support import COMMAND_ID, INSTANCE_A, FakeClock, make_settings

from pipe.apply.watch.closing import DRAIN_SECONDS, show_results
from pipe.apply.watch.log_tail import LogTail
from pipe.apply.watch.results import apply_result
from pipe.model import Invocation, SentCommand
from pipe.report.console import OutputPrinter
from pipe.runtime.redaction import Redactor

GROUP = "/aws/ssm/ssm-deploy"
STREAM = f"{COMMAND_ID}/{INSTANCE_A}/aws-runShellScript/stdout"
# what a first `pm2 startOrReload` prints: its banner, then a table drawn with box characters
BANNER = [
    "                        -------------",
    "__/\\\\\\\\\\\\\\\\\\\\\\\\\\____/\\\\\\\\____________/\\\\\\\\____/\\\\\\\\\\\\\\\\\\_____",
    *[f" _\\/\\\\\\/////////\\\\\\_\\/\\\\\\\\\\\\________/\\\\\\___ {n}" for n in range(31)],
    "[PM2] Spawning PM2 daemon with pm2_home=/home/ec2-user/.pm2",
    "[PM2] PM2 Successfully daemonized",
    "[PM2][WARN] Applications web-api not running, starting...",
    "[PM2] App [web-api] launched (1 instances)",
    "┌────┬────────────┬─────────────┬─────────┬─────────┬──────────┬────────┬──────┐",
    *[f"│ {n:<2} │ web-api    │ default     │ 1.0.0   │ fork    │ 4242     │ 0s     │ 0    │" for n in range(12)],
    "└────┴────────────┴─────────────┴─────────┴─────────┴──────────┴────────┴──────┘",
    "deployed 000042-0123456",
]


class FakeLogs:
    """FilterLogEvents over the events the agent uploaded (one per line, ingested in order)."""

    def __init__(self, lines: list[str]) -> None:
        self.events = [
            {"logStreamName": STREAM, "timestamp": n, "ingestionTime": 2 * n, "eventId": str(n), "message": line}
            for n, line in enumerate(lines)
        ]

    def filter_log_events(self, **request: Any) -> dict[str, Any]:
        start = request.get("startTime", 0)
        return {"events": [event for event in self.events if event["timestamp"] >= start]}


class LoadedClock(FakeClock):
    """A runner under load: each sleep takes 30 % longer than asked."""

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds * 1.3)


class FakeSSM:
    """GetCommandInvocation: SSM's fuller copy (the whole output here, well under 24,000 characters)."""

    def __init__(self, stdout: str) -> None:
        self.stdout = stdout
        self.reads = 0

    def get_command_invocation(self, **request: Any) -> dict[str, Any]:
        self.reads += 1
        return {"Status": "Success", "ResponseCode": 0, "StandardOutputContent": self.stdout}


def finished(stdout: str) -> Invocation:
    """The invocation as the results listing leaves it: the agent's 2,400-byte cut of the output."""
    invocation = Invocation(INSTANCE_A, COMMAND_ID)
    plugin = {
        "Name": "aws:runShellScript",
        "ResponseCode": 0,
        "Output": truncate_output(stdout, ""),
    }
    apply_result(invocation, {"Status": "Success", "StatusDetails": "Success", "CommandPlugins": [plugin]})
    return invocation


def ended(
    uploaded: list[str], stdout: str, caplog: pytest.LogCaptureFixture, clock: FakeClock | None = None
) -> tuple[str, FakeSSM, FakeClock]:
    """Stream what the agent ``uploaded`` while the command ran, end it, and show its results:
    the instance's lines as the build log shows them, SSM, and the drain's clock."""
    out = io.StringIO()
    clock = clock or FakeClock()
    printer = OutputPrinter(Redactor(), stream=out, colour=False)
    tail = LogTail(FakeLogs(uploaded), GROUP, [COMMAND_ID], printer, clock=clock, sleep=clock.sleep)
    tail.poll()
    ssm = FakeSSM(stdout)
    invocation = finished(stdout)
    with caplog.at_level(logging.INFO, logger="ssm-deploy"):
        show_results(ssm, [SentCommand(COMMAND_ID, (INSTANCE_A,))], {INSTANCE_A: invocation}, printer, tail, SETTINGS)
    tail.close()
    return out.getvalue(), ssm, clock


SETTINGS = make_settings()


def test_output_whose_cut_copy_ends_inside_a_character_is_printed_once_and_not_reported_late(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stdout = "\n".join(BANNER) + "\n"
    head = finished(stdout).stdout
    assert head.endswith("\ufffd")  # the agent cut a box character in two: the case this is about

    printed, ssm, _ = ended(BANNER, stdout, caplog)

    lines = printed.splitlines()
    assert lines == [f"{INSTANCE_A} | {line}" for line in BANNER]  # each once, in order
    assert "did not deliver" not in caplog.text
    assert ssm.reads == 0  # nothing was missing: SSM's fuller copy is not needed


def test_what_cloudwatch_never_delivered_is_printed_once_after_the_real_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stdout = "\n".join(BANNER) + "\n"
    delivered = BANNER[:20]

    printed, _, clock = ended(delivered, stdout, caplog, LoadedClock())

    lines = printed.splitlines()
    shown = [line.removeprefix(f"{INSTANCE_A} | ") for line in lines if line.startswith(f"{INSTANCE_A} | ")]
    assert shown == BANNER  # the delivered part, then the rest from SSM's copy: every line once
    waited = clock.now - FakeClock().now
    assert waited >= DRAIN_SECONDS  # SSM cut its copy: only CloudWatch has the rest, so it waited
    warnings = [r.getMessage() for r in caplog.records if "did not deliver" in r.getMessage()]
    assert len(warnings) == 1 and f"waited {waited:.1f} s" in warnings[0]  # the time it took, not the bound


def test_the_last_lines_live_tail_had_not_sent_yet_are_printed_before_the_summary_without_waiting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Live Tail sends each second's events a second later: when the command ends its last lines are
    usually still on their way. The phase ends without waiting for that update, and without a sleep:
    SSM's whole copy has them, so they follow the streamed ones, once each, before the summary."""
    out = io.StringIO()
    clock = FakeClock()
    printer = OutputPrinter(Redactor(), stream=out, colour=False)
    logs = LiveLogs()
    tail = LogTail(logs, GROUP, [COMMAND_ID], printer, clock=clock, group_arn=ARN, sleep=clock.sleep)
    poll_until(tail, lambda: len(logs.filter_requests) == 1)  # the session started; what came before read
    stdout = "installing\nswitched to 000042-0123456\nhealthy\n"
    logs.sessions[0][1].update(
        pushed(INSTANCE_A, 100, "installing"), pushed(INSTANCE_A, 101, "switched to 000042-0123456")
    )
    poll_until(tail, lambda: tail.counts.events_printed == 2)
    in_log = logging.StreamHandler(out)  # the summary's lines in the same build log, in order
    in_log.setFormatter(logging.Formatter("INFO: %(message)s"))
    logger = logging.getLogger("ssm-deploy")
    logger.addHandler(in_log)
    try:
        with caplog.at_level(logging.INFO, logger="ssm-deploy"):
            show_results(
                FakeSSM(stdout),
                [SentCommand(COMMAND_ID, (INSTANCE_A,))],
                {INSTANCE_A: finished(stdout)},
                printer,
                tail,
                SETTINGS,
            )
    finally:
        logger.removeHandler(in_log)
        tail.close()

    lines = out.getvalue().splitlines()
    summary = next(n for n, line in enumerate(lines) if line.startswith("INFO: Summary of command"))
    assert lines[:summary] == [f"{INSTANCE_A} | {line}" for line in stdout.splitlines()]  # every line once, no title
    assert clock.sleeps == []  # no wait for the next update
    assert len(logs.filter_requests) == 1  # nor read it again: only what came before the session
    assert "did not deliver" not in caplog.text and "No live output" not in caplog.text
