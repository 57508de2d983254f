"""The rollout's pure arithmetic and the rules between its variables."""

from __future__ import annotations

import pytest

from pipe.config.rollout import (
    TargetGroupChoice,
    batch_sizes,
    count_of,
    healthy_floor,
    parse_alarm_names,
    parse_target_groups,
)
from unit.config.test_unit_settings import load, problems_of

ARN = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-api/0123456789abcdef"


@pytest.mark.parametrize(
    ("total", "batch_size", "canary", "one_at_a_time", "expected"),
    [
        (8, None, None, False, [8]),  # as before: one batch, SSM paces it
        (8, None, None, True, [1] * 8),  # behind a load balancer: one at a time by default
        (8, "25%", None, True, [2, 2, 2, 2]),
        (6, "25%", None, True, [2, 2, 2]),  # 25% of 6 rounds up to 2
        (7, "3", None, False, [3, 3, 1]),
        (8, "25%", 1, True, [1, 2, 2, 2, 1]),  # the canary first, then 25% of the whole fleet
        (3, None, 5, False, [3]),  # a canary as big as the fleet is the only batch
        (10, "100%", None, True, [10]),
        (0, "25%", 1, True, []),
    ],
)
def test_batches_are_cut_as_documented(
    total: int, batch_size: str | None, canary: int | None, one_at_a_time: bool, expected: list[int]
) -> None:
    sizes = batch_sizes(total, batch_size, canary, one_at_a_time)
    assert sizes == expected
    assert sum(sizes) == total


def test_a_rate_is_a_count_or_a_percentage_rounded_up() -> None:
    assert count_of("10", 4) == 4
    assert count_of("75%", 4) == 3
    assert count_of("75%", 5) == 4
    assert count_of("0", 5) == 0
    assert healthy_floor("75%", 8) == 6
    assert healthy_floor("1", 0) == 0


def test_target_groups_are_auto_or_names_and_arns() -> None:
    assert parse_target_groups(["AUTO"]) == TargetGroupChoice(auto=True)
    assert parse_target_groups(["web-a", ARN, "web-a"]) == TargetGroupChoice(refs=("web-a", ARN))
    with pytest.raises(ValueError, match="stands alone"):
        parse_target_groups(["auto", "web-a"])
    with pytest.raises(ValueError, match="not a target group name"):
        parse_target_groups(["web_a"])
    with pytest.raises(ValueError, match="at most 20"):
        parse_target_groups([f"g{i}" for i in range(21)])


def test_alarm_names_keep_their_spaces_in_list_form() -> None:
    assert parse_alarm_names(["web 5xx", "p99", "p99"]) == ("web 5xx", "p99")
    with pytest.raises(ValueError, match="control character"):
        parse_alarm_names(["bad\tname"])


def test_settings_carry_the_rollout() -> None:
    settings = load({"TARGET_GROUPS": "web-{environment}", "BATCH_SIZE": "25%", "CANARY": "1", "ALARMS": "a b"})
    rollout = settings.rollout
    assert rollout.target_groups == TargetGroupChoice(refs=("web-production",))
    assert (rollout.batch_size, rollout.canary, rollout.alarms, rollout.min_healthy) == ("25%", 1, ("a", "b"), "1")
    assert rollout.lock and rollout.pipe_driven
    assert not load({}).rollout.pipe_driven
    assert not load({}).rollout.lock
    assert load({"LOCK": "true"}).rollout.lock
    assert not load({"TARGET_GROUPS": "auto", "LOCK": "false"}).rollout.lock


RELEASE = {"ARTIFACT": "app.tgz", "ARTIFACT_BUCKET": "acme-artifacts", "APP_DIR": "/srv/app"}


@pytest.mark.parametrize(
    ("variables", "locked"),
    [
        ({}, False),  # a command deploy alone: nothing of the fleet's record to keep right
        (RELEASE, True),  # the ledger and the rollback's "live before" assume one deploy at a time
        ({"RELEASE": "previous", "APP_DIR": "/srv/app", "ARTIFACT_BUCKET": "acme-artifacts"}, True),
        ({"AUTO_SCALING_GROUPS": "web"}, True),  # what one deploy suspends, the other counts
        ({"TARGET_GROUPS": "auto"}, True),
        ({**RELEASE, "LOCK": "false"}, False),  # said, so allowed
        ({"LOCK": "true"}, True),
    ],
)
def test_lock_auto_is_on_in_release_mode_and_with_a_load_balancer_or_groups(
    variables: dict[str, str], locked: bool
) -> None:
    assert load(variables).rollout.lock is locked


@pytest.mark.parametrize("name", ["MIN_HEALTHY", "DRAIN_TIMEOUT", "HEALTHY_TIMEOUT"])
def test_load_balancer_bounds_without_target_groups_are_accepted_and_listed_as_ignored(name: str) -> None:
    # one step definition for every environment: prod's bounds do not break dev, which has no load balancer
    assert load({name: "50"}).rollout.ignored == (name,)
    assert load({name: "50", "TARGET_GROUPS": "web"}).rollout.ignored == ()


@pytest.mark.parametrize("name", ["TARGET_GROUPS", "BATCH_SIZE", "BAKE_TIME", "ALARMS"])
def test_a_rollout_the_pipe_drives_needs_wait(name: str) -> None:
    value = {"TARGET_GROUPS": "web", "BATCH_SIZE": "2", "BAKE_TIME": "30", "ALARMS": "web-5xx"}[name]
    problems = problems_of({name: value, "WAIT": "false"})
    assert any(name in reason and "batch by batch" in reason for reason in problems["WAIT"])


def test_service_names_the_lock_too() -> None:
    assert load({"SERVICE": "web-api", "LOCK": "true"}).service == "web-api"
    problems = problems_of({"SERVICE": "web-api"})
    assert any("deploy lock" in reason for reason in problems["SERVICE"])


def test_lock_takes_auto_true_or_false() -> None:
    problems = problems_of({"LOCK": "maybe"})
    assert any("auto, true or false" in reason for reason in problems["LOCK"])
