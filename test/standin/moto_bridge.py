"""The one place that touches moto internals (pinned to moto 5.2.5; see standin-notes).

moto's Run Command runs nothing and lacks some actions. This module teaches the SSM server the
missing actions and hands every SendCommand to a ``RunCommandHooks`` implementation (the agent
model in ``service.py``), which updates invocations through ``MotoCommand``.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, Protocol

import moto
from moto import settings as moto_settings
from moto.core.authorization import ActionAuthenticatorMixin
from moto.core.responses import ActionResult, BaseResponse
from moto.logs.exceptions import ResourceNotFoundException
from moto.logs.responses import LogsResponse
from moto.ssm.exceptions import SSMException
from moto.ssm.models import Command
from moto.ssm.responses import SimpleSystemManagerResponse
from moto.sts.models import sts_backends

MOTO_VERSION = "5.2.5"
if moto.__version__ != MOTO_VERSION:  # pragma: no cover - guards an upgrade
    raise RuntimeError(
        f"test/standin/moto_bridge.py is written for moto {MOTO_VERSION}, found {moto.__version__}: "
        "re-check the patched internals before changing the pin in requirements-dev.txt"
    )

_ACTIVE_STATUSES = {"Pending", "InProgress", "Delayed", "Cancelling"}


class ServiceError(SSMException):
    """An AWS-style error answer (code + message) from a patched action."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)


class MotoCommand:
    """A moto Command seen through the fields the stand-in needs."""

    def __init__(self, command: Command) -> None:
        self._command = command

    @property
    def command_id(self) -> str:
        return str(self._command.command_id)

    @property
    def instance_ids(self) -> list[str]:
        return list(self._command.instance_ids)

    @property
    def parameters(self) -> dict[str, list[str]]:
        return dict(self._command.parameters)

    @property
    def document_name(self) -> str:
        return str(self._command.document_name)

    @property
    def delivery_timeout(self) -> int:
        return int(self._command.timeout_seconds)

    @property
    def cloudwatch_output(self) -> dict[str, Any]:
        return dict(getattr(self._command, "cloud_watch_output_config", {}) or {})

    @property
    def requested_at(self) -> datetime.datetime:
        return self._command.requested_date_time

    def keep_only(self, instance_ids: list[str]) -> None:
        """Drop what moto added on its own (it targets every instance when Targets is empty)."""
        wanted = set(instance_ids)
        self._command.instance_ids = [i for i in instance_ids]
        self._command.invocations = [inv for inv in self._command.invocations if inv["InstanceId"] in wanted]
        self._command.target_count = len(instance_ids)

    def invocation(self, instance_id: str) -> dict[str, Any]:
        for item in self._command.invocations:
            if item["InstanceId"] == instance_id:
                return item
        raise KeyError(instance_id)

    def update_invocation(self, instance_id: str, **fields: Any) -> None:
        self.invocation(instance_id).update(fields)
        self._refresh_command_status()

    def invocations(self) -> list[dict[str, Any]]:
        return [dict(item) for item in self._command.invocations]

    def _refresh_command_status(self) -> None:
        statuses = [item["Status"] for item in self._command.invocations]
        finished = [s for s in statuses if s not in _ACTIVE_STATUSES]
        self._command.completed_count = len(finished)
        self._command.error_count = sum(1 for s in finished if s != "Success")
        if len(finished) < len(statuses):
            status = "InProgress" if any(s != "Pending" for s in statuses) else "Pending"
        elif all(s == "Success" for s in statuses):
            status = "Success"
        elif "Cancelled" in statuses:
            status = "Cancelled"
        elif "TimedOut" in statuses:
            status = "TimedOut"
        else:
            status = "Failed"
        self._command.status = status
        self._command.status_details = status


class RunCommandHooks(Protocol):
    def on_send_command(self, command: MotoCommand, caller_arn: str, request: dict[str, Any]) -> None: ...
    def on_cancel_command(self, command: MotoCommand, instance_ids: list[str]) -> None: ...
    def instance_information(self, instance_ids: list[str] | None) -> list[dict[str, Any]]: ...
    def before_request(self, action: str, caller_arn: str, request: dict[str, Any]) -> None: ...
    def invocations_visible(self, command_id: str) -> bool: ...


_hooks: RunCommandHooks | None = None
_originals: dict[str, Any] = {}


def caller_arn(response: BaseResponse) -> str:
    """The ARN behind the request's access key: an assumed role, or the account root."""
    access_key = response.get_access_key()
    account = response.current_account
    for backend in sts_backends[account].values():
        role = backend.get_assumed_role_from_access_key(access_key)
        if role is not None:
            return str(role.arn)
    return f"arn:aws:iam::{account}:user/{access_key}"


