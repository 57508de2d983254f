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
from dataclasses import dataclass, replace
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
) -> SentCommands:
    """One command for TARGETS, else one per 50 instance ids (SendCommand's limit), paced as one
    rollout (``plan_chunks``): the chunks that fit MAX_CONCURRENCY now are sent, the others wait in
    ``SentCommands.rest`` for the follow loop to send them as earlier ones end.

    If a later command is refused, or a stop arrives between two, the ones already sent are
    cancelled: nothing is left half-done.
    """
    if spec.targets:
        return SentCommands([_send(ssm, settings, spec, (), spec.targets, sleep)])
    plan = plan_chunks(spec.instance_ids, spec.max_concurrency, spec.max_errors)
    rest = ChunkQueue(ssm, settings, spec, plan, check_stop, sleep)
    sent = SentCommands(rest=rest if plan.paced else None)
    for _ in range(plan.first_wave if settings.wait else len(plan.chunks)):
        sent.append(rest.send_next(between=bool(sent)))
    if not settings.wait and plan.first_wave < len(plan.chunks):
        log.warning(
            f"MAX_CONCURRENCY {spec.max_concurrency} is less than the {len(plan.chunks)} commands of 50 instances "
            "this deploy needs: with WAIT: 'false' the pipe cannot send them one after another, so each runs "
            "one instance at a time and together they run more than MAX_CONCURRENCY at once."
        )
    return sent


class SentCommands(list[SentCommand]):
    """The commands sent, and (``rest``) the rollout's later chunks when MAX_CONCURRENCY holds them back."""

    def __init__(self, commands: list[SentCommand] | None = None, rest: ChunkQueue | None = None) -> None:
        super().__init__(commands or [])
        self.rest = rest


@dataclass(frozen=True)
class ChunkPlan:
    """More than 50 INSTANCE_IDS, paced as one rollout.

    SSM applies MaxConcurrency and MaxErrors per command, and a command takes at most 50 instance
    ids, so left alone ``MAX_CONCURRENCY: '10'`` would run 10 per command, ten times as many at once
    over 500 instances. So the pipe turns both rates into counts over the whole deploy (a
    percentage of every instance, rounded down as AWS documents for its rate controls: "10% of 50
    instances stops at the sixth error"; MaxConcurrency at least 1) and:

    - MAX_CONCURRENCY: gives each command a share, the shares adding up to it. With fewer slots than
      commands (each needs at least 1), only that many commands are sent at first, each running one
      instance at a time, and each next command is sent when one ends (``first_wave``). Never more
      than MAX_CONCURRENCY run at once; a command that ends early leaves its share unused, which is
      the price of sending each command only once.
    - MAX_ERRORS: each command gets the whole deploy's limit (one command alone never stops below
      it), and the follow loop adds up ErrorCount over the commands; once the sum passes the limit it
      does what SSM does within one command: nothing more starts. It cancels the invocations not yet
      started (CancelCommand with their ids), sends no further command, and names those instances
      as skipped; the running ones finish.
    """

    chunks: tuple[tuple[str, ...], ...]
    concurrency: tuple[str, ...]  # MaxConcurrency of each chunk sent in the first wave
    max_errors: str  # MaxErrors of every chunk
    error_limit: int | None  # errors over all the chunks the pipe allows; None: one chunk, SSM's own

    @property
    def first_wave(self) -> int:
        return len(self.concurrency)

    @property
    def paced(self) -> bool:
        """Whether the pipe paces the chunks (more than one)."""
        return len(self.chunks) > 1


