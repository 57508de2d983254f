"""Which release each targeted instance runs when a release deploy ends, and what the ledger may
therefore call it: live (``succeeded``) only when the deploy succeeded and every targeted instance
runs the release.

``DeployOutcome.fleet`` holds what the instances themselves said (their script's report, or a read
of ``APP_DIR/current``). Where it is empty, the fleet is derived from the commands' outcomes: an
instance whose deploy succeeded and was not switched back runs the release; one the deploy never
reached, or whose release script says it did not switch or switched back, runs the release live
before; any other cannot tell (UNKNOWN_RELEASE).
"""

from __future__ import annotations

from collections.abc import Mapping

from pipe.model import UNKNOWN_RELEASE, DeployOutcome, Invocation, PhaseStatus, Status
from pipe.release.ledger import EntryStatus
from pipe.release.remote import ReleaseExit

# Release script exits after which ``current`` still (or again) points to the release live before
NOT_SWITCHED = frozenset(
    {
        ReleaseExit.APP_DIR_UNUSABLE,
        ReleaseExit.ARTIFACT_DOWNLOAD_FAILED,
        ReleaseExit.CHECKSUM_MISMATCH,
        ReleaseExit.UNPACK_FAILED,
        ReleaseExit.RELEASE_COMMANDS_FAILED,
        ReleaseExit.RUN_AS_USER_MISSING,
    }
)
SWITCHED_BACK = frozenset({ReleaseExit.ACTIVATION_FAILED_ROLLED_BACK, ReleaseExit.STALE_PROCESS})
SKIPPED_STOPPED = "skipped, stopped"  # the ledger's outcome of an instance SKIP_STOPPED left out (stopped)
STAYED_ON_RELEASE = frozenset({ReleaseExit.ACTIVATION_FAILED_NO_ROLLBACK})  # nothing to go back to


def fleet_at_end(targeted: list[str] | None, outcome: DeployOutcome, release: str, live_before: str) -> dict[str, str]:
    """{instance id: the release it runs} for every targeted instance (``None``: SSM resolved the
    TARGETS, so the instances are those the deploy reached) still in the fleet: one that left it during
    the deploy (``outcome.departed``) runs nothing of it."""
    deployed = outcome.deploy.invocations
    instances = list(targeted) if targeted is not None else sorted(set(deployed) | set(outcome.fleet))
    instances = [i for i in instances if i not in outcome.departed]
    untouched = live_before or UNKNOWN_RELEASE
    if outcome.fleet:
        return {i: outcome.fleet.get(i, untouched) for i in instances}
    rolled_back = outcome.rollback.invocations
    return {i: _derived(deployed.get(i), rolled_back.get(i), release, untouched) for i in instances}


def failed_back(outcome: DeployOutcome) -> dict[str, str]:
    """{instance id: how}: the instances whose way back failed, their deploy script's own switch back (exit 86:
    ACTIVATE_COMMANDS failed in the release it went back to too, or a process still runs the failed one) unless
    the rollback then succeeded there, or the rollback where it may have run. One whose ``current`` points back
    at the release it went back to does not run it as it should."""
    rollbacks = outcome.rollback.invocations
    found = {
        i: f"its switch back {outcome.deploy.invocations[i].describe()}"
        for i in _own_switch_back_failed(outcome)
        if not (i in rollbacks and rollbacks[i].succeeded)
    }
    return found | {
        i: f"its rollback {inv.describe()}" for i, inv in rollbacks.items() if inv.may_have_run and not inv.succeeded
    }


def _own_switch_back_failed(outcome: DeployOutcome) -> list[str]:
    """The instances whose release script switched back and failed there (exit 86)."""
    deployed = outcome.deploy.invocations.items()
    return [i for i, inv in deployed if inv.response_code == ReleaseExit.ACTIVATION_FAILED_ROLLBACK_FAILED]


def _derived(deploy: Invocation | None, rollback: Invocation | None, release: str, untouched: str) -> str:
    if deploy is not None and deploy.lost:  # given up while it ran: its agent went away
        return UNKNOWN_RELEASE
    if deploy is None or not deploy.received_deploy:
        return untouched
    if deploy.succeeded:
        if rollback is None:
            return release
        return untouched if rollback.succeeded else UNKNOWN_RELEASE
    code = deploy.response_code
    if code in NOT_SWITCHED or (code in SWITCHED_BACK and untouched != UNKNOWN_RELEASE):
        return untouched
    if code in STAYED_ON_RELEASE:
        return release
    return UNKNOWN_RELEASE


def instance_outcomes(instances: list[str], outcome: DeployOutcome) -> dict[str, str]:
    """{instance id: what happened there}: succeeded, failed, unhealthy, rolled back, rollback
    failed, or not started (the rollout stopped before its batch); and each instance SKIP_STOPPED left out
    (stopped when the deploy was planned), skipped."""
    deployed, rolled_back = outcome.deploy.invocations, outcome.rollback.invocations
    found = {instance_id: SKIPPED_STOPPED for instance_id in outcome.skipped if instance_id not in instances}
    for instance_id in instances:
        deploy = deployed.get(instance_id)
        rollback = rolled_back.get(instance_id)
        if deploy is None or deploy.skipped:
            found[instance_id] = "not started"
        elif not deploy.succeeded:
            found[instance_id] = "failed"
        elif rollback is not None:
            found[instance_id] = "rolled back" if rollback.succeeded else "rollback failed"
        elif outcome.health_check.status is PhaseStatus.FAILED:
            found[instance_id] = "unhealthy"
        else:
            found[instance_id] = "succeeded"
    return found


def entry_status(
    outcome: DeployOutcome, stopped: bool, fleet: Mapping[str, str], release: str, live_before: str
) -> EntryStatus:
    """Live only when the deploy succeeded and every targeted instance runs the release."""
    runs = set(fleet.values())
    if outcome.status is Status.SUCCEEDED and fleet and runs == {release}:
        return EntryStatus.SUCCEEDED
    if stopped or outcome.interrupted:
        return EntryStatus.STOPPED
    if live_before and runs == {live_before} and live_before != release:
        return EntryStatus.ROLLED_BACK if _rolled_back_cleanly(outcome) else EntryStatus.FAILED
    if len(runs) > 1:
        return EntryStatus.PARTIAL
    return EntryStatus.FAILED


def _rolled_back_cleanly(outcome: DeployOutcome) -> bool:
    """Some instance went to the release and back, and every way back succeeded: no rollback failed
    (a switch back that left a process of the failed release running fails with 86 too)."""
    rollbacks_failed = any(not inv.succeeded for inv in outcome.rollback.invocations.values())
    return _switched_back(outcome) and not rollbacks_failed and not _own_switch_back_failed(outcome)


def _switched_back(outcome: DeployOutcome) -> bool:
    """Some instance went to the release and back: the rollback ran, or its release script switched
    back by itself."""
    return bool(outcome.rollback.invocations) or any(
        inv.response_code in SWITCHED_BACK for inv in outcome.deploy.invocations.values()
    )
