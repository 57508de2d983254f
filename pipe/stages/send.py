"""Send the deploy with Run Command, at most once per request, and cancel it.

SendCommand has no idempotency token: sent twice, it runs twice. So botocore may retry it only when
AWS certainly refused it (a throttling or other 4xx answer, a connection that never opened). When the
outcome is unknown (the connection dropped after the request went out, a 5xx answer), the pipe looks
for the command by a marker in its Comment with ListCommands before it decides to send again.
"""

from __future__ import annotations

import datetime
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
)
from botocore.exceptions import ConnectionError as HTTPConnectionError

from pipe.aws.errors import error_code, error_message, is_access_denied
from pipe.config.build_context import cut
from pipe.config.documents import SCRIPT_DOCUMENTS
from pipe.config.settings import DeploySettings
from pipe.errors import PipeError, SendOutcomeUnknown
from pipe.limits import COMMENT_LIMIT, MAX_INSTANCE_IDS
from pipe.model import CommandSpec, SentCommand, Target

MAX_SENDS = 3  # of one request, each only after ListCommands showed the previous one never arrived
# AWS documents no bound on how soon ListCommands shows a new command: look for ~15 s
RECONCILE_DELAYS = (0.0, 1.0, 2.0, 4.0, 8.0)
RECONCILE_PAGES = 40  # of 50 commands: more in the window and the search is inconclusive
CLOCK_SKEW = datetime.timedelta(minutes=15)  # InvokedAfter is AWS's clock; ours may be behind or ahead
# Errors of the HTTP layer, raised once a request may be on its way; of them, connections that
# never opened: the request did not leave this machine
IN_FLIGHT = (HTTPClientError, HTTPConnectionError)
NEVER_SENT = (EndpointConnectionError, ConnectTimeoutError)
Sleep = Callable[[float], None]
log = logging.getLogger("ssm-deploy")


def send_parameters(settings: DeploySettings, spec: CommandSpec) -> dict[str, list[str]]:
    if settings.document_name not in SCRIPT_DOCUMENTS:
        return dict(settings.document_parameters)
    parameters = {"commands": list(spec.script), "executionTimeout": [str(spec.execution_timeout)]}
    if settings.working_directory:
        parameters["workingDirectory"] = [settings.working_directory]
    return {**settings.document_parameters, **parameters}


def send_commands(
    ssm: Any,
    settings: DeploySettings,
    spec: CommandSpec,
    check_stop: Callable[[], None] = lambda: None,
    sleep: Sleep = time.sleep,
) -> list[SentCommand]:
    """One command for TARGETS, else one per 50 instance ids (SendCommand's limit).

    If a later command is refused, or a stop arrives between two, the ones already sent are
    cancelled: nothing is left half-done.
    """
    if spec.targets:
        return [_send(ssm, settings, spec, (), spec.targets, sleep)]
    sent: list[SentCommand] = []
    for start in range(0, len(spec.instance_ids), MAX_INSTANCE_IDS):
        chunk = spec.instance_ids[start : start + MAX_INSTANCE_IDS]
        try:
            if sent:
                check_stop()
            sent.append(_send(ssm, settings, spec, chunk, (), sleep))
        except PipeError as error:
            if not sent:
                raise
            for command in sent:
                cancel_command(ssm, command.command_id)
            cancelled = ", ".join(command.command_id for command in sent)
            raise PipeError(f"{error} The commands already sent were cancelled: {cancelled}.") from None
    return sent


def send_command(
    ssm: Any,
    settings: DeploySettings,
    spec: CommandSpec,
    instance_ids: tuple[str, ...] = (),
    targets: tuple[Target, ...] = (),
    sleep: Sleep = time.sleep,
) -> str:
    """Send ``spec`` to ``instance_ids`` or ``targets``; return the command id.

    The command runs at most once: see the module docstring."""
    return _send(ssm, settings, spec, instance_ids, targets, sleep).command_id


