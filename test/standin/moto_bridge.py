"""The one place that touches moto internals (pinned to moto 5.2.5; see standin-notes).

moto's Run Command runs nothing and lacks some actions. This module teaches the SSM server the
missing actions and hands every SendCommand to a ``RunCommandHooks`` implementation (the agent
model in ``service.py``), which updates invocations through ``MotoCommand``. SendCommand's
target instances are chosen by the hooks (moto's own ``Targets`` handling, which matches every
EC2 instance in any state, is switched off), reading EC2 tags and resource groups through the
readers below; Resource Groups' ListGroupResources (missing in moto) answers tag-based groups.
Every request to any service is reported to ``hooks.on_call`` (call counting); S3, which moto
routes without naming the operation, under the operation's name from ``s3_api``. STS sessions end as
in AWS: a request signed with an expired session key is refused (ExpiredTokenException), and so is
AssumeRoleWithWebIdentity with a web identity token (JWT) past its ``exp``.

Where moto answers differently from AWS's documentation in what the pipe relies on, the behaviour is
fixed here too: S3 additional checksums (checked, stored and reported as S3 does), Parameter
Store's value size per tier, SendCommand's AlarmConfiguration (kept and echoed with TriggeredAlarms;
``command_alarm.py`` applies it), ELBv2 target health (RegisterTargets, DeregisterTargets and
DescribeTargetHealth go to ``load_balancer.LoadBalancerModel``; unknown or stopped instances are
InvalidTarget), DescribeTargetGroups paging, and CloudWatch's IAM actions ("cloudwatch:...", where
moto checks the signing name "monitoring"). Two lookups moto's server repeats for every request with
the same answer (its package folder's services, a class's methods) are made once: CPU, not behaviour.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import json
import re
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse

import moto
from moto import backends as moto_backends
from moto import settings as moto_settings
from moto.cloudwatch.models import cloudwatch_backends
from moto.core import responses as moto_responses
from moto.core import utils as moto_utils
from moto.core.authorization import ActionAuthenticatorMixin
from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult, BaseResponse
from moto.core.utils import utcnow
from moto.ec2.models import ec2_backends
from moto.elbv2.exceptions import TargetGroupNotFoundError
from moto.elbv2.models import elbv2_backends
from moto.elbv2.responses import ELBV2Response
from moto.iam.access_control import IAMRequestBase
from moto.iam.models import iam_backends
from moto.logs.exceptions import ResourceNotFoundException
from moto.logs.models import LogStream
from moto.logs.responses import LogsResponse
from moto.resourcegroups import urls as resourcegroups_urls
from moto.resourcegroups.exceptions import NotFoundException
from moto.resourcegroups.models import resourcegroups_backends
from moto.resourcegroups.responses import ResourceGroupsResponse
from moto.s3.responses import S3Response
from moto.s3.utils import compute_checksum
from moto.ssm.exceptions import SSMException
from moto.ssm.models import Command, ssm_backends
from moto.ssm.responses import SimpleSystemManagerResponse
from moto.sts.models import STSBackend, sts_backends
from moto.sts.responses import TokenResponse

from standin import eventstream, listings, s3_api
from standin.associations import AssociationError, Associations
from standin.live_tail import LiveTailRefused, LogsReads
from standin.load_balancer import GroupSettings, LoadBalancerModel
from standin.targets import group_matcher

MOTO_VERSION = "5.2.5"
if moto.__version__ != MOTO_VERSION:  # pragma: no cover - guards an upgrade
    raise RuntimeError(
        f"test/standin/moto_bridge.py is written for moto {MOTO_VERSION}, found {moto.__version__}: "
        "re-check the patched internals before changing the pin in requirements-dev.txt"
    )

_NO_TAGS: Mapping[str, str] = MappingProxyType({})
TagReader = Callable[[str], Mapping[str, str]]
GroupReader = Callable[[str], Mapping[str, Any] | None]


class ServiceError(SSMException):
    """An AWS-style error answer (code + message) from a patched action."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)