def plan_chunks(instance_ids: tuple[str, ...], max_concurrency: str, max_errors: str) -> ChunkPlan:
    chunks = tuple(
        instance_ids[start : start + MAX_INSTANCE_IDS] for start in range(0, len(instance_ids), MAX_INSTANCE_IDS)
    )
    if len(chunks) <= 1:
        return ChunkPlan(chunks, (max_concurrency,) * len(chunks), max_errors, None)
    total = len(instance_ids)
    slots = rate_count(max_concurrency, total, minimum=1)
    limit = rate_count(max_errors, total, minimum=0)
    sizes = [len(chunk) for chunk in chunks]
    shares = concurrency_shares(slots, sizes) if slots >= len(chunks) else [1] * slots
    return ChunkPlan(chunks, tuple(str(share) for share in shares), str(limit), limit)


def rate_count(rate: str, total: int, minimum: int) -> int:
    """``"10"`` -> 10; ``"10%"`` -> 10 % of ``total``, rounded down, at least ``minimum``."""
    if rate.endswith("%"):
        return max(minimum, int(rate[:-1]) * total // 100)
    return max(minimum, int(rate))


def concurrency_shares(slots: int, sizes: list[int]) -> list[int]:
    """Split ``slots`` (at least one per chunk) over chunks of ``sizes`` in proportion to their size,
    each at least 1 and at most its size, adding up to ``slots`` (or to every instance, if fewer)."""
    total = sum(sizes)
    slots = min(slots, total)
    shares = [max(1, min(size, slots * size // total)) for size in sizes]
    while sum(shares) > slots:
        shares[shares.index(max(shares))] -= 1
    while sum(shares) < slots:
        room = [i for i, size in enumerate(sizes) if shares[i] < size]
        best = max(room, key=lambda i: slots * sizes[i] / total - shares[i])
        shares[best] += 1
    return shares


class ChunkQueue:
    """The chunks of a paced rollout not yet sent; the follow loop sends one each time one ends."""

    def __init__(
        self,
        ssm: Any,
        settings: DeploySettings,
        spec: CommandSpec,
        plan: ChunkPlan,
        check_stop: Callable[[], None],
        sleep: Sleep,
    ) -> None:
        self._ssm, self._settings, self._spec, self._check_stop, self._sleep = ssm, settings, spec, check_stop, sleep
        self.plan = plan
        self._next = 0
        self.sent: list[SentCommand] = []

    @property
    def waiting(self) -> list[str]:
        """Instance ids of the chunks not yet sent."""
        return [i for chunk in self.plan.chunks[self._next :] for i in chunk]

    def send_next(self, between: bool = False) -> SentCommand:
        """Send the next chunk (its share of MAX_CONCURRENCY; 1 once the first wave is out). When it
        is refused, or (``between``: while sending the first wave) a stop arrives, every chunk sent
        so far is cancelled and PipeError raised."""
        index = self._next
        chunk = self.plan.chunks[index]
        share = self.plan.concurrency[index] if index < self.plan.first_wave else "1"
        spec = replace(self._spec, max_concurrency=share, max_errors=self.plan.max_errors)
        try:
            if between:
                self._check_stop()
            command = _send(self._ssm, self._settings, spec, chunk, (), self._sleep)
        except PipeError as error:
            if not self.sent:
                raise
            for command in self.sent:
                cancel_command(self._ssm, command.command_id)
            cancelled = ", ".join(command.command_id for command in self.sent)
            raise PipeError(f"{error} The commands already sent were cancelled: {cancelled}.") from None
        self._next += 1
        self.sent.append(command)
        return command

    def drop(self) -> list[str]:
        """Send nothing more; return the instance ids that will never be sent."""
        held = self.waiting
        self._next = len(self.plan.chunks)
        return held


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
        if isinstance(unknown, tuple):
            return SentCommand(unknown[0], instance_ids, comment, unknown[1])
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


def _send_once(
    ssm: Any, request: dict[str, Any], settings: DeploySettings
) -> tuple[str, datetime.datetime | None] | Exception:
    """The command id and its RequestedDateTime, or the error that leaves unknown whether AWS accepted it."""
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
    requested = response["Command"].get("RequestedDateTime")
    return str(response["Command"]["CommandId"]), requested if isinstance(requested, datetime.datetime) else None


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
