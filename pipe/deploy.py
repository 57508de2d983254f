"""The deploy, stage by stage: authenticate, lock, resolve, preflight, roll out (or dry run), report.

Each stage lives in its own module under ``pipe/stages``; this file only puts them in order and
keeps the outcome that the result file reports, however the run ends. The lock comes right after
authentication, before anything of the fleet is read: a deploy started during another one is told
that the other holds the lock, not what that deploy's drained batch does to MIN_HEALTHY.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import boto3

from pipe.aws.clients import Clients
from pipe.config.lock import lock_name
from pipe.config.settings import DeploySettings
from pipe.errors import DeployStopped, PipeError
from pipe.model import DeployOutcome, Status
from pipe.plan.bounds import deploy_bounds
from pipe.report import plan
from pipe.report.result_file import write_result
from pipe.run import Run
from pipe.runtime.interruption import StopRequests, stop_between_attempts
from pipe.runtime.redaction import Redactor
from pipe.stages.authenticate import authenticate
from pipe.stages.lock import LockRequest, check_lock, deploy_lock
from pipe.stages.phases import deploy_spec, send_only
from pipe.stages.preflight import preflight
from pipe.stages.release.stage import Release, done_message, dry_run_lines, prepare_release, record_release
from pipe.stages.resolve import label_instances, resolve, resolve_parameters
from pipe.stages.rollout import plan_batches, roll_out
from pipe.stages.rollout_plan import RolloutPlan, prepare_rollout

log = logging.getLogger("ssm-deploy")


class Deploy:
    """One run of the pipe; ``outcome`` always says how far it got, for the result file."""

    def __init__(self, settings: DeploySettings, env: Mapping[str, str], redactor: Redactor) -> None:
        self.settings = settings
        self.env = env
        self.redactor = redactor
        self.outcome = DeployOutcome()
        self.release: Release | None = None

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
            write_result(self.settings, self.outcome, release=self.release)

    def _run(self, stops: StopRequests) -> str:
        plan.announce(self.settings)
        bounds = deploy_bounds(self.settings)
        session, identity = authenticate(self.settings, self.env, self.redactor, bounds.aws_seconds)
        # a stop ends a retried call at its next attempt, until SendCommand (stop_between_attempts)
        clients = Clients(session, self.settings.region, lambda client: stop_between_attempts(client, stops))
        run = Run(self.settings, self.env, self.redactor, stops, clients, identity, self.outcome)
        stops.raise_if_requested()
        with self._locked(run, session) as lock_lines:
            resolve(run)
            preflight(run)
            resolve_parameters(run)
            label_instances(run)
            rollout = prepare_rollout(run, plan_batches(run))
            return self._deploy(run, rollout, lock_lines)

    def _deploy(self, run: Run, rollout: RolloutPlan, lock_lines: list[str]) -> str:
        if rollout.lines and not run.settings.dry_run:
            log.info("Rollout plan:\n" + "\n".join(rollout.lines))
        prepare_release(run)
        self.settings, self.release = run.settings, run.release
        first = deploy_spec(run.settings, rollout.batches[0], run.release.plan if run.release is not None else None)
        script = list(first.script)
        log.debug("Script sent to the instances (secrets appear as parameter names only):\n" + "\n".join(script))
        if run.settings.dry_run:
            extra = lock_lines + rollout.lines + dry_run_lines(run)
            plan.dry_run(run.settings, run.identity.arn, run.targeted, script, extra)
            self.outcome.status = Status.DRY_RUN
            return "Dry run: all checks passed; nothing was sent."
        if not run.settings.wait:  # refused in release mode and with later phases: one command, not followed
            message = send_only(run, first)
            self.outcome.status = Status.SENT
            return message
        stopped = False
        try:
            message = roll_out(run, rollout.batches, rollout.hook)
            self.outcome.status = Status.SUCCEEDED
        except DeployStopped:
            stopped = True
            raise
        finally:
            record_release(run, self.outcome, stopped)
        return done_message(run.release, message)

    @contextmanager
    def _locked(self, run: Run, session: boto3.Session) -> Iterator[list[str]]:
        """LOCK: one deploy of this service and environment at a time, held for the ``with`` block and
        renewed meanwhile through a client that a stop does not cut short (the rollback after a stop
        still holds it); a lost lock stops the deploy. A dry run only reads it (the plan's lines)."""
        settings = run.settings
        if not settings.rollout.lock:
            yield []
            return
        request = LockRequest(lock_name(settings.service, settings.environment), run.identity.arn, settings.build)
        if settings.dry_run:
            yield [check_lock(run.clients.ssm, request)]
            return
        own = Clients(session, settings.region).ssm
        with deploy_lock(run.clients.ssm, request, release_ssm=own, on_lost=run.stops.stop):
            yield []
