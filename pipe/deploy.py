"""The deploy, step by step: authenticate, preflight, send, follow, report, write the result."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipe.aws.errors import client_config, error_code, error_message, is_access_denied, permission_for
from pipe.config.build_context import COMMENT_LIMIT, cut
from pipe.config.settings import DeploySettings
from pipe.errors import DeployFailed, DeployStopped, PipeError
from pipe.model import Invocation
from pipe.report.console import OutputPrinter
from pipe.report.result_file import DeployOutcome, write_result
from pipe.report.summary import show_results
from pipe.runtime.interruption import Interrupted, StopRequests, stop_between_attempts
from pipe.runtime.redaction import Redactor
from pipe.stages.authenticate import authenticate
from pipe.stages.parameter_path import resolve_path
from pipe.stages.preflight import check_follow_permissions, check_instances, check_parameters
from pipe.stages.resolve import instance_names, resolve_targets
from pipe.stages.script import build_script, healthcheck_body
from pipe.stages.send import SentCommand, cancel_command, console_url, send_commands
from pipe.stages.watch.agent_watch import AgentWatch
from pipe.stages.watch.log_tail import LogTail
from pipe.stages.watch.tracker import InvocationTracker, WaitTimedOut

WAIT_MARGIN_SECONDS = 120  # beyond delivery + execution timeout, before the pipe gives up itself
CANCEL_GRACE_SECONDS = 30
log = logging.getLogger("ssm-deploy")


class Deploy:
    """One run of the pipe; ``outcome`` always says how far it got, for the result file."""

    def __init__(self, settings: DeploySettings, env: Mapping[str, str], redactor: Redactor) -> None:
        self.settings = settings
        self.env = env
        self.redactor = redactor
        self.outcome = DeployOutcome("not sent", [], {})
        self.order: list[str] = []  # the targeted instances, in order: each keeps its colour in every phase

    def run(self, stops: StopRequests) -> str:
        """Return the success message, or raise DeployFailed (or PipeError)."""
        try:
            return self._run(stops)
        except PipeError as error:
            self.outcome.message = self.redactor.redact(str(error))
            if self.outcome.status != "not sent":
                self.outcome.status = "failed"
            raise
        finally:
            write_result(self.settings, self.outcome)

    def _run(self, stops: StopRequests) -> str:
        settings = self.settings
        _log_plan(settings)
        session, identity = authenticate(settings, self.env, self.redactor)
        stops.raise_if_requested()
        ssm = _client(session, "ssm", settings.region, stops)
        # the EC2 client costs ~17 MB of service model: only made when names or TARGETS need it
        needs_ec2 = bool(settings.targets) or len(settings.instance_ids) > 1
        ec2 = _client(session, "ec2", settings.region, stops) if needs_ec2 else None
        targeted = self._targeted_instances(session, ec2, stops)
        self.order = list(targeted or [])
        if targeted:
            check_instances(ssm, targeted, settings.region)
        check_follow_permissions(ssm, identity.arn, targeted[0] if targeted else "i-00000000")
        stops.raise_if_requested()
        check_parameters(ssm, settings.secrets, self.redactor, identity.arn)
        if settings.parameters_path:
            taken = {ref.env_name for ref in settings.secrets} | {name for name, _ in settings.variables}
            found = resolve_path(ssm, settings.parameters_path, taken, self.redactor, identity.arn)
            settings = self.settings = replace(settings, secrets=[*settings.secrets, *found])
        names = instance_names(ec2, targeted) if ec2 is not None and targeted and len(targeted) > 1 else {}

        script = build_script(settings)
        log.debug("Script sent to the instances (secrets appear as parameter names only):\n" + "\n".join(script))
        if settings.dry_run:
            _log_dry_run(settings, identity.arn, targeted, script)
            self.outcome.status = "dry run"
            return "Dry run: all checks passed; nothing was sent."
        stops.raise_if_requested()
        commands = self._send(ssm, settings, script, identity.arn)
        self.outcome.commands, self.outcome.status = commands, "running"
        if not settings.wait:
            self.outcome.status = "sent"
            return f"Sent command {_ids(commands)}; not waiting for it (WAIT: 'false')."
        invocations = self._follow(session, ssm, settings, commands, stops, names, len(targeted or []))
        failed = [inv for inv in invocations.values() if not inv.succeeded]
        failure: DeployFailed | None = None
        if failed:
            failure = DeployFailed(_failure_message(failed, len(invocations), commands))
        elif not invocations:
            failure = DeployFailed(f"TARGETS matched no managed instance: nothing ran. Command id: {_ids(commands)}")
        elif settings.healthcheck_commands:
            failure = self._health_check(session, ssm, list(invocations), stops, names, identity.arn)
        if failure is not None:
            if settings.rollback_commands:
                received = [i for i, inv in invocations.items() if inv.received_deploy]
                failure = self._roll_back(session, ssm, received, stops, names, identity.arn, failure)
            raise failure
        self.outcome.status = "succeeded"
        checked = " and passed the health check" if settings.healthcheck_commands else ""
        return f"Deployed to {len(invocations)} instance(s){checked}."

    def _send(self, ssm: Any, phase: DeploySettings, script: list[str], role: str) -> list[SentCommand]:
        commands = send_commands(ssm, phase, script)
        for command in commands:
            count = f"{len(command.instance_ids)} instance(s)" if command.instance_ids else "the TARGETS"
            log.info(f"Sent command {command.command_id} to {count} [{phase.comment}] by {role}")
            log.info(f"Console: {console_url(phase.region, command.command_id)}")
        return commands

    def _health_check(
        self, session: Any, ssm: Any, instance_ids: list[str], stops: StopRequests, names: dict[str, str], role: str
    ) -> DeployFailed | None:
        settings = self.settings
        log.info(
            f"---- Health check on {len(instance_ids)} instance(s): up to {settings.healthcheck_retries} "
            f"attempt(s), {settings.healthcheck_interval} s apart ----"
        )
        commands, invocations, unhealthy = self._run_phase(
            session,
            ssm,
            stops,
            names,
            role,
            "health check",
            instance_ids,
            commands=healthcheck_body(settings),
            execution_timeout=settings.healthcheck_timeout,
        )
        self.outcome.healthcheck_commands = commands
        self.outcome.healthcheck = "failed" if unhealthy else "passed"
        if not unhealthy:
            log.info(f"Health check passed on all {len(invocations)} instance(s)")
            return None
        return DeployFailed(
            f"The deploy ran, but the health check failed on {len(unhealthy)} of {len(invocations)} instance(s): "
            f"{_listed(unhealthy)}. Command id: {_ids(commands)}"
        )

    def _roll_back(
        self,
        session: Any,
        ssm: Any,
        instance_ids: list[str],
        stops: StopRequests,
        names: dict[str, str],
        role: str,
        failure: DeployFailed,
    ) -> DeployFailed:
        if not instance_ids:
            self.outcome.rollback = "not needed"
            return DeployFailed(f"{failure} No instance received the deploy, so nothing was rolled back.")
        log.error(f"{failure}")
        log.info(f"---- Rollback on the {len(instance_ids)} instance(s) that received the deploy ----")
        commands, invocations, broken = self._run_phase(
            session, ssm, stops, names, role, "rollback", instance_ids, commands=self.settings.rollback_commands
        )
        self.outcome.rollback_commands = commands
        self.outcome.rollback = "failed" if broken else "succeeded"
        if not broken:
            return DeployFailed(f"{failure} Rollback succeeded on all {len(invocations)} instance(s).")
        return DeployFailed(
            f"{failure} ROLLBACK FAILED on {len(broken)} of {len(invocations)} instance(s): {_listed(broken)}; "
            f"they need attention. Rollback command id: {_ids(commands)}"
        )

    def _run_phase(
        self,
        session: Any,
        ssm: Any,
        stops: StopRequests,
        names: dict[str, str],
        role: str,
        label: str,
        instance_ids: list[str],
        **changes: Any,
    ) -> tuple[list[SentCommand], dict[str, Invocation], list[Invocation]]:
        """Send a follow-up command (health check, rollback) to ``instance_ids`` and follow it; every
        instance is tried whatever the others do. Returns the commands, invocations and failures."""
        phase = replace(
            self.settings,
            instance_ids=instance_ids,
            targets=[],
            max_errors="100%",
            comment=cut(f"{self.settings.comment} {label}", COMMENT_LIMIT),
            **changes,
        )
        commands = self._send(ssm, phase, build_script(phase), role)
        invocations = self._follow(session, ssm, phase, commands, stops, names, len(instance_ids))
        return commands, invocations, [inv for inv in invocations.values() if not inv.succeeded]

    def _targeted_instances(self, session: Any, ec2: Any, stops: StopRequests) -> list[str] | None:
        settings = self.settings
        if not settings.targets:
            return settings.instance_ids
        rg = _client(session, "resource-groups", settings.region, stops)
        found = resolve_targets(ec2, rg, settings.targets)
        if found is not None:
            if not found:
                raise PipeError(
                    f"TARGETS: nothing was sent. {'; '.join(map(str, settings.targets))} match no running instance "
                    f"in {settings.region}. Check the tag names and values (they are case-sensitive)."
                )
            log.info(f"TARGETS match {len(found)} running instance(s)")
        return found

    def _follow(
        self,
        session: Any,
        ssm: Any,
        phase: DeploySettings,
        commands: list[SentCommand],
        stops: StopRequests,
        names: dict[str, str],
        expected_count: int,
    ) -> dict[str, Invocation]:
        """Wait for the invocations while printing their output; cancel on a stop or on the wait bound.

        AWS becoming unreachable or refusing a call ends it with DeployStopped naming the command."""
        settings = phase
        with _aws_errors_explained(phase.region, commands):
            count = max(expected_count, sum(len(c.instance_ids) for c in commands))
            printer = OutputPrinter(
                self.redactor, label_lines=count != 1, names=names, instance_count=count, order=self.order
            )
            tail = _log_tail(session, settings, commands, printer, stops)
            s3 = _client(session, "s3", settings.region, stops) if settings.output_s3_bucket else None
            on_poll = tail.poll if tail else (lambda: 0)
            watch = AgentWatch(ssm, settings.agent_lost_timeout)
            tracker = InvocationTracker(ssm, commands, agent_watch=watch)
            self.outcome.invocations = tracker.invocations
            limit = settings.delivery_timeout + settings.execution_timeout + WAIT_MARGIN_SECONDS
            try:
                invocations = tracker.wait(limit, on_poll, stops.raise_if_requested)
            except (Interrupted, WaitTimedOut) as stop:
                log.error(f"{stop} Cancelling command {_ids(commands)}.")
                if all([cancel_command(ssm, command.command_id) for command in commands]):
                    try:
                        tracker.wait(CANCEL_GRACE_SECONDS, on_poll)
                    except WaitTimedOut:
                        log.warning(f"Cancellation not confirmed within {CANCEL_GRACE_SECONDS} s")
                show_results(ssm, commands, tracker.invocations, printer, tail, settings, s3)
                raise DeployStopped(f"{stop} The command was cancelled. Command id: {_ids(commands)}") from None
            for command in commands:
                lost = [i for i, inv in invocations.items() if inv.lost and inv.command_id == command.command_id]
                if lost:  # so a returning agent does not run a deploy nobody watches
                    cancel_command(ssm, command.command_id, lost)
            self.outcome.invocations = invocations
            show_results(ssm, commands, invocations, printer, tail, settings, s3)
            return invocations


def _log_dry_run(settings: DeploySettings, role: str, targeted: list[str] | None, script: list[str]) -> None:
    if settings.targets:
        where = "TARGETS " + "; ".join(map(str, settings.targets))
        where += f" ({len(targeted)} instance(s) now: {', '.join(targeted)})" if targeted is not None else ""
    else:
        where = f"{len(settings.instance_ids)} instance(s): {', '.join(settings.instance_ids)}"
    lines = [
        "Dry run: nothing is sent. The plan:",
        f"  role:      {role}",
        f"  targets:   {where}",
        f"  document:  {settings.document_name}"
        + (f" version {settings.document_version}" if settings.document_version else ""),
        f"  rollout:   {settings.max_concurrency} at a time, stop after {settings.max_errors} error(s)",
        f"  timeouts:  delivery {settings.delivery_timeout} s, execution {settings.execution_timeout} s",
        f"  comment:   {settings.comment}",
        "  script (secrets appear as parameter names only):",
        *(f"    {line}" for line in script),
    ]
    if settings.healthcheck_commands:
        lines.append(
            f"  then a health check ({settings.healthcheck_retries} attempt(s), {settings.healthcheck_interval} s "
            "apart):"
        )
        lines += [f"    {line}" for line in settings.healthcheck_commands.split("\n")]
    if settings.rollback_commands:
        lines.append("  on failure, a rollback on the instances that received the deploy:")
        lines += [f"    {line}" for line in settings.rollback_commands.split("\n")]
    log.info("\n".join(lines))


def _failure_message(failed: list[Invocation], total: int, commands: list[SentCommand]) -> str:
    skipped = [inv for inv in failed if inv.skipped]
    broken = [inv for inv in failed if not inv.skipped]
    shown = _listed(broken)
    message = f"Deploy failed on {len(broken)} of {total} instance(s): {shown}."
    if skipped:
        message += (
            f" The rollout stopped at MAX_ERRORS: {len(skipped)} instance(s) were skipped and still run the old "
            f"version: {', '.join(inv.instance_id for inv in skipped[:20])}{' ...' if len(skipped) > 20 else ''}."
        )
    return message + f" Command id: {_ids(commands)}"


@contextmanager
def _aws_errors_explained(region: str, commands: list[SentCommand]) -> Iterator[None]:
    """Turn an AWS error while following ``commands`` into DeployStopped naming them (they may still run)."""
    try:
        yield
    except BotoCoreError as error:
        raise DeployStopped(
            f"Lost contact with AWS while following command {_ids(commands)} ({error}). The command may "
            f"still be running on the instances: see {_urls(region, commands)}"
        ) from None
    except ClientError as error:
        operation = error.operation_name
        fix = f" Fix: allow {permission_for(operation)} for the deploy role." if is_access_denied(error) else ""
        raise DeployStopped(
            f"AWS refused {operation} while following command {_ids(commands)} ({error_code(error)}: "
            f"{error_message(error)}).{fix} The command may still be running on the instances: see "
            f"{_urls(region, commands)}"
        ) from None


def _listed(invocations: list[Invocation], limit: int = 20) -> str:
    """``i-1: Failed (exit 3); i-2: ...``, at most ``limit`` of them."""
    shown = "; ".join(f"{inv.instance_id}: {inv.describe()}" for inv in invocations[:limit])
    if len(invocations) > limit:
        shown += f"; and {len(invocations) - limit} more (see the summary)"
    return shown


def _ids(commands: list[SentCommand]) -> str:
    return ", ".join(command.command_id for command in commands)


def _urls(region: str, commands: list[SentCommand]) -> str:
    return " ".join(console_url(region, command.command_id) for command in commands)


def _log_plan(settings: DeploySettings) -> None:
    build = settings.build
    log.info(
        f"Deploy {build.repo} build #{build.build_number}"
        + (f" commit {build.short_commit}" if build.short_commit else "")
        + (f" ({build.branch})" if build.branch else "")
        + (f" triggered by {build.triggerer}" if build.triggerer else "")
    )
    if settings.targets:
        where = "TARGETS " + "; ".join(map(str, settings.targets))
    elif len(settings.instance_ids) > 10:
        where = f"{len(settings.instance_ids)} instances: {', '.join(settings.instance_ids[:10])}, ..."
    else:
        where = f"targets: {', '.join(settings.instance_ids)}"
    rollout = f"; {settings.max_concurrency} at a time, stop after {settings.max_errors} error(s)"
    log.info(f"Environment: {settings.environment or '(none)'}; region {settings.region}; {where}{rollout}")
    if settings.secrets:
        names = ", ".join(f"{ref.env_name} <- {ref.parameter}" for ref in settings.secrets)
        log.info(f"Secrets read on the instances: {names}")


def _log_tail(
    session: Any, settings: DeploySettings, commands: list[SentCommand], printer: OutputPrinter, stops: StopRequests
) -> LogTail | None:
    if not settings.stream_output:
        return None
    logs = _client(session, "logs", settings.region, stops)
    log.info(f"Streaming output from CloudWatch Logs group {settings.log_group}")
    start_ms = int(time.time() * 1000) - 60_000  # allow for clock skew between here and AWS
    return LogTail(logs, settings.log_group, [command.command_id for command in commands], printer, start_ms)


def _client(session: Any, service: str, region: str, stops: StopRequests) -> Any:
    """A client whose retried calls end at the next attempt when the pipeline is stopped."""
    client = session.client(service, region_name=region, config=client_config())
    stop_between_attempts(client, stops)
    return client