def _hooks_or_fail() -> RunCommandHooks:
    if _hooks is None:  # pragma: no cover
        raise RuntimeError("moto_bridge.install() was not called")
    return _hooks


def _request(response: SimpleSystemManagerResponse) -> dict[str, Any]:
    """The request's JSON body (SSM speaks the JSON protocol)."""
    body = response.body
    if isinstance(body, bytes):
        body = body.decode("utf-8")
    loaded = json.loads(body or "{}")
    return loaded if isinstance(loaded, dict) else {}


def _patched_send_command(self: SimpleSystemManagerResponse) -> ActionResult:
    hooks = _hooks_or_fail()
    request = _request(self)
    hooks.before_request("SendCommand", caller_arn(self), request)
    requested = list(request.get("InstanceIds") or [])  # moto extends the list it is given
    original = _originals["send_command"](self)
    command_id = original.result["Command"]["CommandId"]
    raw = self.ssm_backend.get_command_by_id(command_id)
    setattr(raw, "cloud_watch_output_config", request.get("CloudWatchOutputConfig") or {})  # noqa: B010
    command = MotoCommand(raw)
    if not request.get("Targets"):
        command.keep_only(requested)
    for instance_id in command.instance_ids:
        command.update_invocation(
            instance_id,
            Status="Pending",
            StatusDetails="Pending",
            ResponseCode=-1,
            ExecutionStartDateTime="",
            ExecutionElapsedTime="",
            ExecutionEndDateTime="",
        )
    hooks.on_send_command(command, caller_arn(self), request)
    return ActionResult({"Command": self.ssm_backend.get_command_by_id(command_id).response_object()})


def _list_command_invocations(self: SimpleSystemManagerResponse) -> ActionResult:
    hooks = _hooks_or_fail()
    request = _request(self)
    hooks.before_request("ListCommandInvocations", caller_arn(self), request)
    command_id = request.get("CommandId")
    instance_id = request.get("InstanceId")
    details = bool(request.get("Details"))
    max_results = int(request.get("MaxResults") or 50)
    start = int(request.get("NextToken") or 0)
    commands = [self.ssm_backend.get_command_by_id(command_id)] if command_id else list(self.ssm_backend._commands)
    rows: list[dict[str, Any]] = []
    for raw in commands:
        if not hooks.invocations_visible(raw.command_id):
            continue  # eventual consistency: a new command's invocations are not listed yet
        command = MotoCommand(raw)
        for item in command.invocations():
            if instance_id and item["InstanceId"] != instance_id:
                continue
            rows.append(_invocation_row(raw, item, details))
    page = rows[start : start + max_results]
    result: dict[str, Any] = {"CommandInvocations": page}
    if start + max_results < len(rows):
        result["NextToken"] = str(start + max_results)
    return ActionResult(result)


def _invocation_row(command: Command, item: dict[str, Any], details: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "CommandId": command.command_id,
        "InstanceId": item["InstanceId"],
        "Comment": command.comment,
        "DocumentName": command.document_name,
        "DocumentVersion": "$DEFAULT",
        "RequestedDateTime": command.requested_date_time,
        "Status": item["Status"],
        "StatusDetails": item["StatusDetails"],
        "StandardOutputUrl": "",
        "StandardErrorUrl": "",
        "CloudWatchOutputConfig": getattr(command, "cloud_watch_output_config", {}) or {},
    }
    if details:
        row["CommandPlugins"] = [
            {
                "Name": item.get("PluginName", "aws:runShellScript"),
                "Status": item["Status"],
                "StatusDetails": item["StatusDetails"],
                "ResponseCode": item.get("ResponseCode", -1),
                "Output": (item.get("StandardOutputContent") or "")[:2500],
            }
        ]
    return row


def _cancel_command(self: SimpleSystemManagerResponse) -> ActionResult:
    hooks = _hooks_or_fail()
    request = _request(self)
    hooks.before_request("CancelCommand", caller_arn(self), request)
    command = MotoCommand(self.ssm_backend.get_command_by_id(str(request.get("CommandId"))))
    hooks.on_cancel_command(command, list(request.get("InstanceIds") or command.instance_ids))
    return ActionResult({})


def _describe_instance_information(self: SimpleSystemManagerResponse) -> ActionResult:
    hooks = _hooks_or_fail()
    request = _request(self)
    hooks.before_request("DescribeInstanceInformation", caller_arn(self), request)
    wanted: list[str] | None = None
    for entry in (request.get("Filters") or []) + (request.get("InstanceInformationFilterList") or []):
        key = entry.get("Key") or entry.get("key")
        if key in ("InstanceIds", "InstanceIds".lower()):
            wanted = list(entry.get("Values") or entry.get("valueSet") or [])
    rows = hooks.instance_information(wanted)
    max_results = int(request.get("MaxResults") or 50)
    start = int(request.get("NextToken") or 0)
    result: dict[str, Any] = {"InstanceInformationList": rows[start : start + max_results]}
    if start + max_results < len(rows):
        result["NextToken"] = str(start + max_results)
    return ActionResult(result)