class AwsError(ServiceException):
    """An error of any service, in that service's protocol (defined here, outside moto, so that moto
    serializes it with the service of the request rather than the module of the class)."""

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

    def shell_script(self) -> str | None:
        """What an instance runs: COMMANDS of AWS-RunShellScript, or a custom document's
        aws:runShellScript steps with {{ parameters }} filled in (document defaults, then the
        command's values). None for documents the stand-in cannot run (AWS-RunPowerShellScript)."""
        name = self.document_name
        if name == "AWS-RunShellScript":
            return "\n".join(self.parameters.get("commands", []))
        if name.startswith("AWS-"):
            return None
        backend = ssm_backends[self._command.account_id][self._command.backend_region]
        content = _document_content(backend, name, getattr(self._command, "document_version", None))
        values: dict[str, Any] = {key: spec.get("default", "") for key, spec in content.get("parameters", {}).items()}
        values.update(self.parameters)

        def fill(match: re.Match[str]) -> str:
            value = values.get(match.group(1), "")
            return "\n".join(value) if isinstance(value, list) else str(value)

        lines = []
        for step in content.get("mainSteps", []):
            if step.get("action") != "aws:runShellScript":
                continue
            run = step.get("inputs", {}).get("runCommand", [])
            for line in [run] if isinstance(run, str) else run:
                lines.append(re.sub(r"\{\{\s*(\w+)\s*\}\}", fill, str(line)))
        return "\n".join(lines)

    @property
    def s3_output(self) -> tuple[str, str]:
        """(OutputS3BucketName, OutputS3KeyPrefix); an empty bucket when S3 output is off."""
        return str(self._command.output_s3_bucket_name or ""), str(self._command.output_s3_key_prefix or "")

    @property
    def cloudwatch_output(self) -> dict[str, Any]:
        return dict(getattr(self._command, "cloud_watch_output_config", {}) or {})

    @property
    def requested_at(self) -> datetime.datetime:
        return self._command.requested_date_time

    def target(self, instance_ids: list[str]) -> None:
        """Make ``instance_ids`` (in this order) the command's invocations and TargetCount."""
        existing = {item["InstanceId"]: item for item in self._command.invocations}
        self._command.instance_ids = list(instance_ids)
        self._command.invocations = [
            existing.get(i) or self._command.invocation_response(i, "aws:runShellScript") for i in instance_ids
        ]
        self._command.target_count = len(instance_ids)
        index = {item["InstanceId"]: item for item in self._command.invocations}
        setattr(self._command, "standin_index", index)  # noqa: B010 - O(1) updates for big fleets

    def invocation(self, instance_id: str) -> dict[str, Any]:
        index: dict[str, dict[str, Any]] | None = getattr(self._command, "standin_index", None)
        if index is not None:
            return index[instance_id]
        for item in self._command.invocations:
            if item["InstanceId"] == instance_id:
                return item
        raise KeyError(instance_id)

    def update_invocation(self, instance_id: str, **fields: Any) -> None:
        self.invocation(instance_id).update(fields)

    def invocations(self) -> list[dict[str, Any]]:
        return [dict(item) for item in self._command.invocations]

    def statuses(self) -> list[tuple[str, str]]:
        """(Status, StatusDetails) of every invocation, in order."""
        return [(item["Status"], item["StatusDetails"]) for item in self._command.invocations]

    @property
    def alarm_configuration(self) -> dict[str, Any]:
        """SendCommand's AlarmConfiguration ({} without one)."""
        return dict(getattr(self._command, "alarm_configuration", {}) or {})

    def alarm_state(self, name: str) -> str | None:
        """The CloudWatch alarm's StateValue (OK, ALARM, INSUFFICIENT_DATA); None if there is no such alarm."""
        backend = cloudwatch_backends[self._command.account_id][self._command.backend_region]
        alarm = backend.alarms.get(name)
        return None if alarm is None else str(alarm.state_value)

    def set_triggered_alarms(self, alarms: list[dict[str, str]]) -> None:
        """The command's TriggeredAlarms ([{"Name", "State": "ALARM" | "UNKNOWN"}])."""
        setattr(self._command, "triggered_alarms", list(alarms))  # noqa: B010

    def set_summary(self, status: str, details: str, completed: int, errors: int, delivery_timed_out: int) -> None:
        """The command's overall status and counts, as ListCommands reports them."""
        self._command.status = status
        self._command.status_details = details
        self._command.completed_count = completed
        self._command.error_count = errors
        setattr(self._command, "delivery_timed_out_count", delivery_timed_out)  # noqa: B010


class RunCommandHooks(Protocol):
    def select_instances(self, request: dict[str, Any], tags_of: TagReader, group_query: GroupReader) -> list[str]: ...
    def on_send_command(self, command: MotoCommand, caller_arn: str, request: dict[str, Any]) -> None: ...
    def on_cancel_command(self, command: MotoCommand, instance_ids: list[str]) -> None: ...
    def instance_information(self, filters: list[dict[str, Any]], ec2_tags: TagReader) -> list[dict[str, Any]]: ...
    def before_request(self, action: str, caller_arn: str, request: dict[str, Any]) -> None: ...
    def invocations_visible(self, command_id: str) -> bool: ...
    def on_call(self, service: str, action: str, user_agent: str) -> None: ...


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


def _document_content(backend: Any, name: str, version: str | None) -> dict[str, Any]:
    numbered = version if version and version.isdigit() else None
    info = backend.get_document(name, numbered, None, "JSON")
    content: dict[str, Any] = json.loads(info["Content"])
    return content


def _check_document(response: SimpleSystemManagerResponse, name: str, version: str | None) -> None:
    """SendCommand refuses a document that does not exist (AWS's own documents are not stored)."""
    if name.startswith("AWS-"):
        return
    try:
        _document_content(response.ssm_backend, name, version)
    except Exception:
        raise ServiceError("InvalidDocument", f"Document with name {name} does not exist.") from None


def _patched_send_command(self: SimpleSystemManagerResponse) -> ActionResult:
    hooks = _hooks_or_fail()
    request = _request(self)
    hooks.before_request("SendCommand", caller_arn(self), request)
    _check_document(self, str(request.get("DocumentName") or ""), request.get("DocumentVersion"))
    wanted = hooks.select_instances(request, ec2_tag_reader(self), resource_group_reader(self))
    original = _originals["send_command"](self)  # moto's targets lookup is off: see install()
    command_id = original.result["Command"]["CommandId"]
    raw = self.ssm_backend.get_command_by_id(command_id)
    setattr(raw, "cloud_watch_output_config", request.get("CloudWatchOutputConfig") or {})  # noqa: B010
    setattr(raw, "document_version", request.get("DocumentVersion"))  # noqa: B010
    setattr(raw, "alarm_configuration", request.get("AlarmConfiguration") or {})  # noqa: B010
    command = MotoCommand(raw)
    command.target(wanted)
    for instance_id in wanted:
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


def ec2_tag_reader(response: BaseResponse) -> TagReader:
    """Reads an EC2 instance's tags from moto (read-only; no copy, no entry created). The
    backend is looked up on first use: moto has no EC2 backend for made-up regions."""
    account, region = response.current_account, response.region
    found: list[dict[str, dict[str, str]]] = []

    def read(instance_id: str) -> Mapping[str, str]:
        if not found:
            found.append(ec2_backends[account][region].tags)
        return found[0].get(instance_id) or _NO_TAGS

    return read