def _send(
    ssm: Any,
    settings: DeploySettings,
    spec: CommandSpec,
    instance_ids: tuple[str, ...],
    targets: tuple[Target, ...],
    sleep: Sleep,
) -> SentCommand:
    marker = send_marker()
    comment = marked_comment(spec.comment, marker)
    request = _request(settings, spec, instance_ids, targets, comment)
    forbid_unsafe_retries(ssm)
    since = datetime.datetime.now(datetime.UTC) - CLOCK_SKEW
    for sends in range(1, MAX_SENDS + 1):
        unknown = _send_once(ssm, request, settings)
        if isinstance(unknown, str):
            return SentCommand(unknown, instance_ids, comment)
        log.warning(
            f"SendCommand's answer was lost ({_describe(unknown)}): AWS may have accepted the command. "
            f"Looking for it in ListCommands by its comment marker (ref {marker}) before sending anything again."
        )
        found = _reconcile(ssm, marker, since, unknown, comment, sleep)
        if found is not None:
            return SentCommand(found, instance_ids, comment)
        if sends < MAX_SENDS:
            log.warning(
                f"No command with marker (ref {marker}) appeared in {sum(RECONCILE_DELAYS):.0f} s: the request "
                "never reached AWS. Sending it again."
            )
    raise PipeError(
        f"SendCommand failed {MAX_SENDS} times without an answer (last: {_describe(unknown)}), and no command "
        f"with marker (ref {marker}) appeared in ListCommands: nothing was sent."
    )


def _request(
    settings: DeploySettings,
    spec: CommandSpec,
    instance_ids: tuple[str, ...],
    targets: tuple[Target, ...],
    comment: str,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "DocumentName": settings.document_name,
        "Comment": comment,
        "TimeoutSeconds": spec.delivery_timeout,
        "Parameters": send_parameters(settings, spec),
        **({"DocumentVersion": settings.document_version} if settings.document_version else {}),
        "MaxConcurrency": spec.max_concurrency,
        "MaxErrors": spec.max_errors,
    }
    if targets:
        request["Targets"] = [target.to_api() for target in targets]
    else:
        request["InstanceIds"] = list(instance_ids)
    if settings.output_s3_bucket:
        request["OutputS3BucketName"] = settings.output_s3_bucket
        request["OutputS3Region"] = settings.region
        if settings.output_s3_prefix:
            request["OutputS3KeyPrefix"] = settings.output_s3_prefix
    if spec.alarm:  # AlarmConfiguration takes exactly one alarm
        request["AlarmConfiguration"] = {"IgnorePollAlarmFailure": False, "Alarms": [{"Name": spec.alarm}]}
    if settings.stream_output:
        request["CloudWatchOutputConfig"] = {
            "CloudWatchLogGroupName": settings.log_group,
            "CloudWatchOutputEnabled": True,
        }
    return request


def send_marker() -> str:
    """8 random hex digits: tells this request's command apart from every other in ListCommands."""
    return secrets.token_hex(4)


def marked_comment(comment: str, marker: str) -> str:
    """``<comment> (ref <marker>)`` within SendCommand's 100 characters: the comment is cut, never the marker."""
    suffix = f" (ref {marker})"
    return cut(comment, COMMENT_LIMIT - len(suffix)) + suffix


def _send_once(ssm: Any, request: dict[str, Any], settings: DeploySettings) -> str | Exception:
    """The command id, or the error that leaves unknown whether AWS accepted the request."""
    try:
        response = ssm.send_command(**request)
    except ClientError as error:
        if may_have_arrived(error):
            return error
        raise PipeError(_send_error_message(error, settings)) from None
    except NEVER_SENT as error:  # after botocore's own retries
        raise PipeError(f"Could not reach AWS to send the command ({_describe(error)}): nothing was sent.") from None
    except BotoCoreError as error:
        if may_have_arrived(error):
            return error
        raise
    return str(response["Command"]["CommandId"])


def may_have_arrived(error: BaseException | None, status: int | None = None) -> bool:
    """Whether AWS may have run the request though the pipe saw an error (``status``: the HTTP answer's).

    An answer below 500 is AWS refusing it; a connection that never opened sent nothing, nor did an
    error before the HTTP layer (parameters, credentials). A dropped connection, a read timeout or a
    5xx answer leave it unknown."""
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    elif error is not None:  # only the HTTP layer's errors come after the request may have left
        return isinstance(error, IN_FLIGHT) and not isinstance(error, NEVER_SENT)
    return status is None or status >= 500


def forbid_unsafe_retries(ssm: Any) -> None:
    """Let botocore retry SendCommand only when AWS certainly did not accept it (idempotent)."""
    service = ssm.meta.service_model.service_id.hyphenize()
    ssm.meta.events.register(
        f"needs-retry.{service}.SendCommand", _no_retry_if_it_may_have_arrived, unique_id="ssm-deploy-send-once"
    )


def _no_retry_if_it_may_have_arrived(
    response: tuple[Any, dict[str, Any]] | None = None, caught_exception: BaseException | None = None, **_: Any
) -> bool | None:
    """A needs-retry handler: False stops the retry (botocore calls it before its own, less specific,
    retry handler and takes the first answer that is not None); None leaves the choice to botocore."""
    status = None if response is None else getattr(response[0], "status_code", None)
    return False if may_have_arrived(caught_exception, status) else None


