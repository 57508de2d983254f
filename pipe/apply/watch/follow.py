"""Follow sent commands to the end: live output, statuses, cancel on a stop or on the wait bound."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from botocore.exceptions import BotoCoreError, ClientError

from pipe.apply.run import Run
from pipe.apply.send import SentCommands, cancel_command
from pipe.apply.watch.agent_watch import AgentWatch
from pipe.apply.watch.closing import show_results
from pipe.apply.watch.live_tail import log_group_arn
from pipe.apply.watch.log_tail import LogTail
from pipe.apply.watch.tracker import InvocationTracker, WaitTimedOut, wait_until_final
from pipe.aws.authenticate import CredentialsExpired, session_ended
from pipe.aws.console import console_urls
from pipe.aws.errors import error_code, error_message, is_access_denied, permission_for
from pipe.errors import DeployStopped, StillRunning, sentence
from pipe.model import CommandSpec, Invocation, PhaseOutcome, SentCommand, command_ids
from pipe.report.console import OutputPrinter
from pipe.runtime.interruption import Interrupted

CANCEL_GRACE_SECONDS = 30
log = logging.getLogger("ssm-deploy")


def follow(run: Run, spec: CommandSpec, commands: list[SentCommand], record: PhaseOutcome) -> dict[str, Invocation]:
    """Wait for the invocations while printing their output; ``record`` sees them as they change.

    Chunks that MAX_CONCURRENCY held back (``SentCommands.rest``) are sent as earlier ones end. A
    stop or the wait bound cancels the commands and raises DeployStopped; AWS becoming
    unreachable or refusing a call raises StillRunning naming the commands."""
    with aws_errors_explained(run.region, commands):
        printer = OutputPrinter(
            run.redactor,
            names=run.names,
            instance_count=_instance_count(run, commands),
            order=run.order,
            build_log=run.build_log,
        )
        tail = _log_tail(run, commands, printer)
        try:
            return _follow(run, spec, commands, record, printer, tail)
        finally:
            printer.flush_held()  # a stop: what was held back for a next piece that will not come
            if tail is not None:
                tail.close()


def _follow(
    run: Run,
    spec: CommandSpec,
    commands: list[SentCommand],
    record: PhaseOutcome,
    printer: OutputPrinter,
    tail: LogTail | None,
) -> dict[str, Invocation]:
    s3 = run.clients.s3 if run.settings.output_s3_bucket else None
    on_poll = tail.poll if tail else (lambda: 0)
    tracker = _tracker(run, commands, record, tail)
    limit = spec.delivery_timeout + spec.execution_timeout + run.plan.bounds.wait_margin
    try:
        invocations = wait_until_final(
            tracker, limit, on_poll, run.stops.raise_if_requested if spec.stoppable else _no_stop
        )
    except (Interrupted, WaitTimedOut) as stop:
        unconfirmed = _cancel(run, tracker, stop, on_poll)
        tracker.read_results()
        show_results(run.clients.ssm, tracker.commands, tracker.invocations, printer, tail, run.settings, s3)
        raise _stopped(run, tracker.commands, stop, unconfirmed) from None
    for command in tracker.commands:
        lost = [i for i, inv in invocations.items() if inv.lost and inv.command_id == command.command_id]
        if lost:  # so a returning agent does not run a deploy nobody watches
            cancel_command(run.clients.ssm, command.command_id, lost)
    tracker.read_results()
    show_results(run.clients.ssm, tracker.commands, invocations, printer, tail, run.settings, s3)
    return invocations


def _tracker(run: Run, commands: list[SentCommand], record: PhaseOutcome, tail: LogTail | None) -> InvocationTracker:
    """The tracker of ``commands``, which sends the chunks MAX_CONCURRENCY held back as earlier ones end."""
    rest = commands.rest if isinstance(commands, SentCommands) else None

    def sent_later(command: SentCommand) -> None:
        record.commands.append(command)
        if tail is not None:
            tail.add_command(command.command_id)
        log.info(f"Sent command {command.command_id} to {len(command.instance_ids)} instance(s) [{command.comment}]")

    tracker = InvocationTracker(
        run.clients.ssm,
        commands,
        agent_watch=AgentWatch(run.clients.ssm, run.settings.agent_lost_timeout),
        instance_count=_instance_count(run, commands),  # before the first poll, so it counts the held-back chunks
        document_name=run.settings.document_name,
        rest=rest,
        on_sent=sent_later,
        on_ended=tail.command_ended if tail is not None else (lambda command_id: None),
    )
    record.track(tracker.invocations)
    return tracker


def _cancel(run: Run, tracker: InvocationTracker, stop: Exception, on_poll: Callable[[], int]) -> str:
    """A stop or the wait bound: hold back the rest, cancel every command sent and wait a while for it;
    return why the cancellation is not confirmed ("" when it is)."""
    tracker.hold_back_rest()
    sent = tracker.commands
    log.error(f"{sentence(str(stop))} Cancelling command {command_ids(sent)}.")
    if not all([cancel_command(run.clients.ssm, command.command_id) for command in sent]):
        return "SSM refused to cancel the command (see above)"
    try:
        wait_until_final(tracker, CANCEL_GRACE_SECONDS, on_poll)
    except WaitTimedOut:
        return f"Cancellation was requested but not confirmed within {CANCEL_GRACE_SECONDS} s"
    return ""


def _stopped(run: Run, sent: list[SentCommand], stop: Exception, unconfirmed: str) -> DeployStopped | StillRunning:
    if not unconfirmed:
        return DeployStopped(f"{sentence(str(stop))} The command was cancelled. Command id: {command_ids(sent)}.")
    return StillRunning(f"{sentence(str(stop))} {unconfirmed}", *_links(run.region, sent), aws_answered=True)


def _instance_count(run: Run, commands: list[SentCommand]) -> int:
    """The phase's instances, the held-back chunks' included."""
    rest = commands.rest if isinstance(commands, SentCommands) else None
    count = max(len(run.targeted or []), sum(len(c.instance_ids) for c in commands))
    return count + (len(rest.waiting) if rest else 0)


def _no_stop() -> None:
    """A command that must end even once the pipeline was stopped (the read-only read of ``current``)."""


@contextmanager
def aws_errors_explained(region: str, commands: list[SentCommand]) -> Iterator[None]:
    """Turn an AWS error while following ``commands`` into StillRunning naming them."""
    try:
        yield
    except CredentialsExpired as error:
        raise StillRunning(
            f"The AWS credentials expired while following command {command_ids(commands)}: {error}",
            *_links(region, commands),
        ) from None
    except BotoCoreError as error:
        raise StillRunning(
            f"Lost contact with AWS while following command {command_ids(commands)} ({error})",
            *_links(region, commands),
        ) from None
    except ClientError as error:
        if session_ended(error):  # a 403, but no permission is missing
            raise StillRunning(
                f"The AWS credentials expired while following command {command_ids(commands)} ({error_code(error)}: "
                f"{error_message(error)})",
                *_links(region, commands),
            ) from None
        operation = error.operation_name
        fix = f" Fix: allow {permission_for(operation)} for the deploy role." if is_access_denied(error) else ""
        raise StillRunning(
            f"AWS refused {operation} while following command {command_ids(commands)} ({error_code(error)}: "
            f"{error_message(error)}).{fix}",
            *_links(region, commands),
        ) from None


def _links(region: str, commands: list[SentCommand]) -> tuple[list[str], str]:
    command_ids = [c.command_id for c in commands]
    return command_ids, console_urls(region, command_ids)


def _log_tail(run: Run, commands: list[SentCommand], printer: OutputPrinter) -> LogTail | None:
    settings = run.settings
    if not settings.stream_output:
        return None
    log.info(f"Streaming output from CloudWatch Logs group {settings.log_group}")
    group_arn = log_group_arn(run.region, run.identity.account, settings.log_group)
    command_ids = [c.command_id for c in commands]
    return LogTail(
        run.clients.logs, settings.log_group, command_ids, printer, group_arn=group_arn, live_logs=run.clients.live_tail
    )