def resource_group_reader(response: BaseResponse) -> GroupReader:
    """Reads a resource group's ResourceQuery ({"Type", "Query"}) from moto; None if no such group."""
    account, region = response.current_account, response.region

    def read(name: str) -> Mapping[str, Any] | None:
        group = resourcegroups_backends[account][region].groups.by_name.get(name)
        return None if group is None else dict(group.resource_query or {})

    return read


def _list_group_resources(self: ResourceGroupsResponse) -> str:
    """ListGroupResources (moto: NotImplementedError) for tag-based groups, over EC2 instances
    (every instance that is not terminated, managed or not: Resource Groups knows nothing of SSM)."""
    name = str(self._get_param("Group") or self._get_param("GroupName") or "")
    groups = self.resourcegroups_backend.groups
    group = groups.by_name.get(name) or groups.by_arn.get(name)
    if group is None:
        raise NotFoundException()
    wanted_types = [
        value
        for entry in self._get_param("Filters") or []
        if entry.get("Name") == "resource-type"
        for value in entry.get("Values") or []
    ]
    ec2 = ec2_backends[self.current_account][self.region]
    match = group_matcher(dict(group.resource_query or {}), ec2_tag_reader(self))
    arn = f"arn:aws:ec2:{self.region}:{self.current_account}:instance/"
    rows = [
        {"ResourceArn": arn + instance.id, "ResourceType": "AWS::EC2::Instance"}
        for instance in ec2.all_instances()
        if instance.state != "terminated" and match(instance.id)
    ]
    if wanted_types and "AWS::EC2::Instance" not in wanted_types:
        rows = []
    max_results = int(self._get_param("MaxResults") or 50)
    start = int(self._get_param("NextToken") or 0)
    page = rows[start : start + max_results]
    result: dict[str, Any] = {
        "ResourceIdentifiers": page,
        "Resources": [{"Identifier": row} for row in page],
        "QueryErrors": [],
    }
    if start + max_results < len(rows):
        result["NextToken"] = str(start + max_results)
    return json.dumps(result)


def _no_targets_lookup(self: Command) -> list[str]:
    """moto matches Targets against every EC2 instance of the region; the hooks choose instead."""
    return []


def _response_object(self: Command) -> dict[str, Any]:
    """moto's Command row with the DeliveryTimedOutCount the stand-in keeps (moto says 0)."""
    result: dict[str, Any] = _originals["response_object"](self)
    result["DeliveryTimedOutCount"] = int(getattr(self, "delivery_timed_out_count", 0))
    alarms = getattr(self, "alarm_configuration", None)
    if alarms:  # moto ignores SendCommand's AlarmConfiguration; the Command shape echoes it
        result["AlarmConfiguration"] = {"IgnorePollAlarmFailure": False, **alarms}
        result["TriggeredAlarms"] = list(getattr(self, "triggered_alarms", []))
    return result


def _counted_call_action(self: BaseResponse) -> Any:
    """Every request of every service, reported before moto authenticates and answers it; one signed
    with an expired STS session is refused as AWS does (common error ExpiredTokenException, 403)."""
    hooks = _hooks
    if hooks is not None:
        try:
            action = self._get_action() or "?"
        except Exception:  # pragma: no cover - an unroutable request still counts
            action = "?"
        hooks.on_call(self.boto3_service_name or "?", str(action), str(self.headers.get("User-Agent", "")))
    if _signed_with_expired_session(self):
        error = AwsError("ExpiredTokenException", "The security token included in the request is expired")
        with warnings.catch_warnings():  # a common error: in no service's model, as moto warns
            warnings.simplefilter("ignore", UserWarning)
            _, headers, body = self.serialized(ActionResult(error))
        return 403, headers, body
    return _originals["call_action"](self)


# --- STS sessions that end ------------------------------------------------------------------------
_session_seconds: list[int] = []  # empty: sessions last as long as asked


def set_session_seconds(seconds: int | None) -> None:
    """Role sessions issued from now on (AssumeRole, AssumeRoleWithWebIdentity) last at most
    ``seconds`` (None: as asked). AWS's shortest is 900 s; the stand-in shortens time so that a test
    can watch sessions run out."""
    _session_seconds[:] = [] if seconds is None else [max(1, int(seconds))]


def expire_session(access_key_id: str) -> bool:
    """End the STS session of ``access_key_id`` now, as if its time had run out; False if unknown."""
    for partitions in list(sts_backends.values()):
        for backend in list(partitions.values()):
            role = backend.get_assumed_role_from_access_key(access_key_id)
            if role is not None:
                role.expiration = utcnow() - datetime.timedelta(seconds=1)
                return True
    return False


def _capped_assume_role(self: STSBackend, **kwargs: Any) -> Any:
    """AWS refuses a session longer than the role's maximum session duration (for a role that exists
    here: moto lets any ARN be assumed); then ``set_session_seconds`` may shorten it."""
    longest = _max_session_duration(str(kwargs.get("role_arn") or ""))
    if longest is not None and int(kwargs["duration"]) > longest:
        raise AwsError(
            "ValidationError", "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
        )
    if _session_seconds:
        kwargs["duration"] = min(int(kwargs["duration"]), _session_seconds[0])
    return _originals["assume_role"](self, **kwargs)


def _max_session_duration(role_arn: str) -> int | None:
    found = re.fullmatch(r"arn:(aws[\w-]*):iam::([0-9]{12}):role/.+", role_arn)
    if found is None:
        return None
    partition, account = found.groups()
    try:
        role = iam_backends[account][partition].get_role_by_arn(role_arn)
    except Exception:  # moto's NotFoundException: an ARN of no role here
        return None
    return int(role.max_session_duration or 3600)


def _signed_with_expired_session(response: BaseResponse) -> bool:
    access_key = response.get_access_key()
    if not access_key.startswith("ASIA"):  # moto's session keys; long-term keys never expire
        return False
    for backend in sts_backends[response.current_account].values():
        role = backend.get_assumed_role_from_access_key(access_key)
        if role is not None:
            return bool(role.expiration <= utcnow())
    return False