def _get_command_invocation(self: SimpleSystemManagerResponse) -> Any:
    hooks = _hooks_or_fail()
    request = _request(self)
    hooks.before_request("GetCommandInvocation", caller_arn(self), request)
    if not hooks.invocations_visible(str(request.get("CommandId"))):
        raise ServiceError(
            "InvocationDoesNotExist",
            "An error occurred (InvocationDoesNotExist) when calling the GetCommandInvocation operation",
        )
    return _originals["get_command_invocation"](self)


def _guarded(action: str, name: str) -> Any:
    def method(self: SimpleSystemManagerResponse) -> Any:
        request = _request(self)
        if action in ("GetParameter", "GetParameters") and request.get("WithDecryption"):
            names = request.get("Names") or [request.get("Name")]
            request["KmsKeyIds"] = [k for k in (parameter_key_id(self, n) for n in names) if k]
        _hooks_or_fail().before_request(action, caller_arn(self), request)
        return _originals[name](self)

    return method


def _filter_log_events(self: LogsResponse) -> str:
    """FilterLogEvents with ``logStreamNamePrefix``, which moto ignores (it searches every stream)."""
    _hooks_or_fail().before_request("FilterLogEvents", caller_arn(self), {})
    group_name = self._get_param("logGroupName")
    names = self._get_param("logStreamNames", [])
    prefix = self._get_param("logStreamNamePrefix")
    if prefix:
        group = self.logs_backend.groups.get(group_name)
        if group is None:
            raise ResourceNotFoundException()
        names = [name for name in group.streams if name.startswith(prefix)]
        if not names:
            return json.dumps({"events": [], "searchedLogStreams": []})
    events, next_token, searched = self.logs_backend.filter_log_events(
        group_name,
        names,
        self._get_param("startTime"),
        self._get_param("endTime"),
        self._get_param("limit"),
        self._get_param("nextToken"),
        self._get_param("filterPattern"),
        True,
    )
    result: dict[str, Any] = {"events": events, "searchedLogStreams": searched}
    if next_token:
        result["nextToken"] = next_token
    return json.dumps(result)


def parameter_key_id(response: SimpleSystemManagerResponse, name: str) -> str | None:
    """The KMS key id of a SecureString parameter (None for plain parameters or unknown names)."""
    found = response.ssm_backend.get_parameters([name])
    parameter = found.get(name)
    if parameter is None or parameter.parameter_type != "SecureString":
        return None
    return str(parameter.keyid or "alias/aws/ssm")


def install(hooks: RunCommandHooks) -> None:
    """Patch the SSM server; later calls only swap the hooks."""
    global _hooks
    _hooks = hooks
    if _originals:
        return
    _originals["send_command"] = SimpleSystemManagerResponse.send_command
    _originals["get_parameters"] = SimpleSystemManagerResponse.get_parameters
    _originals["get_parameter"] = SimpleSystemManagerResponse.get_parameter
    _originals["get_command_invocation"] = SimpleSystemManagerResponse.get_command_invocation
    _originals["list_commands"] = SimpleSystemManagerResponse.list_commands
    patches: dict[str, Any] = {
        "send_command": _patched_send_command,
        "list_command_invocations": _list_command_invocations,
        "cancel_command": _cancel_command,
        "describe_instance_information": _describe_instance_information,
        "get_parameters": _guarded("GetParameters", "get_parameters"),
        "get_parameter": _guarded("GetParameter", "get_parameter"),
        "get_command_invocation": _get_command_invocation,
        "list_commands": _guarded("ListCommands", "list_commands"),
    }
    for name, method in patches.items():
        setattr(SimpleSystemManagerResponse, name, method)
    _originals["filter_log_events"] = LogsResponse.filter_log_events
    setattr(LogsResponse, "filter_log_events", _filter_log_events)  # noqa: B010


def issued_credentials() -> list[tuple[str, str, str]]:
    """(access key, secret key, session token) of every role session STS handed out."""
    found = []
    for partitions in list(sts_backends.values()):
        for backend in list(partitions.values()):
            for role in backend.assumed_roles:
                found.append((str(role.access_key_id), str(role.secret_access_key), str(role.session_token)))
    return found


def set_iam_enforcement(enabled: bool) -> None:
    """Make moto check every request's signature and IAM policies (True), or let all through (False).

    moto evaluates actions and principals, but sees every SSM and Logs request's resource as "*"
    and does not evaluate policy conditions: resource scoping cannot be tested here.
    """
    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0 if enabled else float("inf")
    ActionAuthenticatorMixin.request_count = 0
