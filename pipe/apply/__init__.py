"""Applying the plan: upload the release's build, send the deploy batch by batch (or once, not
followed, with WAIT: 'false'), and record the release in the ledger however the rollout ends.

Everything here acts; everything it acts on was read and checked by ``build_plan``."""

from __future__ import annotations

from pipe.apply.phases import send_only
from pipe.apply.rollout import roll_out
from pipe.apply.run import Run
from pipe.errors import DeployStopped
from pipe.execution import Execution
from pipe.model import Status
from pipe.plan import DeployPlan
from pipe.plan.commands import deploy_spec
from pipe.release.stage import LEDGER, done_message, record_release, unrecorded_failure, upload_release
from pipe.traffic import holding_all
from pipe.traffic.auto_scaling.new_instances import converge_new_instances


def apply(plan: DeployPlan, ctx: Execution) -> str:
    """Carry ``plan`` out; return the success message, or raise DeployFailed (or PipeError). The
    outcome is built in ``ctx.outcome`` as it goes."""
    run = Run.applying(plan, ctx)
    run.outcome.skipped.update(plan.skipped)
    settings, release = plan.settings, plan.release
    if release is not None and settings.release is not None:
        upload_release(run.clients.s3, settings.release.bucket, release)
    if not settings.wait:  # refused in release mode and with later phases: one command, not followed
        message = send_only(run, deploy_spec(plan, plan.batches[0]))
        run.outcome.status = Status.SENT
        return message
    stopped, unrecorded = False, None
    try:
        with holding_all(plan.scopes, run):  # e.g. an Auto Scaling group's processes, from first batch to last
            message = roll_out(run, list(plan.batches), plan.hook)
        run.outcome.status = Status.SUCCEEDED
    except DeployStopped:
        stopped = True
        raise
    finally:
        if release is not None:
            unrecorded = record_release(run.clients.ssm, release, settings.build, run.targeted, run.outcome, stopped)
    if plan.new_instances is not None:  # only after success: a failed deploy never changes what new instances install
        converge_new_instances(run.clients.ssm, plan.new_instances)
    if release is not None and unrecorded is not None:  # live everywhere, but not on record
        run.outcome.failed_phase = LEDGER
        raise unrecorded_failure(release, done_message(release, message), unrecorded)
    return done_message(release, message)