def _assume_role_with_web_identity(self: TokenResponse) -> Any:
    """AWS refuses a web identity token past its ``exp`` claim (a token that is not a JWT passes, as
    moto checks nothing else of it)."""
    expires = token_expiry(str(self._get_param("WebIdentityToken") or ""))
    now = int(time.time())
    if expires is not None and expires <= now:
        raise AwsError(
            "ExpiredTokenException",
            f"Token expired: current date/time {now} must be before the expiration date/time {expires}",
        )
    return _originals["assume_role_with_web_identity"](self)


def token_expiry(token: str) -> int | None:
    """The ``exp`` claim of a JWT (seconds since the epoch), or None when it is not a JWT with one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    expires = claims.get("exp") if isinstance(claims, dict) else None
    return int(expires) if isinstance(expires, int | float) else None


def _counted_s3(original: str, names_object: bool) -> Any:
    """S3's bucket_response / key_response, reporting the request's operation first (path-style
    URLs, which the SDKs use for an endpoint given by IP address: the bucket is the first segment)."""

    def method(self: S3Response, request: Any, full_url: str, headers: Any) -> Any:
        hooks = _hooks
        if hooks is not None:
            parsed = urlparse(full_url)
            query = set(parse_qs(parsed.query, keep_blank_values=True)) | set(getattr(request, "args", {}) or {})
            bucket = parsed.path.lstrip("/").split("/", 1)[0]
            # werkzeug's headers iterate as (name, value) pairs
            header_names = {str(name).lower() for name in request.headers.keys()}  # noqa: SIM118
            name = s3_api.operation(request.method, bool(bucket), names_object, query, header_names)
            hooks.on_call("s3", name, str(request.headers.get("User-Agent", "")))
        return _originals[original](self, request, full_url, headers)

    return method


def _list_commands(self: SimpleSystemManagerResponse) -> ActionResult:
    """ListCommands with Filters, MaxResults and NextToken (see ``listings``), newest first."""
    hooks = _hooks_or_fail()
    request = _request(self)
    hooks.before_request("ListCommands", caller_arn(self), request)
    command_id, instance_id = request.get("CommandId"), request.get("InstanceId")
    try:
        tests = listings.check_filters(request.get("Filters") or [], "ListCommands")
        if command_id:
            commands = [self.ssm_backend.get_command_by_id(command_id)]
        else:
            commands = listings.newest_first(self.ssm_backend._commands, lambda c: c.requested_date_time)
        rows = [raw.response_object() for raw in commands if not instance_id or instance_id in raw.instance_ids]
        rows = [row for row in rows if all(test(row) for test in tests)]
        return ActionResult(listings.page(rows, request, "Commands"))
    except listings.ListingError as error:
        raise ServiceError(error.code, error.message) from None


def _list_command_invocations(self: SimpleSystemManagerResponse) -> ActionResult:
    """ListCommandInvocations with Filters, MaxResults and NextToken (see ``listings``); with
    Details, each plugin's Output as the agent reports it (stdout and stderr, cut to 2,400 bytes)."""
    hooks = _hooks_or_fail()
    request = _request(self)
    hooks.before_request("ListCommandInvocations", caller_arn(self), request)
    command_id = request.get("CommandId")
    instance_id = request.get("InstanceId")
    details = bool(request.get("Details"))
    try:
        tests = listings.check_filters(request.get("Filters") or [], "ListCommandInvocations")
        if command_id:
            commands = [self.ssm_backend.get_command_by_id(command_id)]
        else:
            commands = listings.newest_first(self.ssm_backend._commands, lambda c: c.requested_date_time)
        rows: list[dict[str, Any]] = []
        for raw in commands:
            if not hooks.invocations_visible(raw.command_id):
                continue  # eventual consistency: a new command's invocations are not listed yet
            for item in MotoCommand(raw).invocations():
                if instance_id and item["InstanceId"] != instance_id:
                    continue
                row = _invocation_row(raw, item, details)
                if all(test(row) for test in tests):
                    rows.append(row)
        return ActionResult(listings.page(rows, request, "CommandInvocations"))
    except listings.ListingError as error:
        raise ServiceError(error.code, error.message) from None


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
        plugin: dict[str, Any] = {
            "Name": item.get("PluginName", "aws:runShellScript"),
            "Status": item["Status"],
            "StatusDetails": item["StatusDetails"],
            "ResponseCode": item.get("ResponseCode", -1),
            # the capped fields hold far more than 2,400 bytes, so the agent's cut comes out the same
            "Output": listings.truncate_output(
                item.get("StandardOutputContent") or "", item.get("StandardErrorContent") or ""
            ),
        }
        for field, name in (
            ("ExecutionStartDateTime", "ResponseStartDateTime"),
            ("ExecutionEndDateTime", "ResponseFinishDateTime"),
        ):
            if item.get(field):
                plugin[name] = datetime.datetime.fromisoformat(item[field])
        row["CommandPlugins"] = [plugin]
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
    filters = [dict(entry) for entry in request.get("Filters") or []]
    for entry in request.get("InstanceInformationFilterList") or []:  # the legacy form: key / valueSet
        filters.append({"Key": entry.get("key"), "Values": entry.get("valueSet") or []})
    rows = hooks.instance_information(filters, ec2_tag_reader(self))
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
        names = request.get("Names") or [request.get("Name")]
        if action in ("GetParameter", "GetParameters") and request.get("WithDecryption"):
            request["KmsKeyIds"] = [k for k in (parameter_key_id(self, n) for n in names) if k]
        _hooks_or_fail().before_request(action, caller_arn(self), request)
        answer = _originals[name](self)
        if isinstance(answer, ActionResult) and isinstance(answer.result, dict):
            _name_selectors(answer.result, [str(n) for n in names if n], self.ssm_backend.get_parameter)
        return answer

    return method


