"""Each invocation's final result: from ListCommandInvocations with Details, 50 instances a call,
and SSM's fuller copy of the output (GetCommandInvocation) only for an instance that still needs it.

A listing's row carries, per plugin (step), the status, exit code, start and end, and ``Output``:
what the SSM Agent reported, stdout then stderr behind ``\\n----------ERROR-------\\n``, cut to
2,400 bytes with ``\\n---Output truncated---`` / ``\\n---Error truncated----`` marks
(amazon-ssm-agent, agent/contracts/plugin.go, TruncateOutput; the API bounds Output at 2,500
characters). Output that fits is whole, the same text GetCommandInvocation gives; a cut one is
its head, and GetCommandInvocation (24,000 / 8,000 characters) is asked only when that head is not
enough: the instance's output must be printed from SSM's copy (no live stream of it, no S3 copy),
or the stream differs from it (``watch/closing.py``).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from pipe.aws.errors import error_code
from pipe.limits import LIST_INVOCATIONS_PAGE, STDERR_FIELD_LIMIT, STDOUT_FIELD_LIMIT
from pipe.model import Invocation

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

NOT_YET_ATTEMPTS = 10
ERROR_TITLE = "\n----------ERROR-------\n"
OUTPUT_TRUNCATED = "\n---Output truncated---"
ERROR_TRUNCATED = "\n---Error truncated----"
Row = Mapping[str, Any]


def list_invocations(ssm: SSMClient, command_id: str, details: bool = False, status: str = "") -> Iterable[Row]:
    """The command's invocation rows, a page of 50 a call; ``status`` filters them (a Status or
    StatusDetails value; ``TimedOut`` covers both timeouts)."""
    request: dict[str, Any] = {"CommandId": command_id, "PaginationConfig": {"PageSize": LIST_INVOCATIONS_PAGE}}
    if details:
        request["Details"] = True
    if status:
        request["Filters"] = [{"key": "Status", "value": status}]
    for page in ssm.get_paginator("list_command_invocations").paginate(**request):
        yield from page.get("CommandInvocations", [])


def apply_status(invocation: Invocation, row: Row) -> bool:
    """Take the row's Status and StatusDetails; True when they changed."""
    status, details = str(row.get("Status", "Pending")), str(row.get("StatusDetails", ""))
    if (status, details) == (invocation.status, invocation.status_details):
        return False
    invocation.status, invocation.status_details = status, details
    return True


def apply_result(invocation: Invocation, row: Row) -> None:
    """Take a Details row: status, exit code, duration and the head of the output."""
    apply_status(invocation, row)
    plugins = list(row.get("CommandPlugins") or [])
    if not plugins:
        return
    codes = [int(p["ResponseCode"]) for p in plugins if p.get("ResponseCode") is not None]
    failed = [code for code in codes if code != 0]
    invocation.response_code = failed[0] if failed else (codes[-1] if codes else None)
    starts = [p["ResponseStartDateTime"] for p in plugins if p.get("ResponseStartDateTime")]
    ends = [p["ResponseFinishDateTime"] for p in plugins if p.get("ResponseFinishDateTime")]
    invocation.elapsed = _iso_duration(min(starts), max(ends)) if starts and ends else ""
    if starts:  # it started: whatever held it back came too late
        invocation.stopped_at_max_errors = False
    outs, errs, cut = [], [], set[str]()
    for plugin in plugins:
        parts = split_output(str(plugin.get("Output") or ""))
        outs.append(parts[0])
        errs.append(parts[1])
        cut |= parts[2]
    invocation.stdout, invocation.stderr = "".join(outs), "".join(errs)
    invocation.cut = frozenset(cut)
    invocation.head_only = bool(cut)


def split_output(output: str) -> tuple[str, str, frozenset[str]]:
    """(stdout, stderr, the streams cut) of a plugin's Output. A stream that itself holds the
    error title cannot be told apart: both are then taken as cut, so SSM's copy is asked if needed."""
    if output.count(ERROR_TITLE) > 1:
        return output, "", frozenset({"stdout", "stderr"})
    stdout, _, stderr = output.partition(ERROR_TITLE)
    cut = set()
    if stdout.endswith(OUTPUT_TRUNCATED):
        stdout = stdout.removesuffix(OUTPUT_TRUNCATED)
        cut.add("stdout")
    if stderr.endswith(ERROR_TRUNCATED):
        stderr = stderr.removesuffix(ERROR_TRUNCATED)
        cut.add("stderr")
    return stdout, stderr, frozenset(cut)


def _iso_duration(start: datetime.datetime, end: datetime.datetime) -> str:
    return f"PT{max(0.0, (end - start).total_seconds()):.3f}S"


def fetch_result(
    ssm: SSMClient, command_id: str, invocation: Invocation, sleep: Callable[[float], None] = time.sleep
) -> None:
    """SSM's fuller copy (GetCommandInvocation): response code, duration and up to 24,000 / 8,000
    characters of output; retries the InvocationDoesNotExist race of a new command."""
    for attempt in range(NOT_YET_ATTEMPTS):
        try:
            item = ssm.get_command_invocation(CommandId=command_id, InstanceId=invocation.instance_id)
            break
        except ClientError as error:
            if error_code(error) != "InvocationDoesNotExist" or attempt == NOT_YET_ATTEMPTS - 1:
                raise
            sleep(0.5)
    invocation.status = item.get("Status", invocation.status)
    invocation.status_details = item.get("StatusDetails", invocation.status_details)
    code = item.get("ResponseCode")
    invocation.response_code = int(code) if code is not None else None
    invocation.elapsed = item.get("ExecutionElapsedTime", "") or invocation.elapsed
    invocation.stdout = item.get("StandardOutputContent", "") or ""
    invocation.stderr = item.get("StandardErrorContent", "") or ""
    invocation.cut = frozenset(
        stream
        for stream, text, limit in (
            ("stdout", invocation.stdout, STDOUT_FIELD_LIMIT),
            ("stderr", invocation.stderr, STDERR_FIELD_LIMIT),
        )
        if len(text) >= limit
    )
    invocation.head_only = False


def ensure_full_copy(ssm: SSMClient, invocation: Invocation) -> None:
    """Make ``invocation`` hold SSM's fuller copy when it holds only the listing's head."""
    if invocation.head_only and invocation.command_id:
        fetch_result(ssm, invocation.command_id, invocation)
