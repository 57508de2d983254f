"""Where the release to ship comes from: ``ReleaseSource``, and its two implementations.

- ``BuildSource`` (ARTIFACT): the build in the clone directory, packed when it is a directory; a new
  release, or a redeploy of the live one when the ledger says the same content is live.
- ``LedgerSource`` (RELEASE): a release the ledger knows, by id or ``previous``; a rollback, or a
  redeploy of the live content.

A source only reads: it chooses the release from the ledger's history as read before the deploy.
Uploading a build is left to the deploy itself (``stage.upload_release``): a dry run uploads nothing.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pipe.config.build_context import BuildContext
from pipe.config.release import PREVIOUS, release_id
from pipe.config.settings import ReleaseSettings
from pipe.errors import NothingSent
from pipe.release.artifact import Artifact, prepare_artifact
from pipe.release.ledger import Action, ReleaseInfo
from pipe.release.ledger_archive import Recorded
from pipe.release.ledger_store import History, same_content

log = logging.getLogger("ssm-deploy")


@dataclass(frozen=True)
class Choice:
    """The release a source chose, and what it replaces."""

    info: ReleaseInfo  # the release's own commit, build and artifact (a rollback's are the older release's)
    action: Action
    live: Recorded | None  # the version the ledger says is live, None for the first deploy
    artifact: Artifact | None = None  # a new build to upload; None when the release is in the bucket already


class ReleaseSource(Protocol):
    def choose(self, history: History) -> Choice:
        """The release to ship, given the ledger as read before the deploy; refuses (NothingSent)
        when there is none to choose."""
        ...


@dataclass(frozen=True)
class BuildSource:
    """ARTIFACT: the build in the clone directory."""

    artifact: str  # the path as given, relative to the clone directory
    clone_dir: str
    prefix: str  # ARTIFACT_PREFIX
    build: BuildContext

    def choose(self, history: History) -> Choice:
        workdir = Path(tempfile.mkdtemp(prefix="ssm-deploy-artifact-"))
        artifact = prepare_artifact(self.artifact, self.clone_dir, self.prefix, workdir)
        number, commit = self.build.build_number, self.build.commit
        info = ReleaseInfo(release_id(number, commit), commit, number, artifact.key, artifact.sha256)
        live = history.live()
        if live and live.entry.release.id == info.id and live.entry.release.sha256 != artifact.sha256:
            raise NothingSent(
                "ARTIFACT",
                f"Release {info.id} is live, built from another artifact (SHA-256 {live.entry.release.sha256[:12]}..., "
                f"this one {artifact.sha256[:12]}...): build {number} of commit {commit} was built again with other "
                "bytes, as a Rerun of a step that builds does (Bitbucket keeps the build number), and one release "
                "id cannot name two builds",
                "run the pipeline again (a new build number gives the new build its own release id); to deploy the "
                f"live build again, use RELEASE: {info.id}",
            )
        action = Action.REDEPLOY if live and live.entry.release.sha256 == artifact.sha256 else Action.DEPLOY
        return Choice(info, action, live, artifact)


@dataclass(frozen=True)
class LedgerSource:
    """RELEASE: a release the ledger knows, by id or ``previous``."""

    wanted: str

    def choose(self, history: History) -> Choice:
        if self.wanted == PREVIOUS:
            return _previous(history)
        live = history.live()
        chosen = history.release(self.wanted)
        if chosen is None:
            problem = f"The release ledger {history.name} has no release {self.wanted}"
            raise NothingSent("RELEASE", problem, "deploy a build with ARTIFACT first")
        action = Action.REDEPLOY if live is not None and same_content(chosen.entry, live.entry) else Action.ROLLBACK
        return Choice(chosen.entry.release, action, live)


def release_source(chosen: ReleaseSettings, build: BuildContext, clone_dir: str) -> ReleaseSource:
    """The source the settings name: ARTIFACT or RELEASE (validation allows exactly one)."""
    if chosen.artifact is not None:
        return BuildSource(str(chosen.artifact), clone_dir, chosen.prefix, build)
    return LedgerSource(str(chosen.release))


def _previous(history: History) -> Choice:
    """RELEASE: previous: the release live before the live one, passing over the versions that
    deployed the live release's content again; the live one itself when the last deploy left instances
    on another release."""
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
    if previous.left_off is not None:
        left = previous.left_off
        log.info(
            f"RELEASE: previous is {found.entry.release.id} (ledger version {found.version}), the live release: "
            f"the last deploy (ledger version {left.version}, {left.entry.release.id} {left.entry.status}) left "
            f"{left.entry.fleet.describe()}, so going back brings every instance to the release that served before it"
        )
        return Choice(found.entry.release, Action.REDEPLOY, live)
    log.info(
        f"RELEASE: previous is {found.entry.release.id} (ledger version {found.version}), the release live "
        f"before {live.entry.release.id}"
    )
    return Choice(found.entry.release, Action.ROLLBACK, live)