def _selector(reference: str) -> tuple[str, str] | None:
    """``(name or ARN, selector)`` of a reference asked as ``name:version`` or ``name:label``; None without
    one (a parameter name holds no colon; an ARN's own colons come before ``parameter/``)."""
    own = reference.split(":parameter/", 1)[1] if reference.startswith("arn:") else reference
    if ":" not in own:
        return None
    base, selector = reference.rsplit(":", 1)
    return base, selector


def _name_selectors(result: dict[str, Any], references: list[str], resolve: Callable[[str], Any]) -> None:
    """AWS answers a parameter asked with a version or a label with ``Selector`` (``:7``, ``:live``):
    "Either the version number or the label used to retrieve the parameter value" (API Reference,
    Parameter). moto leaves it out; it is added here to the answer of the version the reference names
    (``resolve``: moto's own lookup of ``name:selector``)."""
    answers = result.get("Parameters") or ([result["Parameter"]] if result.get("Parameter") else [])
    for reference in references:
        selected = _selector(reference)
        try:
            found = resolve(reference) if selected is not None else None
        except ServiceException:  # a version or label that does not exist: answered as InvalidParameters
            found = None
        if selected is None or found is None:
            continue
        for answer in answers:
            if answer.get("Name") == found.name and answer.get("Version") == found.version and "Selector" not in answer:
                answer["Selector"] = f":{selected[1]}"
                break


def _filter_log_events(self: LogsResponse) -> str:
    """FilterLogEvents with ``logStreamNamePrefix``, which moto ignores (it searches every stream);
    within the account's FilterLogEvents quota when ``install_logs_reads`` was called."""
    _hooks_or_fail().before_request("FilterLogEvents", caller_arn(self), {})
    if _logs_reads is not None and not _logs_reads.admit_filter():
        raise AwsError("ThrottlingException", "Rate exceeded")
    result = _filtered_log_events(self)
    if _logs_reads is not None:
        _logs_reads.served_filter(result["events"])
    return json.dumps(result)


def _filtered_log_events(self: LogsResponse) -> dict[str, Any]:
    group_name = self._get_param("logGroupName")
    names = self._get_param("logStreamNames", [])
    prefix = self._get_param("logStreamNamePrefix")
    if prefix:
        group = self.logs_backend.groups.get(group_name)
        if group is None:
            raise ResourceNotFoundException()
        names = [name for name in group.streams if name.startswith(prefix)]
        if not names:
            return {"events": [], "searchedLogStreams": []}
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
    return result


# --- CloudWatch Logs' read side: Live Tail and the FilterLogEvents quota (see live_tail.py) ----------
# moto's StartLiveTail answers once, in JSON, with every event ever stored; AWS streams the events
# ingested after the session started, in the event-stream framing, until the client closes it.
_logs_reads: LogsReads | None = None


def _start_live_tail(self: LogsResponse) -> Any:
    """StartLiveTail as an event stream served by ``_logs_reads`` (moto's route; IAM checked before)."""
    if _logs_reads is None:  # pragma: no cover - install_logs_reads() not called
        raise AwsError("InvalidOperationException", "Live Tail is not set up in the stand-in")
    request = json.loads(self.body or "{}")
    existing = {group.arn for group in self.logs_backend.groups.values()}
    try:
        session = _logs_reads.start(request if isinstance(request, dict) else {}, existing)
    except LiveTailRefused as refused:
        raise AwsError(refused.code, refused.message) from None
    return 200, {"Content-Type": eventstream.CONTENT_TYPE}, session.frames()


def _published_put_log_events(self: LogStream, log_events: list[dict[str, Any]]) -> str:
    """moto's PutLogEvents, then the events just ingested go to the Live Tail sessions."""
    token: str = _originals["stream_put_log_events"](self, log_events)
    if _logs_reads is not None and log_events:
        group = self.log_group
        _logs_reads.publish(
            [
                {
                    "logStreamName": self.log_stream_name,
                    "logGroupIdentifier": group.arn,
                    "message": item.message,
                    "timestamp": item.timestamp,
                    "ingestionTime": item.ingestion_time,
                }
                for item in self.events[-len(log_events) :]
            ]
        )
    return token


def install_logs_reads(reads: LogsReads) -> None:
    """Serve StartLiveTail from ``reads`` and hold FilterLogEvents to its quota (later calls swap it)."""
    global _logs_reads
    _logs_reads = reads
    if "start_live_tail" in _originals:
        return
    _originals["start_live_tail"] = LogsResponse.start_live_tail
    setattr(LogsResponse, "start_live_tail", _start_live_tail)  # noqa: B010
    _originals["stream_put_log_events"] = LogStream.put_log_events
    setattr(LogStream, "put_log_events", _published_put_log_events)  # noqa: B010


def parameter_key_id(response: SimpleSystemManagerResponse, name: str) -> str | None:
    """The KMS key id of a SecureString parameter (None for plain parameters or unknown names)."""
    found = response.ssm_backend.get_parameters([name])
    parameter = found.get(name)
    if parameter is None or parameter.parameter_type != "SecureString":
        return None
    return str(parameter.keyid or "alias/aws/ssm")


# --- S3 additional checksums (User Guide, "Checking object integrity"), which moto only half keeps ---
# moto 5.2.5 accepts an x-amz-checksum-* value without checking it against the body, forgets a value
# sent without x-amz-sdk-checksum-algorithm (what an SDK sends for a precomputed ChecksumSHA256), and
# HeadObject leaves out the ChecksumType and a multipart object's "-<parts>" suffix.
CHECKED_ALGORITHMS = ("SHA256", "SHA1", "CRC32")  # those moto computes exactly (no optional library)


