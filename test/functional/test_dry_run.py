"""What a dry run prints, made from the plan ``build_plan`` makes (fake fleet and ELBv2): the rollout
said once, the same way from its first line to its batches, and the generated script only with DEBUG."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from functional.plans import World
from pipe.config.rollout import RolloutSettings, TargetGroupChoice
from pipe.plan import DeployPlan
from pipe.plan.commands import deploy_spec, stages
from pipe.report import plan as words


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def dry_run_log(plan: DeployPlan, caplog: pytest.LogCaptureFixture) -> str:
    """What the build log shows of a dry run: the opening lines, the plan and the dry run's block,
    at the level the pipe logs at (DEBUG turns debug lines on)."""
    level = logging.DEBUG if plan.settings.debug else logging.INFO
    script = deploy_spec(plan, plan.batches[0]).script
    caplog.clear()
    with caplog.at_level(level, logger="ssm-deploy"):
        words.announce(plan.settings)
        words.show(plan, script)
        words.dry_run(plan, script, [])
    return "\n".join(record.getMessage() for record in caplog.records if record.levelno >= level)


def test_behind_a_load_balancer_every_line_says_the_batches_the_plan_holds(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.change(dry_run=True, rollout=RolloutSettings(target_groups=TargetGroupChoice(refs=("web",))))
    plan = world.plan()

    printed = dry_run_log(plan, caplog)

    assert [len(batch.instance_ids) for batch in plan.batches] == [1, 1, 1]
    assert "at a time" not in printed  # SSM's MAX_CONCURRENCY (50) does not pace a batch of one
    assert "rollout:   3 batches of 1 instance, one after another\n" in printed
    assert re.search(r"batches:\s+3\b", printed)


def test_with_max_concurrency_alone_the_rollout_line_is_the_one_command_ssm_paces(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.change(dry_run=True, max_concurrency="2", max_errors="1")
    plan = world.plan()

    printed = dry_run_log(plan, caplog)

    assert len(plan.batches) == 1
    assert "rollout:   one command to 3 instances, 2 at a time, stop after 1 error(s)" in printed
    assert "batches:" not in printed


def test_the_generated_script_is_printed_only_with_debug_and_the_commands_always(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.change(dry_run=True)
    quiet = dry_run_log(world.plan(), caplog)
    world.change(debug=True)
    loud = dry_run_log(world.plan(), caplog)

    generated = "--name /app/db"  # the prelude that reads DB_PASSWORD on the instance
    assert generated not in quiet and generated in loud
    assert loud.count(generated) == 1  # once, not in the plan and again in the dry run
    assert "    echo deploying\n    ./deploy.sh" in quiet  # the user's COMMANDS, as given
    assert "DEBUG: 'true'" in quiet  # where the script is
    assert len(quiet.splitlines()) < 30


def test_a_rolling_release_stages_first_and_with_stage_first_off_the_dry_run_says_each_batch_installs(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.release_mode()
    world.change(dry_run=True, rollout=RolloutSettings(target_groups=TargetGroupChoice(refs=("web",))))
    staged = world.plan()
    world.release_mode(stage_first=False)
    unstaged = world.plan()

    with_staging, without = dry_run_log(staged, caplog), dry_run_log(unstaged, caplog)

    assert stages(staged) and not stages(unstaged)  # no staging phase is sent without it
    assert "staging:   first, release" in with_staging
    assert "on each instance, staging (before the first batch):" in with_staging
    assert "staging:   first" not in without and "staging (before the first batch)" not in without
    assert (
        "staging:   off (STAGE_FIRST: 'false'): each batch downloads, verifies, unpacks and runs COMMANDS while it "
        "is out of service"
    ) in without
    assert "  on each instance:\n" in without  # every step, in the batch's window
    # the batch's install does not look for a copy this deploy staged: it installs
    assert "ssm_deploy_staged=1" in deploy_spec(staged, staged.batches[0]).script
    assert "ssm_deploy_staged=1" not in deploy_spec(unstaged, unstaged.batches[0]).script
