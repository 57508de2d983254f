"""ListCommands and ListCommandInvocations as the SSM API Reference documents them (moto 5.2.5
ignores their Filters, MaxResults and NextToken, and reports only stdout, uncut, as a plugin's Output).

- ``Filters``: 1 to 5 ``{key, value}``, all of which must hold (each narrows the list). Keys:
  ``InvokedAfter`` / ``InvokedBefore`` (a timestamp such as ``2024-07-07T00:00:00Z``: "occurring
  ... and later" / "from before"), ``Status``, ``DocumentName``, and ``ExecutionStage``
  (``Executing`` / ``Complete``), which "can't be used with the ListCommandInvocations operation,
  only with ListCommands". A ``Status`` value names a Status or a StatusDetails value (the values
  the Reference lists for ListCommandInvocations include ``Undeliverable``, ``Terminated``,
  ``DeliveryTimedOut``); ``TimedOut`` "includes both Delivery and Execution time outs".
- ``MaxResults``: 1 to 50 (``CommandMaxResults``); a ``NextToken`` while more remain.
- Newest command first (AWS documents no order; the console and CLI show the newest first).
- A plugin's ``Output`` (``Details: true``) is what the SSM Agent reports for the step: stdout, then
  ``\\n----------ERROR-------\\n`` and stderr, cut to fit 2,400 bytes with
  ``\\n---Output truncated---`` / ``\\n---Error truncated----`` marks (amazon-ssm-agent,
  ``agent/contracts/plugin.go``, ``TruncateOutput``).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Sequence
from typing import Any

MAX_RESULTS = 50  # CommandMaxResults: "max": 50, "min": 1
MAX_FILTERS = 5  # CommandFilterList: "max": 5, "min": 1
FILTER_KEYS = frozenset({"InvokedAfter", "InvokedBefore", "Status", "ExecutionStage", "DocumentName"})
EXECUTING = frozenset({"Pending", "InProgress", "Delayed", "Cancelling"})
# amazon-ssm-agent agent/contracts/plugin.go
PLUGIN_OUTPUT_CAPACITY = 2400  # MaximumPluginOutputSize
ERROR_TITLE = "\n----------ERROR-------\n"
TRUNC_OUT = "\n---Output truncated---"
TRUNC_ERROR = "\n---Error truncated----"


class ListingError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def truncate_output(stdout: str, stderr: str, capacity: int = PLUGIN_OUTPUT_CAPACITY) -> str:
    """The agent's TruncateOutput, on UTF-8 bytes as Go's ``len`` and slices count them."""
    out, err = stdout.encode(), stderr.encode()
    title = ERROR_TITLE.encode() if err else b""
    space = capacity - len(title)
    t_out, t_err = TRUNC_OUT.encode(), TRUNC_ERROR.encode()
    if len(out) + len(err) < space:
        joined = out + title + err
    elif len(out) > space // 2 and len(err) > space // 2:
        size = space - len(t_err) - len(t_out)
        joined = out[: size // 2] + t_out + title + err[: size // 2] + t_err
    elif len(out) < space // 2:
        size = space - len(t_err)
        joined = out + title + err[: size - len(out)] + t_err
    else:
        size = space - len(t_out)
        joined = out[: size - len(err)] + t_out + title + err
    return joined.decode("utf-8", errors="replace")


def check_filters(filters: Sequence[dict[str, Any]], operation: str) -> list[Callable[[dict[str, Any]], bool]]:
    """Each filter as a test of a row (``Status``, ``StatusDetails``, ``DocumentName``,
    ``RequestedDateTime``); refuses what the API refuses."""
    if filters and len(filters) > MAX_FILTERS:
        raise ListingError("ValidationException", f"Filters: at most {MAX_FILTERS} filters")
    tests = []
    for entry in filters:
        key, value = str(entry.get("key") or ""), str(entry.get("value") or "")
        if key not in FILTER_KEYS or (key == "ExecutionStage" and operation == "ListCommandInvocations"):
            raise ListingError("InvalidFilterKey", f"The filter key {key} is not valid for {operation}.")
        if not 1 <= len(value) <= 128:
            raise ListingError("ValidationException", "A filter value must have 1 to 128 characters.")
        tests.append(_test(key, value))
    return tests


def _test(key: str, value: str) -> Callable[[dict[str, Any]], bool]:
    if key in ("InvokedAfter", "InvokedBefore"):
        try:
            when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ListingError("ValidationException", f"{key}: {value} is not a timestamp") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        if key == "InvokedAfter":
            return lambda row: _aware(row["RequestedDateTime"]) >= when
        return lambda row: _aware(row["RequestedDateTime"]) < when
    if key == "DocumentName":
        return lambda row: row.get("DocumentName") == value
    if key == "ExecutionStage":
        if value not in ("Executing", "Complete"):
            raise ListingError("ValidationException", f"ExecutionStage: {value} is neither Executing nor Complete")
        return lambda row: (row.get("Status") in EXECUTING) == (value == "Executing")
    if value == "TimedOut":
        return lambda row: (
            row.get("Status") == "TimedOut"
            or row.get("StatusDetails")
            in (
                "DeliveryTimedOut",
                "ExecutionTimedOut",
            )
        )
    return lambda row: value in (row.get("Status"), row.get("StatusDetails"))


def _aware(moment: datetime.datetime) -> datetime.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.UTC)


def page(rows: Iterable[dict[str, Any]], request: dict[str, Any], key: str) -> dict[str, Any]:
    """One page of ``rows`` under ``key``, per MaxResults and NextToken (an offset here)."""
    listed = list(rows)
    max_results = int(request.get("MaxResults") or MAX_RESULTS)
    if not 1 <= max_results <= MAX_RESULTS:
        raise ListingError(
            "ValidationException",
            f"1 validation error detected: Value '{max_results}' at 'maxResults' failed to satisfy constraint: "
            f"Member must have value less than or equal to {MAX_RESULTS}",
        )
    token = request.get("NextToken")
    try:
        start = int(token or 0)
    except ValueError:
        raise ListingError("InvalidNextToken", "The specified token isn't valid.") from None
    result: dict[str, Any] = {key: listed[start : start + max_results]}
    if start + max_results < len(listed):
        result["NextToken"] = str(start + max_results)
    return result


def newest_first(commands: Iterable[Any], requested_at: Callable[[Any], datetime.datetime]) -> list[Any]:
    return sorted(commands, key=lambda command: _aware(requested_at(command)), reverse=True)