def _sent_checksum(response: S3Response) -> tuple[str, str] | None:
    """(algorithm, base64 value) of the x-amz-checksum-<algorithm> header the request carries."""
    for algorithm in CHECKED_ALGORITHMS:
        value = response.headers.get(f"x-amz-checksum-{algorithm.lower()}")
        if value:
            return algorithm, str(value.decode() if isinstance(value, bytes) else value)
    return None


def _bad_digest(response: S3Response) -> tuple[int, dict[str, str], str] | None:
    """S3's 400 BadDigest when the body does not match the checksum the request declares."""
    sent = _sent_checksum(response)
    if sent is None:
        return None
    algorithm, value = sent
    body = response.body if isinstance(response.body, bytes) else str(response.body or "").encode()
    if compute_checksum(body, algorithm).decode() == value:
        return None
    message = f"The {algorithm} you specified did not match the calculated checksum."
    error = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>BadDigest</Code><Message>{message}</Message></Error>'
    return 400, {"content-type": "application/xml"}, error


def _checked_put_object(self: S3Response) -> Any:
    """PutObject: refuse a body that does not match its checksum; keep a checksum sent on its own;
    a single PUT's checksum is always of type FULL_OBJECT."""
    refused = _bad_digest(self)
    if refused:
        return refused
    result = _originals["put_object"](self)
    if result[0] == 200:
        key = self.backend.get_object(self.bucket_name, self.parse_key_name())
        sent = _sent_checksum(self)
        if key is not None and sent is not None and not key.checksum_algorithm:
            key.checksum_algorithm, key.checksum_value = sent
        if key is not None and key.checksum_algorithm:
            key.checksum_type = "FULL_OBJECT"
    return result


def _checked_upload_part(self: S3Response) -> Any:
    """UploadPart: refuse a part that does not match its checksum before it is stored; answer with
    the part's checksum however it was sent (CompleteMultipartUpload lists it)."""
    refused = _bad_digest(self)
    if refused:
        return refused
    status, response_headers, body = _originals["upload_part"](self)
    sent = _sent_checksum(self)
    if status == 200 and sent is not None:
        response_headers[f"x-amz-checksum-{sent[0].lower()}"] = sent[1]
    return status, response_headers, body


def _head_object(self: S3Response, bucket_name: str, query: dict[str, Any], key_name: str, headers: Any) -> Any:
    """HeadObject with ChecksumMode ENABLED: the checksum type, and a composite one's part count."""
    status, response_headers, body = _originals["head_object"](self, bucket_name, query, key_name, headers)
    if status != 200 or headers.get("x-amz-checksum-mode") != "ENABLED" or query.get("partNumber"):
        return status, response_headers, body
    key = self.backend.head_object(bucket_name, key_name, version_id=query.get("versionId", [None])[0])
    if key is not None and key.checksum_algorithm and key.checksum_type:
        value = key.checksum_value
        if key.checksum_type == "COMPOSITE":
            value = f"{value}-{key.checksum_parts}"
        response_headers[f"x-amz-checksum-{key.checksum_algorithm.lower()}"] = value
        response_headers["x-amz-checksum-type"] = key.checksum_type
    return status, response_headers, body


# --- Parameter Store value sizes (User Guide, "Managing parameter tiers"), which moto does not bound --
PARAMETER_VALUE_MAX = {"Standard": 4096, "Advanced": 8192, "Intelligent-Tiering": 8192}


_PUT_PARAMETER = threading.Lock()  # moto checks "exists" then appends: a create must be atomic, as in AWS


def _put_parameter(self: SimpleSystemManagerResponse) -> Any:
    """PutParameter is atomic: of concurrent creates with Overwrite false exactly one succeeds and the
    others get ParameterAlreadyExists (moto's threaded server would let two through). It refuses a
    value longer than its tier allows: 4 KB standard, 8 KB advanced
    (Intelligent-Tiering picks advanced for a larger value). Without Tier, an existing parameter
    keeps its tier and a new one gets the account's default. Faults a test sets (throttling) apply to it
    as to any call."""
    request = _request(self)
    _hooks_or_fail().before_request("PutParameter", caller_arn(self), request)
    name = str(request.get("Name") or "")
    existing = self.ssm_backend.get_parameter(name) if name in self.ssm_backend._parameters else None
    tier = request.get("Tier") or (existing.tier if existing else None) or self.ssm_backend.default_parameter_tier
    limit = PARAMETER_VALUE_MAX.get(str(tier), PARAMETER_VALUE_MAX["Standard"])
    if len(str(request.get("Value") or "")) > limit:
        if limit == PARAMETER_VALUE_MAX["Standard"]:
            raise ServiceError(
                "ValidationException",
                "Standard tier parameters support a maximum parameter value of 4096 characters. To create a "
                "larger parameter value, upgrade the parameter to use the advanced-parameter tier. For more "
                "information, see https://docs.aws.amazon.com/systems-manager/latest/userguide/"
                "parameter-store-advanced-parameters.html",
            )
        raise ServiceError(
            "ValidationException", f"Advanced tier parameters support a maximum parameter value of {limit} characters."
        )
    with _PUT_PARAMETER:
        return _originals["put_parameter"](self)


# --- ELBv2 target health (ALB user guide, "Health checks ...", "Deregistration delay") -------------
# moto registers and deregisters at once and calls every registered target healthy; the stand-in's
# ``LoadBalancerModel`` (load_balancer.py) owns the targets instead. DescribeTargetGroups pages.
_load_balancer: list[LoadBalancerModel] = []
TARGET_GROUP_PAGE_SIZE = 400  # DescribeTargetGroups PageSize: 1-400 (API reference)


def install_load_balancer(model: LoadBalancerModel) -> None:
    """Route RegisterTargets, DeregisterTargets and DescribeTargetHealth to ``model``."""
    _load_balancer[:] = [model]


