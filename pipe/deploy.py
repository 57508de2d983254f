"""The deploy, step by step: authenticate, preflight, send, wait, report."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipe.agent_watch import AgentWatch
from pipe.auth import authenticate
from pipe.aws import client_config, error_code, error_message, is_access_denied, permission_for
from pipe.command import cancel_command, console_url, send_command
from pipe.errors import DeployFailed
from pipe.interruption import Interrupted, StopRequests
from pipe.invocations import Invocation
from pipe.log_tail import LogTail
from pipe.output import OutputPrinter
from pipe.preflight import check_follow_permissions, check_instances, check_parameters
from pipe.redaction import Redactor
from pipe.remote_script import build_script
from pipe.report import show_results
from pipe.settings import DeploySettings
from pipe.tracker import InvocationTracker, WaitTimedOut

WAIT_MARGIN_SECONDS = 120  # beyond delivery + execution timeout, before the pipe gives up itself
CANCEL_GRACE_SECONDS = 30
log = logging.getLogger("ssm-deploy")


def run_deploy(
    settings: DeploySettings, env: Mapping[str, str], redactor: Redactor, stops: StopRequests
) -> list[Invocation]:
    """Run the deploy; return the invocations when all succeeded, raise DeployFailed otherwise."""
    _log_plan(settings)
    session, identity = authenticate(settings, env, redactor)
    stops.raise_if_requested()
    ssm = session.client("ssm", region_name=settings.region, config=client_config())
    check_instances(ssm, settings.instance_ids, settings.region)
    check_follow_permissions(ssm, identity.arn, settings.instance_ids[0])
    stops.raise_if_requested()
    check_parameters(ssm, settings.secrets, redactor, identity.arn)

    script = build_script(settings)
    log.debug("Script sent to the instances (secrets appear as parameter names only):\n" + "\n".join(script))
    stops.raise_if_requested()
    command_id = send_command(ssm, settings, script)
    log.info(
        f"Sent command {command_id} to {len(settings.instance_ids)} instance(s) [{settings.comment}] by {identity.arn}"
    )
    log.info(f"Console: {console_url(settings.region, command_id)}")
    try:
        invocations = _follow(session, ssm, settings, command_id, redactor, stops)
    except BotoCoreError as error:
        raise DeployFailed(
            f"Lost contact with AWS while following command {command_id} ({error}). The command may "
            f"still be running on the instances: see {console_url(settings.region, command_id)}"
        ) from None
    except ClientError as error:
        operation = error.operation_name
        fix = f" Fix: allow {permission_for(operation)} for the deploy role." if is_access_denied(error) else ""
        raise DeployFailed(
            f"AWS refused {operation} while following command {command_id} ({error_code(error)}: "
            f"{error_message(error)}).{fix} The command may still be running on the instances: see "
            f"{console_url(settings.region, command_id)}"
        ) from None
    failed = [inv for inv in invocations.values() if not inv.succeeded]
    if failed:
        listed = "; ".join(f"{inv.instance_id}: {inv.describe()}" for inv in failed)
        raise DeployFailed(
            f"Deploy failed on {len(failed)} of {len(invocations)} instance(s): {listed}. Command id: {command_id}"
        )
    return list(invocations.values())


def _follow(
    session: Any, ssm: Any, settings: DeploySettings, command_id: str, redactor: Redactor, stops: StopRequests
) -> dict[str, Invocation]:
    """Wait for the invocations while printing their output; cancel on a stop or on the wait bound."""
    printer = OutputPrinter(redactor, label_lines=len(settings.instance_ids) > 1)
    tail = _log_tail(session, settings, command_id, printer)
    on_poll = tail.poll if tail else (lambda: 0)
    watch = AgentWatch(ssm, settings.agent_lost_timeout)
    tracker = InvocationTracker(ssm, command_id, settings.instance_ids, agent_watch=watch)
    limit = settings.delivery_timeout + settings.execution_timeout + WAIT_MARGIN_SECONDS
    try:
        invocations = tracker.wait(limit, on_poll, stops.raise_if_requested)
    except (Interrupted, WaitTimedOut) as stop:
        log.error(f"{stop} Cancelling command {command_id}.")
        if cancel_command(ssm, command_id):
            try:
                tracker.wait(CANCEL_GRACE_SECONDS, on_poll)
            except WaitTimedOut:
                log.warning(f"Cancellation not confirmed within {CANCEL_GRACE_SECONDS} s")
        show_results(ssm, command_id, tracker.invocations, printer, tail)
        raise DeployFailed(f"{stop} The command was cancelled. Command id: {command_id}") from None
    lost = [i for i, inv in invocations.items() if inv.lost]
    if lost:
        cancel_command(ssm, command_id, lost)  # so a returning agent does not run a deploy nobody watches
    show_results(ssm, command_id, invocations, printer, tail)
    return invocations


def _log_plan(settings: DeploySettings) -> None:
    build = settings.build
    log.info(
        f"Deploy {build.repo} build #{build.build_number}"
        + (f" commit {build.short_commit}" if build.short_commit else "")
        + (f" ({build.branch})" if build.branch else "")
        + (f" triggered by {build.triggerer}" if build.triggerer else "")
    )
    log.info(
        f"Environment: {settings.environment or '(none)'}; region {settings.region}; "
        f"targets: {', '.join(settings.instance_ids)}"
    )
    if settings.secrets:
        names = ", ".join(f"{ref.env_name} <- {ref.parameter}" for ref in settings.secrets)
        log.info(f"Secrets read on the instances: {names}")


def _log_tail(session: Any, settings: DeploySettings, command_id: str, printer: OutputPrinter) -> LogTail | None:
    if not settings.stream_output:
        return None
    logs = session.client("logs", region_name=settings.region, config=client_config())
    log.info(f"Streaming output from CloudWatch Logs group {settings.log_group}")
    start_ms = int(time.time() * 1000) - 60_000  # allow for clock skew between here and AWS
    return LogTail(logs, settings.log_group, command_id, printer, start_ms)
