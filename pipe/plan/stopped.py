"""Instances TARGETS match that are stopped when the deploy is planned (stopped, stopping, pending).

SSM targets them too: "the system locates and attempts to run the command on all managed nodes that match
the specified tags" (Run commands at scale), and a stopped node's invocation is ``Delayed`` ("the node was
stopped ... The system will try to send the command again", GetCommandInvocation) until it starts or the
delivery timeout passes. Such an instance runs nothing now, and started again it serves the release it had. So
the deploy is refused before anything is sent, unless SKIP_STOPPED leaves them out: then each is named (the
plan, the last line, the result file's ``skipped``, the release ledger's ``instances``), and the command goes to
the running instances by id, never to a stopped one."""

from __future__ import annotations

import logging
from itertools import islice

from pipe.config.settings import DeploySettings
from pipe.errors import NothingSent
from pipe.release.stage import Release

log = logging.getLogger("ssm-deploy")
LEDGER_LOOKBACK = 20  # newest ledger versions searched for the release a stopped instance ran
SHOWN = 10  # stopped instances named in a refusal


def judge_stopped(settings: DeploySettings, stopped: dict[str, str], release: Release | None) -> dict[str, str]:
    """{instance id: what it is} of the stopped instances the deploy leaves out (SKIP_STOPPED), each named in a
    warning; NothingSent naming them when it may not leave them out; {} when there is none."""
    if not stopped:
        return {}
    notes = {i: note(i, state, release) for i, state in sorted(stopped.items())}
    if not settings.skip_stopped:
        listed = "; ".join(list(notes.values())[:SHOWN]) + (" ..." if len(notes) > SHOWN else "")
        ids = " ".join(list(notes)[:SHOWN])
        raise NothingSent(
            "TARGETS",
            f"{listed}. SSM would hold the command for it (Delayed) until it starts or the delivery timeout passes",
            f"start it (aws ec2 start-instances --instance-ids {ids} --region {settings.region}) and deploy once its "
            "SSM Agent is online, or take it out of TARGETS (its tags), or set SKIP_STOPPED: 'true' to deploy to the "
            "running instances only (each one left out is named in the result file and the release ledger)",
        )
    for text in notes.values():
        log.warning(f"{text} (SKIP_STOPPED)")
    return notes


def note(instance_id: str, state: str, release: Release | None) -> str:
    """``<id> is stopped, matched by TARGETS: it gets no deploy; started again it runs <release>``."""
    had = _had(instance_id, release)
    return f"{instance_id} is {state}, matched by TARGETS: it gets no deploy; started again it runs {had}"


def _had(instance_id: str, release: Release | None) -> str:
    """The release the ledger last recorded on the instance (or the live one), in words."""
    if release is None:
        return "what it ran before"
    for recorded in islice(release.history.newest_first(), LEDGER_LOOKBACK):
        for name, ids in recorded.entry.fleet.ids.items():
            if instance_id in ids:
                return f"{name} (the release ledger's version {recorded.version})"
    if release.live_before:
        return f"{release.live_before} (the live release), unless it ran another when it stopped"
    return "what it ran before (the release ledger names no release on it)"