def _model() -> LoadBalancerModel:
    if not _load_balancer:  # pragma: no cover
        raise RuntimeError("moto_bridge.install_load_balancer() was not called")
    return _load_balancer[0]


def target_group_settings(arn: str) -> GroupSettings | None:
    """A target group's health-check settings (port, path, timeout, interval, thresholds, matcher)
    and deregistration delay, read from moto now."""
    found = re.fullmatch(r"arn:aws[\w-]*:elasticloadbalancing:([\w-]+):([0-9]{12}):targetgroup/.+", arn)
    if found is None:
        return None
    region, account = found.groups()
    group = elbv2_backends[account][region].target_groups.get(arn)
    if group is None:
        return None
    check_port = str(group.health_check_port or "traffic-port")  # moto keeps "traffic-port" or the number
    return GroupSettings(
        port=int(group.port or 80),
        interval=int(group.health_check_interval_seconds),
        healthy_threshold=int(group.healthy_threshold_count),
        unhealthy_threshold=int(group.unhealthy_threshold_count),
        deregistration_delay=int(str(group.attributes.get("deregistration_delay.timeout_seconds", 300))),
        in_use=bool(group.load_balancer_arns),
        timeout=int(group.health_check_timeout_seconds),
        path=str(group.health_check_path or "/"),  # ALB's default HealthCheckPath
        check_port=int(check_port) if check_port.isdigit() else None,
        matcher=str((getattr(group, "matcher", None) or {}).get("HttpCode") or "200"),  # ALB's default HttpCode
    )


def _elb_request(response: ELBV2Response, action: str) -> tuple[str, list[dict[str, Any]]]:
    """(TargetGroupArn, Targets) of the request, after the hooks saw it (throttling); the group must exist."""
    _hooks_or_fail().before_request(action, caller_arn(response), {})
    arn = str(response._get_param("TargetGroupArn") or "")
    if arn not in response.elbv2_backend.target_groups:
        raise TargetGroupNotFoundError()
    return arn, list(response._get_param("Targets", []) or [])


def _check_instances(response: ELBV2Response, targets: list[dict[str, Any]], running: bool) -> None:
    """InvalidTarget (RegisterTargets / DeregisterTargets errors, API reference) for an instance EC2
    does not know, and (``running``) for one that is not running, with moto's own message."""
    ec2 = ec2_backends[response.current_account][response.region]
    for target in targets:
        instance = ec2.get_instance_by_id(str(target.get("Id")))
        if instance is None:
            raise AwsError(
                "InvalidTarget",
                "The specified target does not exist, is not in the same VPC as the target group, "
                "or has an unsupported instance type.",
            )
        if running and instance.state != "running":
            raise AwsError(
                "InvalidTarget",
                f"The following targets are not in a running state and cannot be registered: '{target.get('Id')}'",
            )


def _targets(targets: list[dict[str, Any]]) -> list[tuple[str, int | None]]:
    """(Id, Port) of each TargetDescription; no Port: the group's (the model knows it)."""
    return [(str(t["Id"]), int(t["Port"]) if t.get("Port") else None) for t in targets]


def _by_instance(response: ELBV2Response, arn: str) -> bool:
    """Whether the group's targets are instance ids (TargetType ``instance``); an ``ip`` group's are
    IP addresses, which EC2 does not check here."""
    return str(getattr(response.elbv2_backend.target_groups[arn], "target_type", "instance")) == "instance"


def _register_targets(self: ELBV2Response) -> ActionResult:
    arn, targets = _elb_request(self, "RegisterTargets")
    if _by_instance(self, arn):
        _check_instances(self, targets, running=True)
    _model().register(arn, _targets(targets))
    return ActionResult({})


def _deregister_targets(self: ELBV2Response) -> ActionResult:
    arn, targets = _elb_request(self, "DeregisterTargets")
    if _by_instance(self, arn):
        _check_instances(self, targets, running=False)
    _model().deregister(arn, _targets(targets))
    return ActionResult({})


def _describe_target_health(self: ELBV2Response) -> ActionResult:
    arn, targets = _elb_request(self, "DescribeTargetHealth")
    if targets and _by_instance(self, arn):
        _check_instances(self, targets, running=False)
    return ActionResult({"TargetHealthDescriptions": _model().describe(arn, _targets(targets) if targets else None)})


def _describe_target_groups(self: ELBV2Response) -> ActionResult:
    """moto's answer, paged by PageSize / Marker as the API reference describes (moto returns all);
    a PageSize outside 1-400 is a ValidationError, as the API's constraints make it."""
    _hooks_or_fail().before_request("DescribeTargetGroups", caller_arn(self), {})
    page_size = self._get_param("PageSize")
    if page_size is not None and not 1 <= int(page_size) <= TARGET_GROUP_PAGE_SIZE:
        largest = TARGET_GROUP_PAGE_SIZE
        bound = f"less than or equal to {largest}" if int(page_size) > 1 else "greater than or equal to 1"
        raise AwsError(
            "ValidationError",
            f"1 validation error detected: Value '{page_size}' at 'pageSize' failed to satisfy constraint: "
            f"Member must have value {bound}",
        )
    groups = list(
        self.elbv2_backend.describe_target_groups(
            self._get_param("LoadBalancerArn"), self._get_param("TargetGroupArns", []), self._get_param("Names", [])
        )
    )
    size = int(page_size or TARGET_GROUP_PAGE_SIZE)
    start = int(self._get_param("Marker") or 0)
    result: dict[str, Any] = {"TargetGroups": groups[start : start + size]}
    if start + size < len(groups):
        result["NextMarker"] = str(start + size)
    return ActionResult(result)


