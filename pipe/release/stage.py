"""The release stage: which release goes out (chosen by a ``ReleaseSource``: a new build, or one the
ledger knows) and the plan each instance follows, read before anything is sent; then, as the deploy
runs, the build uploaded once and the ledger entry that records how the deploy ended."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError

from pipe.aws.clients import Clients
from pipe.config.build_context import BuildContext
from pipe.config.release import RELEASE_ID_MAX, ledger_archive_folder
from pipe.config.settings import DeploySettings
from pipe.errors import DeployFailed, PipeError, sentence
from pipe.model import BatchOutcome, DeployOutcome, SecretRef
from pipe.release.artifact import Artifact, already_uploaded, upload_once
from pipe.release.fleet_state import entry_status, fleet_at_end, instance_outcomes
from pipe.release.ledger import (
    FLEET_GROUPS_MAX,
    Action,
    EntryStatus,
    Groups,
    LedgerEntry,
    ReleaseInfo,
    RunInfo,
    ledger_name,
    utc_timestamp,
)
from pipe.release.ledger_archive import Archive, Version
from pipe.release.ledger_store import History, back_to_after, check_room, read_history, record
from pipe.release.remote import ReleasePlan, install_steps, prepare_steps
from pipe.release.sources import ReleaseSource

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_ssm import SSMClient

log = logging.getLogger("ssm-deploy")
LEDGER = "release ledger"  # the result file's failed_phase of a deploy the ledger could not record


@dataclass(frozen=True)
class Release:
    """What the deploy ships and where it is recorded: the plan's release in release mode."""

    plan: ReleasePlan
    ledger: str
    live_before: str  # the release id the ledger says was live, "" for the first deploy
    action: Action
    info: ReleaseInfo  # the release's own commit, build and artifact (a rollback's are the older release's)
    history: History  # the ledger as read before the deploy: the next version is copied with it
    artifact: Artifact | None = None  # a new build to upload, None for RELEASE
    live_commit: str = ""  # the commit of the release live before, when the ledger knows it

    @property
    def headline(self) -> str:
        """How the log names the deploy: ``Release 000043-89abcde``, ``Rollback to 000041-0123456``,
        ``Redeploy of 000042-0123456``."""
        words = {Action.DEPLOY: "Release", Action.ROLLBACK: "Rollback to", Action.REDEPLOY: "Redeploy of"}
        return f"{words[self.action]} {self.info.id}"


def plan_release(
    settings: DeploySettings, secrets: Sequence[SecretRef], clients: Clients, source: ReleaseSource
) -> Release:
    """The release ``source`` chooses from the ledger, and the plan each instance follows. Reads only:
    nothing is uploaded or sent here."""
    chosen = settings.release
    assert chosen is not None  # release mode
    environment = settings.environment or ""
    name = ledger_name(settings.service, environment)
    folder = ledger_archive_folder(chosen.prefix, settings.service, environment)
    history = read_history(clients.ssm, name, Archive(clients.s3, chosen.bucket, folder))
    check_room(history)
    choice = source.choose(history)
    info = choice.info
    live = choice.live
    live_id, live_commit = (live.entry.release.id, live.entry.release.commit) if live else ("", "")
    back_to = back_to_after(history.newest_first(), info.sha256) if choice.action == Action.REDEPLOY else None
    back_now = history.previous().found
    plan = ReleasePlan(
        app_dir=chosen.app_dir,
        release_id=info.id,
        artifact_url=f"s3://{chosen.bucket}/{info.artifact_key}",
        sha256=info.sha256,
        archive_format="zip" if info.artifact_key.endswith(".zip") else "tar.gz",
        region=settings.region,
        shared_paths=chosen.shared_paths,
        run_as=chosen.run_as,
        commands=settings.commands,
        activate_commands=chosen.activate_commands,
        keep_releases=chosen.keep_releases,
        live_release=live_id,
        back_to=back_to.entry.release.id if back_to else "",
        back_now=back_now.entry.release.id if back_now else "",
        verify_processes=chosen.verify_processes,
        env_names=tuple([ref.env_name for ref in secrets] + [name for name, _ in settings.variables]),
    )
    if not plan.verify_processes:
        log.warning(
            "VERIFY_PROCESSES is 'false': nothing checks that the processes run the new release with this deploy's "
            "values; a process left on a replaced release, or holding an old secret, goes unnoticed"
        )
    return Release(plan, name, live_id, choice.action, info, history, choice.artifact, live_commit)


def release_lines(release: Release) -> list[str]:
    """What goes live instead of what, with the commit range between them."""
    plan = release.plan
    before = release.live_before or "nothing (the first release this ledger records)"
    lines = [f"{release.headline} in {plan.app_dir}/releases; live before: {before}; ledger {release.ledger}"]
    commit = release.info.commit
    if release.live_commit and commit and release.live_commit != commit:
        lines.append(f"Commits from the live release to this one: {release.live_commit[:12]}..{commit[:12]}")
    return lines


