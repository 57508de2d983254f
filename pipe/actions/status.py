"""ACTION: status: what runs where. Read-only and without the lock: authenticate as a deploy does, read
the release ledger's history, resolve the instances as a deploy does, ask each one where
``APP_DIR/current`` points and which processes run from another release (the deploy's own read
command with the deploy's own process scan, ``phases.read_serving``), and print where the fleet differs
from the ledger, or serves another release than its ``current``. Drift, or an instance that could not be
asked, fails the step (``DriftFound``) so a scheduled pipeline alarms; the sinks get the findings however
it ended.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping

from botocore.exceptions import ClientError

from pipe.apply.phases import read_serving
from pipe.apply.run import Run
from pipe.aws.authenticate import authenticate
from pipe.aws.clients import Clients
from pipe.aws.errors import error_message, explain, is_access_denied
from pipe.aws.instances import ping_statuses
from pipe.config.release import ledger_archive_folder
from pipe.config.settings import DeploySettings, StatusSettings
from pipe.errors import PipeError
from pipe.execution import Execution
from pipe.model import UNKNOWN_RELEASE
from pipe.plan import DeployPlan
from pipe.plan.bounds import WAIT_MARGIN_SECONDS, Bounds
from pipe.plan.commands import READ_DELIVERY_TIMEOUT, READ_EXECUTION_TIMEOUT
from pipe.plan.resolve import label_instances, resolve
from pipe.release.ledger import ledger_name
from pipe.release.ledger_archive import Archive
from pipe.release.ledger_store import History, read_history
from pipe.report.instances import named
from pipe.report.sinks import status_sinks
from pipe.report.status import (
    HISTORY_SHOWN,
    FleetStatus,
    fleet_lines,
    history_lines,
    problem_lines,
    verdict_message,
)
from pipe.runtime.interruption import StopRequests, stop_between_attempts
from pipe.runtime.redaction import Redactor

log = logging.getLogger("ssm-deploy")
ONLINE = "Online"
# the session must outlast the read command: its delivery and execution timeouts, and the follow margin
STATUS_BOUNDS = Bounds(READ_DELIVERY_TIMEOUT + READ_EXECUTION_TIMEOUT + WAIT_MARGIN_SECONDS, WAIT_MARGIN_SECONDS)


class DriftFound(PipeError):
    """The fleet differs from the ledger, or an instance could not be asked: the step fails."""


def show_status(settings: DeploySettings, env: Mapping[str, str], redactor: Redactor, stops: StopRequests) -> str:
    """Print what runs where; return the ``No drift`` line, or raise DriftFound (or PipeError)."""
    status = FleetStatus()
    try:
        return _show(settings, env, redactor, stops, status)
    except DriftFound:
        raise
    except PipeError as error:
        status.message = redactor.redact(str(error))
        raise
    except ClientError as error:
        status.message = redactor.redact(explain(error))
        raise
    except Exception as error:  # AWS out of reach, a stop, a bug of ours: the result file still says so
        status.message = redactor.redact(f"The status could not be read: {type(error).__name__}: {error}")
        raise
    finally:
        for sink in status_sinks(settings, env):
            sink.write_status(status)


def _show(
    settings: DeploySettings, env: Mapping[str, str], redactor: Redactor, stops: StopRequests, status: FleetStatus
) -> str:
    chosen = settings.status
    assert chosen is not None  # ACTION: status (validation sets it)
    _announce(settings, chosen)
    session, identity = authenticate(settings, env, redactor, STATUS_BOUNDS.aws_seconds)
    clients = Clients(session, settings.region, lambda client: stop_between_attempts(client, stops))
    stops.raise_if_requested()
    history = _history(settings, chosen, clients)
    status.ledger, status.live = history.name, history.live()
    status.recent = tuple(itertools.islice(history.newest_first(), HISTORY_SHOWN))
    log.info("\n".join(history_lines(status.ledger, status.live, status.recent)))
    instances = resolve(settings, clients)
    if instances is None:
        raise PipeError(
            "TARGETS: ACTION: status asks each instance, so it must know them: the deploy role could not resolve "
            "TARGETS (see the warning above). Fix: allow ec2:DescribeInstances, or give INSTANCE_IDS."
        )
    status.names, status.app_dir = label_instances(clients.ec2, instances), chosen.app_dir
    online = _online(clients, instances, status)
    if online:
        ctx = Execution(clients, stops, redactor)
        plan = DeployPlan(settings, identity, STATUS_BOUNDS, tuple(online), batches=(), names=status.names)
        for instance, (runs, listed) in read_serving(Run.applying(plan, ctx), chosen.app_dir, online).items():
            status.fleet[instance], status.processes[instance] = runs, listed
    status.fleet = {instance: status.fleet.get(instance, UNKNOWN_RELEASE) for instance in instances}
    return _verdict(status, chosen.app_dir)


def _announce(settings: DeploySettings, chosen: StatusSettings) -> None:
    build = settings.build
    log.info(
        f"Status of {settings.service} in {settings.environment} ({settings.region}): which release runs where, "
        f"read from the release ledger, {chosen.app_dir}/current and the processes running from its releases; "
        "read-only, no lock "
        f"({build.repo} build #{build.build_number})"
    )
    if settings.ignored:
        log.info(f"{', '.join(settings.ignored)}: only used by a deploy, ignored by ACTION: status")


def _history(settings: DeploySettings, chosen: StatusSettings, clients: Clients) -> History:
    """The ledger's history as RELEASE: previous reads it: Parameter Store's versions, then the
    archive in ARTIFACT_BUCKET when one is given."""
    environment = settings.environment or ""
    archive = None
    if chosen.bucket:
        folder = ledger_archive_folder(chosen.prefix, settings.service, environment)
        archive = Archive(clients.s3, chosen.bucket, folder)
    return read_history(clients.ssm, ledger_name(settings.service, environment), archive)


def _online(clients: Clients, instances: list[str], status: FleetStatus) -> list[str]:
    """The instances whose SSM Agent is online; the others are unknown, with the reason. Without
    ssm:DescribeInstanceInformation every instance is asked (one offline then gives no answer)."""
    try:
        seen = ping_statuses(clients.ssm, instances)
    except ClientError as error:
        if not is_access_denied(error):
            raise
        log.warning(
            "Skipping the agent check: the deploy role lacks ssm:DescribeInstanceInformation "
            f"({error_message(error)}); an offline instance shows up as one the read got no answer from."
        )
        return list(instances)
    for instance in instances:
        if instance not in seen:
            status.why_unknown[instance] = "not managed by SSM in this region"
        elif seen[instance] != ONLINE:
            status.why_unknown[instance] = f"SSM Agent not online: {seen[instance]}"
    by_reason: dict[str, list[str]] = {}
    for instance in instances:
        if instance in status.why_unknown:
            by_reason.setdefault(status.why_unknown[instance], []).append(instance)
    for reason, unasked in by_reason.items():  # each with its own reason: not managed is no offline agent
        log.warning(f"Not asked, {reason}: {named(unasked)}")
    return [instance for instance in instances if instance not in status.why_unknown]


def _verdict(status: FleetStatus, app_dir: str) -> str:
    log.info("\n".join(fleet_lines(status, app_dir)))
    problems = problem_lines(status)
    for line in problems:
        log.error(line)
    if problems or not status.fleet:
        raise DriftFound(verdict_message(status))
    return verdict_message(status)
