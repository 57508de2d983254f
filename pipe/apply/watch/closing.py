"""The end of a phase, after the wait: make sure every instance's output is in the build log, then
print the summary (``report/summary.py``).

What CloudWatch streamed is compared with what SSM captured (``LogTail.drain``); whatever the
stream lacks is printed at once from OUTPUT_S3_BUCKET when set, else from SSM's copy. Only output
SSM's copy lacks the end of is waited for, since only CloudWatch or S3 has its rest.

SSM's copy is first the head the results listing gave (``watch.results``: 2,500 characters a
plugin, whole when the output is short). GetCommandInvocation's fuller copy is read only for an
instance whose output must be printed from it and whose head is cut: nothing of it was streamed,
or the stream is not SSM's copy, or there is no stream, and S3 has no copy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pipe.apply.watch.log_tail import LogTail
from pipe.apply.watch.results import ensure_full_copy
from pipe.apply.watch.streams import Captured, Gap, StreamKey
from pipe.config.documents import plugin_folder
from pipe.config.settings import DeploySettings
from pipe.limits import LOG_LOOKBACK_SECONDS, STDERR_FIELD_LIMIT, STDOUT_FIELD_LIMIT
from pipe.model import Invocation, SentCommand
from pipe.report.console import OutputPrinter, cut_notice
from pipe.report.s3_output import output_key, read_lines
from pipe.report.summary import print_summary

DRAIN_SECONDS = float(LOG_LOOKBACK_SECONDS)  # the SSM Agent uploads output to CloudWatch at least every 30 s
LIVE_OUTPUT_MISSING = "live output missing"  # a notice given once per run
STREAMS = (("stdout", STDOUT_FIELD_LIMIT, "Standard output"), ("stderr", STDERR_FIELD_LIMIT, "Standard error"))
log = logging.getLogger("ssm-deploy")


def show_results(
    ssm: Any,
    commands: list[SentCommand],
    invocations: dict[str, Invocation],
    printer: OutputPrinter,
    tail: LogTail | None,
    settings: DeploySettings,
    s3: Any = None,
) -> None:
    """Make sure each instance's output is in the log (from CloudWatch, S3 or SSM's capped fields),
    then print the summary. ``s3`` is a client when OUTPUT_S3_BUCKET is set."""
    ran = [inv for inv in invocations.values() if not inv.skipped]
    if tail is not None and tail.available:
        for invocation in ran:  # nothing streamed: the drain compares with (and prints) SSM's fuller copy
            if invocation.head_only and not tail.streamed_any(invocation.instance_id):
                ensure_full_copy(ssm, invocation)
        missing = _drain(ran, tail, printer, settings)
    else:
        missing = {(inv.instance_id, stream): Gap() for inv in ran for stream, _, _ in STREAMS}
    for invocation in ran:
        gaps = {
            stream: missing[key] for stream, _, _ in STREAMS if (key := (invocation.instance_id, stream)) in missing
        }
        if gaps:
            _print_rest(ssm, invocation, gaps, printer, settings, s3)
    printer.flush_held()
    printer.flush_elided(
        f"CloudWatch Logs group {settings.log_group}, streams <command id>/<instance id>/<step>/stdout"
        if settings.stream_output
        else "the instance's SSM Agent log"
    )
    print_summary(commands, invocations, settings.region)


def _drain(
    ran: list[Invocation], tail: LogTail, printer: OutputPrinter, settings: DeploySettings
) -> dict[StreamKey, Gap]:
    captured = {
        (inv.instance_id, stream): Captured(_text(inv, stream), cut=stream in inv.cut, command_id=inv.command_id)
        for inv in ran
        for stream, _, _ in STREAMS
    }
    drained = tail.drain(captured, DRAIN_SECONDS)
    missing = drained.gaps
    silent = [inv.instance_id for inv in ran if (inv.stdout or inv.stderr) and not tail.streamed_any(inv.instance_id)]
    if silent and printer.build_log.first_time(LIVE_OUTPUT_MISSING):
        log.warning(
            f"No live output from {_some(silent)}: nothing of what it printed arrived in CloudWatch Logs group "
            f"{tail.group}. The instance role may not write there: allow it logs:CreateLogGroup, "
            "logs:CreateLogStream, logs:PutLogEvents, logs:DescribeLogGroups and logs:DescribeLogStreams on "
            f"arn:aws:logs:{settings.region}:<account>:log-group:{tail.group}:* (README: The instance role). "
            "Its output is shown from what SSM captured instead."
        )
    late = sorted({key[0] for key, gap in missing.items() if gap.late and captured[key].cut and key[0] not in silent})
    if late:
        log.warning(
            f"CloudWatch did not deliver all output of {_some(late)} (waited {drained.waited:.1f} s after the "
            "command ended); showing the rest from what SSM or S3 has."
        )
    return missing


def _print_rest(
    ssm: Any, invocation: Invocation, gaps: dict[str, Gap], printer: OutputPrinter, settings: DeploySettings, s3: Any
) -> None:
    """Print what the build log lacks of the instance's output: from S3 when it is there, else SSM's
    copy; never a line the live output printed. What Live Tail had not delivered yet of a whole copy
    (``Gap.behind``) is printed from that copy as the stream's continuation, under no title."""
    behind = all(gap.behind for gap in gaps.values())
    title = _title(invocation, gaps)
    if not behind and s3 is not None and _print_from_s3(s3, invocation, gaps, printer, settings, title):
        return
    ensure_full_copy(ssm, invocation)
    # a value SSM's cut split in two: its first characters end the copy, and no mask of the whole matches them
    copies = {
        stream: printer.cut_end_masked(_text(invocation, stream))
        if stream in invocation.cut
        else _text(invocation, stream)
        for stream in gaps
    }
    rests = {stream: list(gaps[stream].rest([copies[stream]])) for stream in gaps}
    if any(rests.values()) and not behind:
        printer.print_header(f"---- {title} ----")
    for stream, limit, what in STREAMS:
        if stream not in gaps:
            continue
        _print_chunks(printer, invocation.instance_id, stream, rests[stream])
        notice = cut_notice(_text(invocation, stream), limit, what, _remedy(settings))
        if notice:
            log.warning(f"{invocation.instance_id}: {notice}")