def upload_release(s3: S3Client, bucket: str, release: Release) -> None:
    """A new build goes to the release bucket once: nothing is uploaded when its key holds it already."""
    artifact = release.artifact
    if artifact is None:
        return
    uploaded = upload_once(s3, bucket, artifact)
    log.info(
        f"Uploaded the build to s3://{bucket}/{artifact.key} ({artifact.size:,} bytes)"
        if uploaded
        else f"The build is already in s3://{bucket}/{artifact.key}: nothing uploaded"
    )


def upload_line(s3: S3Client, bucket: str, release: Release) -> str | None:
    """For a dry run, which uploads nothing: whether the build would be uploaded."""
    artifact = release.artifact
    if artifact is None:
        return None
    there = already_uploaded(s3, bucket, artifact)
    return f"Dry run: s3://{bucket}/{artifact.key} " + ("is already there" if there else "would be uploaded")


def install_lines(release: Release | None, staged: bool = False) -> list[str]:
    """The release part of the dry-run plan: what each instance would do; ``staged``: first while all of
    them serve, then in its batch."""
    if release is None:
        return []
    steps = install_steps(release.plan, staged)
    if not staged:
        return ["  on each instance:", *(f"    {step}" for step in steps)]
    first = prepare_steps(release.plan)
    return [
        "  on each instance, staging (before the first batch):",
        *(f"    {step}" for step in first),
        "  on each instance, in its batch (drained):",
        *(f"    {step}" for step in steps),
    ]


def record_release(
    ssm: SSMClient,
    release: Release,
    build: BuildContext,
    targeted: list[str] | None,
    outcome: DeployOutcome,
    stopped: bool = False,
) -> str | None:
    """Append how the deploy ended to the ledger, and copy it to the archive. Returns why the ledger
    could not record it (the caller decides what that does to the verdict; a warning says it either
    way), or None. A copy the archive could not take only warns: the next deploy copies it.
    ``stopped``: the rollout ended on a stop (DeployStopped)."""
    if not reached_the_fleet(outcome):
        return None
    fleet = fleet_at_end(targeted, outcome, release.plan.release_id, release.live_before)
    for instance_id in outcome.departed:  # left the fleet: neither the ledger nor the result file names it
        outcome.fleet.pop(instance_id, None)
    outcome.fleet.update(fleet)  # the result file names the fleet the ledger records
    status = entry_status(outcome, stopped, fleet, release.plan.release_id, release.live_before)
    try:
        entry = LedgerEntry(
            release=release.info,
            run=RunInfo(build.build_number, build.commit, build.url, build.triggerer),
            action=release.action.value,
            status=status.value,
            fleet=Groups.of(fleet, limit=FLEET_GROUPS_MAX, name_max=RELEASE_ID_MAX),
            instances=Groups.of(instance_outcomes(list(fleet), outcome)),
            time=utc_timestamp(),
            previous_release=release.live_before,
        )
    except ValueError as error:  # a bug of ours
        return _not_recorded(f"the entry could not be made ({error})")
    value = entry.to_json()
    try:
        version = record(ssm, release.ledger, value)
    except (PipeError, BotoCoreError) as error:
        return _not_recorded(str(error))
    where = "" if status is EntryStatus.SUCCEEDED else f": {entry.fleet.describe()}"
    log.info(f"Release ledger {release.ledger}: version {version} records {release.headline} as {status.value}{where}")
    archive = release.history.archive
    if archive is not None:
        archive.keep([*release.history.versions, Version(version, value)], newest=version)
    return None


def reached_the_fleet(outcome: DeployOutcome) -> bool:
    """Something of this deploy reached an instance or the load balancer: a staging or deploy command was
    sent, or a batch was drained. Such a deploy is on the record however it ended (a release that failed
    to stage, a stop during the first drain); one refused before (bad input, the lock, MIN_HEALTHY) is not."""
    sent = outcome.stage.commands or outcome.deploy.commands
    return bool(sent) or any(record.outcome is not BatchOutcome.NOT_STARTED for record in outcome.batches)


def _not_recorded(reason: str) -> str:
    log.warning(f"The release ledger was not updated: {reason}")
    return reason


def unrecorded_failure(release: Release, done: str, reason: str) -> DeployFailed:
    """The verdict of a deploy that went live everywhere but that the ledger could not record: the
    ledger still names the release before it live, which the next deploy's rollback, ``RELEASE:
    previous`` and new instances trust, so the step must not end as a plain success."""
    why = reason if release.ledger in reason else f"the release ledger {release.ledger} was not written: {reason}"
    before = release.live_before or "no release"
    return DeployFailed(
        f"{done.rstrip('.')}, but the release ledger did not record it. {sentence(why)} Until a version records "
        f"{release.plan.release_id}, the ledger names {before} live, which the next deploy's rollback, "
        "RELEASE: previous and new instances go by: fix the cause, then run this step again, which finds "
        f"{release.plan.release_id} on every instance and records it."
    )


def done_message(release: Release | None, message: str) -> str:
    """The verdict line of a deploy that succeeded, naming the action in release mode."""
    return f"{release.headline}: {message}" if release is not None else message
