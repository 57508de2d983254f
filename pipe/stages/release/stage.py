"""The release stage: which release goes out (a new build uploaded once, or one the ledger knows), the
plan each instance follows, and the ledger entry that records how the deploy ended."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import BotoCoreError

from pipe.config.release import PREVIOUS, RELEASE_ID_MAX, ledger_archive_folder, release_id
from pipe.config.settings import DeploySettings, ReleaseSettings
from pipe.errors import NothingSent, PipeError
from pipe.limits import MAX_SCRIPT_BYTES
from pipe.model import DeployOutcome
from pipe.run import Run
from pipe.stages.release.artifact import Artifact, already_uploaded, prepare_artifact, upload_once
from pipe.stages.release.fleet_state import entry_status, fleet_at_end, instance_outcomes
from pipe.stages.release.ledger import (
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
from pipe.stages.release.ledger_archive import Archive, Recorded, Version
from pipe.stages.release.ledger_store import History, read_history, record, same_content
from pipe.stages.release.remote import ReleasePlan, install_body, install_steps
from pipe.stages.script import build_script

log = logging.getLogger("ssm-deploy")


@dataclass
class Release:
    """What the deploy ships and where it is recorded; ``run.release`` in release mode."""

    plan: ReleasePlan
    ledger: str
    live_before: str  # the release id the ledger says was live, "" for the first deploy
    action: Action
    info: ReleaseInfo  # the release's own commit, build and artifact (a rollback's are the older release's)
    history: History  # the ledger as read before the deploy: the next version is copied with it
    artifact: Artifact | None = None  # a new build, None for RELEASE
    uploaded: bool = False

    @property
    def headline(self) -> str:
        """How the log names the deploy: ``Release 000043-89abcde``, ``Rollback to 000041-0123456``,
        ``Redeploy of 000042-0123456``."""
        words = {Action.DEPLOY: "Release", Action.ROLLBACK: "Rollback to", Action.REDEPLOY: "Redeploy of"}
        return f"{words[self.action]} {self.info.id}"


def prepare_release(run: Run) -> None:
    """Choose the release (upload the build once, or look it up in the ledger) and log what goes live
    instead of what. Nothing is sent to the instances here; in a dry run nothing is uploaded either."""
    settings, chosen = run.settings, run.settings.release
    if chosen is None:
        return
    environment = settings.environment or ""
    name = ledger_name(settings.service, environment)
    folder = ledger_archive_folder(chosen.prefix, settings.service, environment)
    history = read_history(run.clients.ssm, name, Archive(run.clients.s3, chosen.bucket, folder))
    artifact = None
    if chosen.artifact is not None:
        artifact = _packed(run, chosen)
        number, commit = settings.build.build_number, settings.build.commit
        info = ReleaseInfo(release_id(number, commit), commit, number, artifact.key, artifact.sha256)
        live = history.live()
        action = Action.REDEPLOY if live and live.entry.release.sha256 == artifact.sha256 else Action.DEPLOY
    else:
        live, info, action = _from_ledger(history, str(chosen.release))
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
        verify_processes=chosen.verify_processes,
        env_names=tuple([ref.env_name for ref in settings.secrets] + [name for name, _ in settings.variables]),
    )
    _check_size(settings, plan)
    live_id = live.entry.release.id if live else ""
    run.release = Release(plan, name, live_id, action, info, history, artifact)
    _announce(run.release, live.entry.release.commit if live else "", info.commit)
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


def _from_ledger(history: History, wanted: str) -> tuple[Recorded | None, ReleaseInfo, Action]:
    """RELEASE: the live version, the release it names and whether that goes back or deploys the live
    content again."""
    if wanted == PREVIOUS:
        previous = history.previous()
        live = previous.live
        for item in previous.skipped:
            assert live is not None  # skipped only after the live one was found
            log.info(
                f"RELEASE: previous skips {item.entry.release.id} (ledger version {item.version}): the same artifact "
                f"as the live release {live.entry.release.id} (sha256 {live.entry.release.sha256[:12]}...), "
                "deployed again"
            )
        if previous.found is None or live is None:
            what = "no live release" if live is None else "no release live before the live one with another artifact"
            raise NothingSent(
                "RELEASE",
                f"The release ledger {history.name} has {what}",
                "deploy a build with ARTIFACT, or give RELEASE a release id from the ledger",
            )
        found = previous.found
        log.info(
            f"RELEASE: previous is {found.entry.release.id} (ledger version {found.version}), the release live "
            f"before {live.entry.release.id}"
        )
        return live, found.entry.release, Action.ROLLBACK
    live = history.live()
    chosen = history.release(wanted)
    if chosen is None:
        problem = f"The release ledger {history.name} has no release {wanted}"
        raise NothingSent("RELEASE", problem, "deploy a build with ARTIFACT first")
    action = Action.REDEPLOY if live is not None and same_content(chosen.entry, live.entry) else Action.ROLLBACK
    return live, chosen.entry.release, action


def dry_run_lines(run: Run) -> list[str]:
    """The release part of the dry-run plan: what each instance would do."""
    if run.release is None:
        return []
    return ["  on each instance:", *(f"    {step}" for step in install_steps(run.release.plan))]


def record_release(run: Run, outcome: DeployOutcome, stopped: bool = False) -> None:
    """Append how the deploy ended to the ledger, and copy it to the archive (a failure to write warns:
    the verdict stays the deploy's). ``stopped``: the rollout ended on a stop (DeployStopped)."""
    release = run.release
    if release is None or not outcome.deploy.commands:
        return
    fleet = fleet_at_end(run.targeted, outcome, release.plan.release_id, release.live_before)
    status = entry_status(outcome, stopped, fleet, release.plan.release_id, release.live_before)
    build = run.settings.build
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
    except ValueError as error:  # a bug of ours: the verdict stays the deploy's
        log.warning(f"The release ledger was not updated: the entry could not be made ({error})")
        return
    value = entry.to_json()
    try:
        version = record(run.clients.ssm, release.ledger, value)
    except (PipeError, BotoCoreError) as error:
        log.warning(f"The release ledger was not updated: {error}")
        return
    where = "" if status is EntryStatus.SUCCEEDED else f": {entry.fleet.describe()}"
    log.info(f"Release ledger {release.ledger}: version {version} records {release.headline} as {status.value}{where}")
    archive = release.history.archive
    if archive is not None:
        archive.keep([*release.history.versions, Version(version, value)], newest=version)


def done_message(release: Release | None, message: str) -> str:
    """The verdict line of a deploy that succeeded, naming the action in release mode."""
    return f"{release.headline}: {message}" if release is not None else message


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
    log.info(f"{release.headline} in {plan.app_dir}/releases; live before: {before}; ledger {release.ledger}")
    if live_commit and commit and live_commit != commit:
        log.info(f"Commits from the live release to this one: {live_commit[:12]}..{commit[:12]}")
