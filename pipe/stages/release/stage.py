"""The release stage: which release goes out (a new build uploaded once, or one the ledger knows), the
plan each instance follows, and the ledger entry that records how the deploy ended."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipe.config.release import PREVIOUS, release_id
from pipe.config.settings import DeploySettings, ReleaseSettings
from pipe.errors import NothingSent, PipeError
from pipe.limits import MAX_SCRIPT_BYTES
from pipe.model import DeployOutcome, PhaseStatus
from pipe.run import Run
from pipe.stages.release.artifact import Artifact, already_uploaded, prepare_artifact, upload_once
from pipe.stages.release.ledger import (
    EntryStatus,
    LedgerEntry,
    Outcomes,
    before_live_in,
    ledger_name,
    live_in,
    read_history,
    record,
    release_in,
    utc_timestamp,
)
from pipe.stages.release.remote import ReleasePlan, install_body, install_steps
from pipe.stages.script import build_script

log = logging.getLogger("ssm-deploy")


@dataclass
class Release:
    """What the deploy ships and where it is recorded; ``run.release`` in release mode."""

    plan: ReleasePlan
    ledger: str
    live_before: str  # the release id the ledger says was live, "" for the first deploy
    artifact: Artifact | None = None  # a new build, None for RELEASE
    uploaded: bool = False


def prepare_release(run: Run) -> None:
    """Choose the release (upload the build once, or look it up in the ledger) and log what goes live
    instead of what. Nothing is sent to the instances here; in a dry run nothing is uploaded either."""
    settings, chosen = run.settings, run.settings.release
    if chosen is None:
        return
    name = ledger_name(settings.service, settings.environment or "")
    history = read_history(run.clients.ssm, name)
    live = live_in(history)
    live_id = live.entry.release_id if live else ""
    artifact = None
    if chosen.artifact is not None:
        artifact = _packed(run, chosen)
        identity = release_id(settings.build.build_number, settings.build.commit)
        key, sha256, fmt = artifact.key, artifact.sha256, artifact.archive_format
        commit = settings.build.commit
    else:
        wanted = before_live_in(history) if chosen.release == PREVIOUS else release_in(history, str(chosen.release))
        if wanted is None:
            what = "no release before the live one" if chosen.release == PREVIOUS else f"no release {chosen.release}"
            raise NothingSent("RELEASE", f"The release ledger {name} has {what}", "deploy a build with ARTIFACT first")
        identity, key, sha256 = wanted.entry.release_id, wanted.entry.artifact_key, wanted.entry.sha256
        commit = wanted.entry.commit
        fmt = "zip" if key.endswith(".zip") else "tar.gz"
    plan = ReleasePlan(
        app_dir=chosen.app_dir,
        release_id=identity,
        artifact_url=f"s3://{chosen.bucket}/{key}",
        sha256=sha256,
        archive_format=fmt,
        region=settings.region,
        shared_paths=chosen.shared_paths,
        run_as=chosen.run_as,
        commands=settings.commands,
        activate_commands=chosen.activate_commands,
        keep_releases=chosen.keep_releases,
        verify_processes=chosen.verify_processes,
        env_names=tuple([ref.env_name for ref in settings.secrets] + [name for name, _ in settings.variables]),
    )
    _check_size(settings, plan)
    run.release = Release(plan, name, live_id, artifact)
    _announce(run.release, live.entry.commit if live else "", commit)
    if not plan.verify_processes:
        log.warning(
            "VERIFY_PROCESSES is 'false': nothing checks that the processes run the new release with this deploy's "
            "values; a process left on a replaced release, or holding an old secret, goes unnoticed"
        )
    if artifact is not None and not settings.dry_run:
        run.release.uploaded = upload_once(run.clients.s3, chosen.bucket, artifact)
        log.info(
            f"Uploaded the build to s3://{chosen.bucket}/{artifact.key} ({artifact.size:,} bytes)"
            if run.release.uploaded
            else f"The build is already in s3://{chosen.bucket}/{artifact.key}: nothing uploaded"
        )
    elif artifact is not None:
        there = already_uploaded(run.clients.s3, chosen.bucket, artifact)
        log.info(
            f"Dry run: s3://{chosen.bucket}/{artifact.key} " + ("is already there" if there else "would be uploaded")
        )


def dry_run_lines(run: Run) -> list[str]:
    """The release part of the dry-run plan: what each instance would do."""
    if run.release is None:
        return []
    return ["  on each instance:", *(f"    {step}" for step in install_steps(run.release.plan))]


def record_release(run: Run, outcome: DeployOutcome) -> None:
    """Append how the deploy ended to the ledger (a failure to write warns: the verdict stays the deploy's)."""
    release = run.release
    if release is None or not outcome.deploy.commands:
        return
    by_instance = {i: _outcome(inv.succeeded, i, outcome) for i, inv in outcome.deploy.invocations.items()}
    status = EntryStatus.SUCCEEDED
    if outcome.deploy.failed or outcome.health_check.status is PhaseStatus.FAILED or outcome.interrupted:
        rolled_back = outcome.rollback.status is PhaseStatus.SUCCEEDED
        status = EntryStatus.ROLLED_BACK if rolled_back else EntryStatus.FAILED
    build = run.settings.build
    entry = LedgerEntry(
        release_id=release.plan.release_id,
        commit=build.commit,
        build_number=build.build_number,
        build_url=build.url,
        triggered_by=build.triggerer,
        artifact_key=release.plan.artifact_url.split("/", 3)[3],
        sha256=release.plan.sha256,
        status=status.value,
        instances=Outcomes.of(by_instance),
        time=utc_timestamp(),
        previous_release=release.live_before,
    )
    try:
        version = record(run.clients.ssm, release.ledger, entry)
    except PipeError as error:
        log.warning(f"The release ledger was not updated: {error}")
        return
    log.info(f"Release ledger {release.ledger}: version {version} records {entry.release_id} as {status.value}")


def _outcome(succeeded: bool, instance_id: str, outcome: DeployOutcome) -> str:
    if not succeeded:
        return "failed"
    rolled_back = outcome.rollback.invocations.get(instance_id)
    if rolled_back is not None:
        return "rolled back" if rolled_back.succeeded else "rollback failed"
    return "succeeded" if outcome.health_check.status is not PhaseStatus.FAILED else "unhealthy"


def _packed(run: Run, chosen: ReleaseSettings) -> Artifact:
    clone_dir = run.env.get("BITBUCKET_CLONE_DIR") or "."
    workdir = Path(tempfile.mkdtemp(prefix="ssm-deploy-artifact-"))
    return prepare_artifact(str(chosen.artifact), clone_dir, chosen.prefix, workdir)


def _check_size(settings: DeploySettings, plan: ReleasePlan) -> None:
    size = len("\n".join(build_script(settings, install_body(plan))).encode())
    if size > MAX_SCRIPT_BYTES:
        raise NothingSent(
            "COMMANDS",
            f"with ACTIVATE_COMMANDS and the release steps they make a script of {size:,} bytes; at most "
            f"{MAX_SCRIPT_BYTES:,} can be sent",
            "put the steps in a script inside the artifact and run that",
        )


def _announce(release: Release, live_commit: str, commit: str) -> None:
    """What goes live instead of what, with the commit range between them."""
    plan = release.plan
    before = release.live_before or "nothing (the first release this ledger records)"
    log.info(f"Release {plan.release_id} into {plan.app_dir}/releases; live before: {before}; ledger {release.ledger}")
    if live_commit and commit and live_commit != commit:
        log.info(f"Commits from the live release to this one: {live_commit[:12]}..{commit[:12]}")