def _title(invocation: Invocation, gaps: dict[str, Gap]) -> str:
    if all(gap.whole for gap in gaps.values()):
        return f"output of {invocation.instance_id}: {invocation.describe()}"
    if any(gap.printed is not None for gap in gaps.values()):
        return f"lines of the output of {invocation.instance_id} ({invocation.describe()}) that live output lacked"
    return f"rest of the output of {invocation.instance_id} ({invocation.describe()}), not yet in CloudWatch Logs"


def _print_from_s3(
    s3: Any, invocation: Invocation, gaps: dict[str, Gap], printer: OutputPrinter, settings: DeploySettings, title: str
) -> bool:
    """Print the rest of the full output the agent wrote to OUTPUT_S3_BUCKET; False when it is not there."""
    bucket, prefix = str(settings.output_s3_bucket), settings.output_s3_prefix
    folder = plugin_folder(settings.document_name)
    key = output_key(prefix, invocation.command_id, invocation.instance_id, "stdout", folder)
    stdout = read_lines(s3, bucket, key)
    if stdout is None:
        return False
    printer.print_header(f"---- {title} (from s3://{bucket}) ----")
    if "stdout" in gaps:
        _print_chunks(printer, invocation.instance_id, "stdout", gaps["stdout"].rest(stdout))
    if "stderr" in gaps:
        key = output_key(prefix, invocation.command_id, invocation.instance_id, "stderr", folder)
        stderr = read_lines(s3, bucket, key) or ()
        _print_chunks(printer, invocation.instance_id, "stderr", gaps["stderr"].rest(stderr))
    return True


def _text(invocation: Invocation, stream: str) -> str:
    return invocation.stdout if stream == "stdout" else invocation.stderr


def _print_chunks(printer: OutputPrinter, instance_id: str, stream: str, chunks: Iterable[str]) -> None:
    """``chunks``: lines, or pieces of a line (S3 hands on a line over MAX_PIECE_CHARS in pieces): a chunk
    followed by another and ending inside a line continues in it."""
    before: str | None = None
    for chunk in chunks:
        if before is not None:
            printer.print_lines(instance_id, before, stream == "stderr", continues=not before.endswith("\n"))
        before = chunk
    if before is not None:
        printer.print_lines(instance_id, before, is_stderr=stream == "stderr")


def _remedy(settings: DeploySettings) -> str:
    if settings.stream_output:
        return (
            f"the rest did not arrive through CloudWatch Logs group {settings.log_group} in time (look there), "
            "or set OUTPUT_S3_BUCKET to have it printed from S3."
        )
    return "set STREAM_OUTPUT: 'true' (the default) or OUTPUT_S3_BUCKET to get all of it."


def _some(ids: list[str], limit: int = 10) -> str:
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