def _reconcile(
    ssm: Any, marker: str, since: datetime.datetime, lost: Exception, comment: str, sleep: Sleep
) -> str | None:
    """The command AWS accepted with ``marker`` in its comment; None when none appeared in the wait."""
    for delay in RECONCILE_DELAYS:
        sleep(delay)
        try:
            found = _listed_with_marker(ssm, marker, since)
        except (ClientError, BotoCoreError) as error:
            raise SendOutcomeUnknown(_unknown_outcome_message(lost, error, comment)) from None
        if found is None:
            raise SendOutcomeUnknown(_unknown_outcome_message(lost, "more commands than it could search", comment))
        if found:
            kept, *extra = found
            log.warning(f"AWS had accepted it: following command {kept}.")
            for command_id in extra:  # only if ListCommands lagged past the wait: do not run it twice more
                log.warning(f"Cancelling command {command_id}, sent again while the first was not yet listed.")
                cancel_command(ssm, command_id)
            return kept
    return None


def _listed_with_marker(ssm: Any, marker: str, since: datetime.datetime) -> list[str] | None:
    """Ids of the commands since ``since`` whose comment holds ``marker``, oldest first; None when
    there were more commands than the search covers (then nothing can be concluded)."""
    suffix = f"(ref {marker})"
    request: dict[str, Any] = {
        "Filters": [{"key": "InvokedAfter", "value": since.strftime("%Y-%m-%dT%H:%M:%SZ")}],
        "MaxResults": 50,
    }
    matches: list[tuple[str, str]] = []
    for _page in range(RECONCILE_PAGES):
        page = ssm.list_commands(**request)
        for command in page.get("Commands", []):
            if str(command.get("Comment", "")).endswith(suffix):
                matches.append((str(command.get("RequestedDateTime", "")), str(command["CommandId"])))
        if not page.get("NextToken"):
            return [command_id for _, command_id in sorted(matches)]
        request["NextToken"] = page["NextToken"]
    return [command_id for _, command_id in sorted(matches)] or None


def _unknown_outcome_message(lost: Exception, reason: object, comment: str) -> str:
    return (
        f"SendCommand's answer was lost ({_describe(lost)}) and the pipe could not check whether AWS accepted "
        f"it (ListCommands: {_describe(reason)}). Nothing more was sent, but a command may be running on the "
        f'instances: look for the comment "{comment}" in Run Command\'s command history, and cancel it if '
        "needed."
    )


def _describe(error: object) -> str:
    if isinstance(error, ClientError):
        return f"{error_code(error)}: {error_message(error)}"
    return str(error).rstrip(".")  # it goes inside a sentence


def cancel_command(ssm: Any, command_id: str, instance_ids: list[str] | None = None) -> bool:
    """Ask SSM to cancel the command (on every instance, or those given); True when SSM accepted."""
    try:
        if instance_ids:
            ssm.cancel_command(CommandId=command_id, InstanceIds=instance_ids)
        else:
            ssm.cancel_command(CommandId=command_id)
    except ClientError as error:
        log.error(f"Could not cancel command {command_id}: {error_code(error)}: {error_message(error)}")
        return False
    return True


def _send_error_message(error: ClientError, settings: DeploySettings) -> str:
    code, message = error_code(error), error_message(error)
    if code == "InvalidInstanceId":
        return (
            f"INSTANCE_IDS: SSM refused the instances ({message}). Each must exist in "
            f"{settings.region}, be running, and be managed by SSM (agent online, instance profile "
            "with AmazonSSMManagedInstanceCore)."
        )
    if is_access_denied(error):
        return (
            f"The deploy role may not run commands ({message}). Fix: allow ssm:SendCommand on "
            f"arn:aws:ssm:{settings.region}::document/{settings.document_name} and on the target instances "
            f"(arn:aws:ec2:{settings.region}:<account>:instance/*)."
        )
    if code in ("InvalidDocument", "InvalidDocumentVersion"):
        return (
            f"DOCUMENT_NAME: SSM refused {settings.document_name}"
            + (f" version {settings.document_version}" if settings.document_version else "")
            + f" ({message}). Check the name and version, and that the document is in {settings.region} "
            "and shared with this account."
        )
    if code == "InvalidParameters":
        return f"SSM refused the command's parameters ({message}). Check COMMANDS and WORKING_DIRECTORY."
    return f"SendCommand failed ({code}: {message})."