# --- IAM action names: the signing name is not always the IAM service prefix ----------------------
# moto builds the action it checks from the request's signing name; CloudWatch signs as "monitoring"
# but its IAM actions are "cloudwatch:..." (Service Authorization Reference, Amazon CloudWatch:
# "service prefix: cloudwatch").
IAM_PREFIX_OF_SIGNING_NAME = {"monitoring": "cloudwatch"}


def _iam_request_init(self: IAMRequestBase, *args: Any, **kwargs: Any) -> None:
    _originals["iam_request_init"](self, *args, **kwargs)
    service, _, action = str(self._action).partition(":")
    if service in IAM_PREFIX_OF_SIGNING_NAME:
        self._action = f"{IAM_PREFIX_OF_SIGNING_NAME[service]}:{action}"


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
    _originals["put_parameter"] = SimpleSystemManagerResponse.put_parameter
    patches: dict[str, Any] = {
        "send_command": _patched_send_command,
        "list_command_invocations": _list_command_invocations,
        "cancel_command": _cancel_command,
        "describe_instance_information": _describe_instance_information,
        "get_parameters": _guarded("GetParameters", "get_parameters"),
        "get_parameter": _guarded("GetParameter", "get_parameter"),
        "get_command_invocation": _get_command_invocation,
        "list_commands": _list_commands,
        "put_parameter": _put_parameter,
    }
    for name, method in patches.items():
        setattr(SimpleSystemManagerResponse, name, method)
    _originals["filter_log_events"] = LogsResponse.filter_log_events
    setattr(LogsResponse, "filter_log_events", _filter_log_events)  # noqa: B010
    _originals["response_object"] = Command.response_object
    setattr(Command, "response_object", _response_object)  # noqa: B010
    _originals["get_instance_ids_from_targets"] = Command._get_instance_ids_from_targets
    setattr(Command, "_get_instance_ids_from_targets", _no_targets_lookup)  # noqa: B010
    _originals["list_group_resources"] = ResourceGroupsResponse.list_group_resources
    setattr(ResourceGroupsResponse, "list_group_resources", _list_group_resources)  # noqa: B010
    # moto routes no URL to it; the server builds each service's routes on its first request
    resourcegroups_urls.url_paths["{0}/list-group-resources$"] = ResourceGroupsResponse.dispatch
    for name, method in (
        ("put_object", _checked_put_object),
        ("upload_part", _checked_upload_part),
        ("head_object", _head_object),
    ):
        _originals[name] = getattr(S3Response, name)
        setattr(S3Response, name, method)
    _originals["call_action"] = BaseResponse.call_action
    setattr(BaseResponse, "call_action", _counted_call_action)  # noqa: B010
    _originals["assume_role"] = STSBackend.assume_role
    setattr(STSBackend, "assume_role", _capped_assume_role)  # noqa: B010
    _originals["assume_role_with_web_identity"] = TokenResponse.assume_role_with_web_identity
    setattr(TokenResponse, "assume_role_with_web_identity", _assume_role_with_web_identity)  # noqa: B010
    for name, names_object in (("bucket_response", False), ("key_response", True)):
        _originals[name] = getattr(S3Response, name)
        setattr(S3Response, name, _counted_s3(name, names_object))
    for name, method in (
        ("register_targets", _register_targets),
        ("deregister_targets", _deregister_targets),
        ("describe_target_health", _describe_target_health),
        ("describe_target_groups", _describe_target_groups),
    ):
        _originals[f"elbv2_{name}"] = getattr(ELBV2Response, name)
        setattr(ELBV2Response, name, method)
    _originals["iam_request_init"] = IAMRequestBase.__init__
    setattr(IAMRequestBase, "__init__", _iam_request_init)  # noqa: B010
    _remember_routing()


def _remember_routing() -> None:
    """moto's server reads its own package folder (a listdir and an isdir per service) to route each
    request, and lists the answering class's methods (``inspect.getmembers``, hundreds for EC2) to
    dispatch each action: the same answers every time once the patches above are in (none adds a
    method after this), so they are computed once. CPU only: no answer changes."""
    modules = tuple(moto_backends.list_of_moto_modules())
    _originals["list_of_moto_modules"] = moto_backends.list_of_moto_modules
    setattr(moto_backends, "list_of_moto_modules", lambda: modules)  # noqa: B010
    names_of = moto_utils.method_names_from_class  # what moto.core.responses imported by name
    _originals["method_names_from_class"] = names_of
    setattr(moto_responses, "method_names_from_class", functools.cache(names_of))  # noqa: B010


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


# --- SSM State Manager associations (missing in moto; the model is ``associations.py``) ------------
_associations: Associations | None = None


def _association_action(action: str) -> Any:
    def method(self: SimpleSystemManagerResponse) -> ActionResult:
        request = _request(self)
        _hooks_or_fail().before_request(action, caller_arn(self), request)
        if _associations is None:  # pragma: no cover - install_associations() not called
            raise ServiceError("InternalServerError", "associations are not set up in the stand-in")
        try:
            if action == "CreateAssociation":
                return ActionResult({"AssociationDescription": _associations.create(request)})
            if action == "UpdateAssociation":
                return ActionResult({"AssociationDescription": _associations.update(request)})
            if action == "DescribeAssociation":
                return ActionResult({"AssociationDescription": _associations.describe(request)})
            return ActionResult({"Associations": _associations.listed(request)})
        except AssociationError as error:
            raise ServiceError(error.code, error.message) from None

    return method


def install_associations(associations: Associations) -> None:
    """CreateAssociation, UpdateAssociation, DescribeAssociation and ListAssociations answered by ``associations``."""
    global _associations
    _associations = associations
    for action in ("CreateAssociation", "UpdateAssociation", "DescribeAssociation", "ListAssociations"):
        setattr(SimpleSystemManagerResponse, moto_utils.camelcase_to_underscores(action), _association_action(action))
