"""Staging: in a rolling release deploy, before the first batch is drained, every targeted instance
prepares the release (download, verify, unpack, SHARED_PATHS, COMMANDS, a checksum manifest) while
it still serves the live one, all at once within MAX_CONCURRENCY. Each batch then only drains,
checks the staged copy against its manifest, switches, activates, passes the health check and is
registered again: the install is no longer time out of service.

A release that fails to stage anywhere stops the deploy here: nothing was drained or switched. The
copies staged on the other instances are left in ``APP_DIR/releases``: a deploy of the same release
uses them again (after checking them), and KEEP_RELEASES prunes them otherwise."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from pipe.apply.phases import read_current, run_phase
from pipe.apply.run import Run
from pipe.config.release import PREVIOUS
from pipe.errors import DeployFailed
from pipe.model import NO_RELEASE, UNKNOWN_RELEASE, Invocation, PhaseStatus, Target, command_ids
from pipe.plan.commands import stage_spec
from pipe.release.ledger import Action
from pipe.release.remote import current_report
from pipe.report.durations import format_duration
from pipe.report.instances import listed, named, release_meanings

log = logging.getLogger("ssm-deploy")


def stage_release(run: Run) -> DeployFailed | None:
    """Stage the plan's release on every targeted instance; the failure, if any (nothing drained or
    switched then). A stop raises DeployStopped (the phase marked interrupted)."""
    release = run.release
    assert release is not None  # plan/commands.py stages(): release mode only
    spec, record = stage_spec(run.plan), run.outcome.stage
    steps = "download, verify, unpack" + (", COMMANDS" if release.plan.commands else "")
    log.info(
        f"---- Staging release {release.plan.release_id} on {len(spec.instance_ids)} instance(s) while they serve "
        f"({steps}), {spec.max_concurrency} at a time; nothing is drained or switched ----"
    )
    started = time.monotonic()
    try:
        failed = run_phase(run, spec, record)
    finally:
        run.outcome.stage_seconds = round(time.monotonic() - started, 1)
    for instance_id, invocation in record.invocations.items():
        how = "staged" if invocation.succeeded else invocation.describe()
        log.info(f"{instance_id}: {how} in {format_duration(invocation.elapsed)}")
    before = release.live_before or "what it ran before"
    if failed:
        record.status = PhaseStatus.FAILED
        run.outcome.fleet.update(_reported_fleet(record.invocations, release.live_before))
        return DeployFailed(
            f"Staging release {release.plan.release_id} failed on {len(failed)} of {len(spec.instance_ids)} "
            f"instance(s): {listed(failed)}.{release_meanings(failed)} Nothing was drained or switched: every "
            f"instance still serves {before}. The copies staged elsewhere stay in {release.plan.app_dir}/releases, "
            f"used again by a deploy of this release and pruned by KEEP_RELEASES otherwise. "
            f"Command id: {command_ids(record.commands)}."
        )
    record.status = PhaseStatus.SUCCEEDED
    elsewhere = {
        instance_id: reported
        for instance_id, invocation in record.invocations.items()
        if (reported := current_report(invocation.stdout)) is not None and reported != release.live_before
    }
    serving = f"every one still serves {before}" if not elsewhere else "nothing was switched"
    log.info(
        f"Staged release {release.plan.release_id} on {len(spec.instance_ids)} instance(s) in "
        f"{run.outcome.stage_seconds:.0f} s; {serving}"
    )
    going_past = _past_the_live_release(run, elsewhere)
    if going_past is not None:
        run.outcome.fleet.update(_reported_fleet(record.invocations, release.live_before) | elsewhere)
        return going_past
    if elsewhere and release.live_before:
        log.warning(
            f"{'; '.join(f'{i} runs {r}' for i, r in sorted(elsewhere.items()))}, not the live release "
            f"{release.live_before}: a deploy the release ledger does not record (a killed build?) switched "
            f"{'it' if len(elsewhere) == 1 else 'them'}"
        )
    return None


def check_before_going_back(run: Run, instance_ids: list[str], targets: tuple[Target, ...] = ()) -> DeployFailed | None:
    """RELEASE: previous without staging (which would read it): read each instance's ``current`` first, so
    that a release a killed build left on some instance, which the ledger never recorded, is found before
    anything is drained or switched, as staging finds it. An instance on no release is no killed build's;
    one that did not answer (a release script still holds its lock past the read's wait: the killed build's
    own command, still running) may be: refused too, where staging would have waited for it. With TARGETS
    that could not be resolved before sending (no ec2:DescribeInstances), the read goes to the TARGETS and
    SSM resolves them, as it does for the deploy."""
    release, chosen = run.release, run.settings.release
    if release is None or chosen is None or chosen.release != PREVIOUS or release.action is not Action.ROLLBACK:
        return None
    if not instance_ids and not targets:
        return None
    app_dir = release.plan.app_dir
    on = f"{len(instance_ids)} instance(s)" if instance_ids else "the TARGETS"
    log.info(
        f"---- Reading {app_dir}/current on {on} before going back to "
        f"{release.plan.release_id}: a killed build may have switched some to a release the ledger does not "
        "record ----"
    )
    found = read_current(run, app_dir, instance_ids, targets)
    elsewhere = {i: r for i, r in found.items() if r not in (release.live_before, UNKNOWN_RELEASE, NO_RELEASE)}
    refused = _past_the_live_release(run, elsewhere) or _unread(
        run, [i for i, r in found.items() if r == UNKNOWN_RELEASE]
    )
    if refused is not None:
        run.outcome.fleet.update(found)
    return refused


def _past_the_live_release(run: Run, elsewhere: dict[str, str]) -> DeployFailed | None:
    """RELEASE: previous chose the release before the live one, but instances run a release the ledger never
    recorded (a killed build switched them): going on would take every instance past what served before that
    build. Refused here, before anything is drained or switched, with the id that brings back the live one."""
    release = run.release
    assert release is not None
    chosen = run.settings.release
    target = release.plan.release_id
    unrecorded = {i: r for i, r in elsewhere.items() if r != target}
    if not unrecorded or chosen is None or chosen.release != PREVIOUS or release.action is not Action.ROLLBACK:
        return None
    return DeployFailed(
        f"RELEASE: previous chose {target}, the release live before {release.live_before}, but "
        f"{'; '.join(f'{i} runs {r}' for i, r in sorted(unrecorded.items()))}: a deploy the release ledger does not "
        f"record (a killed build?) switched {'it' if len(unrecorded) == 1 else 'them'}, so {release.live_before} is "
        f"what served before it. Nothing was drained or switched. To bring every instance back to "
        f"{release.live_before}, run the step with RELEASE: '{release.live_before}'; RELEASE: previous then goes "
        f"to {target}."
    )


def _unread(run: Run, unread: list[str]) -> DeployFailed | None:
    """RELEASE: previous when some instances did not say where ``current`` points: going on could take them
    past the release a killed build left them on (its command may still run there). Refused, naming them."""
    release = run.release
    if not unread or release is None:
        return None
    return DeployFailed(
        f"RELEASE: previous chose {release.plan.release_id}, the release live before {release.live_before}, but "
        f"{named(sorted(unread))} did not say which release {release.plan.app_dir}/current points to (a release "
        "script still held the instance's lock, or the read failed: see above), so a deploy the release ledger "
        "does not record (a killed build whose command still runs?) may have switched it. Nothing was drained "
        f"or switched. Run the step again once that command ended (ACTION: status shows what each instance "
        f"runs), or name the release: RELEASE: '{release.live_before}' brings every instance back to the live "
        f"release, RELEASE: '{release.plan.release_id}' goes to the one before it."
    )


def _reported_fleet(invocations: Mapping[str, Invocation], live_before: str) -> dict[str, str]:
    return {i: current_report(invocation.stdout) or live_before for i, invocation in invocations.items()}
