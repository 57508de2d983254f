"""Instances TARGETS match that are stopped when the deploy is planned (attack 60): refused, unless SKIP_STOPPED
leaves them out, each named; the command then goes to the running ones by id."""

from __future__ import annotations

import logging

import pytest

from pipe.errors import NothingSent
from pipe.model import DeployOutcome, Target
from pipe.plan.batches import plan_batches
from pipe.plan.stopped import judge_stopped
from pipe.release.fleet_state import SKIPPED_STOPPED, instance_outcomes
from unit.unit_support import INSTANCE_A, INSTANCE_B, make_settings

TARGETS = [Target("tag:Service", ("api",))]


def test_a_stopped_instance_targets_match_refuses_the_deploy_naming_it_and_the_ways_out() -> None:
    settings = make_settings(instance_ids=[], targets=TARGETS)

    with pytest.raises(NothingSent) as refused:
        judge_stopped(settings, {INSTANCE_B: "stopped"}, None)

    message = str(refused.value)
    assert message.startswith(
        f"TARGETS: nothing was sent. {INSTANCE_B} is stopped, matched by TARGETS: it gets no deploy; started again "
        "it runs what it ran before."
    )
    assert f"aws ec2 start-instances --instance-ids {INSTANCE_B}" in message and "SKIP_STOPPED: 'true'" in message


def test_skip_stopped_leaves_them_out_each_named(caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(instance_ids=[], targets=TARGETS, skip_stopped=True)

    with caplog.at_level(logging.WARNING):
        skipped = judge_stopped(settings, {INSTANCE_B: "pending"}, None)

    assert list(skipped) == [INSTANCE_B] and skipped[INSTANCE_B].startswith(f"{INSTANCE_B} is pending")
    assert f"{INSTANCE_B} is pending, matched by TARGETS" in caplog.text
    assert judge_stopped(make_settings(instance_ids=[], targets=TARGETS), {}, None) == {}


def test_with_stopped_instances_left_out_one_command_goes_to_the_running_ones_by_id() -> None:
    settings = make_settings(instance_ids=[], targets=TARGETS, skip_stopped=True)

    (by_targets,) = plan_batches(settings, [INSTANCE_A])
    (by_id,) = plan_batches(settings, [INSTANCE_A], by_id=True)

    assert by_targets.targets == tuple(TARGETS) and not by_targets.instance_ids
    assert by_id.instance_ids == (INSTANCE_A,) and not by_id.targets


def test_the_ledger_names_an_instance_left_out_as_skipped_stopped() -> None:
    outcome = DeployOutcome()
    outcome.skipped[INSTANCE_B] = "stopped"

    assert instance_outcomes([INSTANCE_A], outcome) == {INSTANCE_B: SKIPPED_STOPPED, INSTANCE_A: "not started"}
