"""One deploy: authenticate, take the lock, build the plan, print it (or stop for a dry run), apply it,
and hand the plan and the outcome to the sinks.

Building the plan (``plan/build.py``) only reads, and every refusal happens there; applying it
(``apply/``) is the only step that sends or changes anything. The lock comes right after
authentication, before anything of the fleet is read: a deploy started during another one is told
that the other holds the lock, not what that deploy's drained batch does to MIN_HEALTHY.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import boto3

from pipe.apply import apply
from pipe.apply.lock import LockRequest, check_lock, deploy_lock
from pipe.aws.authenticate import Identity, authenticate
from pipe.aws.clients import Clients
from pipe.config.build_context import clone_dir
from pipe.config.lock import lock_name
from pipe.config.settings import DeploySettings
from pipe.errors import PipeError
from pipe.execution import Execution
from pipe.model import DeployOutcome, Status
from pipe.plan import DeployPlan
from pipe.plan.bounds import deploy_bounds
from pipe.plan.build import build_plan
from pipe.plan.commands import deploy_spec
from pipe.release.stage import upload_line
from pipe.report import plan as words
from pipe.report.sinks import sinks
from pipe.runtime.interruption import StopRequests, stop_between_attempts
from pipe.runtime.redaction import Redactor
from pipe.traffic.left_out import LeftOut, put_back_what_a_killed_deploy_left

log = logging.getLogger("ssm-deploy")
DRY_RUN_DONE = "Dry run: all checks passed; nothing was sent."


class Deploy:
    """One run of the pipe; ``outcome`` always says how far it got, and the sinks get it with the plan
    (None when the run ended before its plan was made)."""

    def __init__(self, settings: DeploySettings, env: Mapping[str, str], redactor: Redactor) -> None:
        self.settings = settings
        self.env = env
        self.redactor = redactor
        self.outcome = DeployOutcome()
        self.plan: DeployPlan | None = None

    def run(self, stops: StopRequests) -> str:
        """Return the success message, or raise DeployFailed (or PipeError)."""
        try:
            return self._run(stops)
        except PipeError as error:
            self.outcome.message = self.redactor.redact(str(error))
            if self.outcome.status is not Status.NOT_SENT:
                self.outcome.status = Status.FAILED
            raise
        finally:
            self.outcome.end()
            for sink in sinks(self.settings, self.env, self.redactor):
                sink.write(self.plan, self.outcome)

    def _run(self, stops: StopRequests) -> str:
        settings = self.settings
        words.announce(settings)
        bounds = deploy_bounds(settings)
        session, identity = authenticate(settings, self.env, self.redactor, bounds.aws_seconds)
        # a stop ends a retried call at its next attempt, until SendCommand (stop_between_attempts)
        clients = Clients(session, settings.region, lambda client: stop_between_attempts(client, stops))
        ctx = Execution(clients, stops, self.redactor, self.outcome)
        stops.raise_if_requested()
        with self._locked(ctx, identity, session) as lock_lines:
            self.plan = plan = build_plan(settings, identity, bounds, ctx, clone_dir(self.env))
            script = deploy_spec(plan, plan.batches[0]).script
            words.show(plan, script)
            if settings.dry_run:
                self._dry_run(plan, ctx, script, lock_lines)
                return DRY_RUN_DONE
            return apply(plan, ctx)

    def _dry_run(self, plan: DeployPlan, ctx: Execution, script: tuple[str, ...], lock_lines: list[str]) -> None:
        chosen = plan.settings.release
        upload = upload_line(ctx.clients.s3, chosen.bucket, plan.release) if plan.release and chosen else None
        if upload:
            log.info(upload)
        words.dry_run(plan, script, lock_lines)
        self.outcome.status = Status.DRY_RUN

    @contextmanager
    def _locked(self, ctx: Execution, identity: Identity, session: boto3.Session) -> Iterator[list[str]]:
        """LOCK: one deploy of this service and environment at a time, held for the ``with`` block and
        renewed meanwhile through a client that a stop does not cut short (the rollback after a stop
        still holds it); a lost lock stops the deploy. A dry run only reads it (the plan's lines)."""
        settings = self.settings
        if not settings.rollout.lock:
            yield []
            return
        request = LockRequest(lock_name(settings.service, settings.environment), identity.arn, settings.build)
        if settings.dry_run:
            yield [check_lock(ctx.clients.ssm, request)]
            return
        own = Clients(session, settings.region).ssm
        with deploy_lock(ctx.clients.ssm, request, release_ssm=own, on_lost=ctx.stops.stop):
            put_back_what_a_killed_deploy_left(
                own,
                ctx.clients.elbv2,
                ctx.clients.ec2,
                ctx.clients.autoscaling,
                request.name,
                settings.rollout.healthy_timeout,
            )
            ctx.left_out = LeftOut(own, request.name, settings.build.url or settings.build.build_number)
            yield []
