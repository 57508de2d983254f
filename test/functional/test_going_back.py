"""ROLLBACK_BATCH_SIZE, in process: the automatic rollback of the batches deployed before a failed one
joins whole batches up to the size asked (``max``: what MIN_HEALTHY leaves at that moment, read from
the target groups), never splits one, and never takes a group below MIN_HEALTHY; a RELEASE deploy
that stages first goes out in those batches, one without staging keeps its own. A fake ELBv2 that
records the fewest healthy targets any deregistration left, and a fake SSM."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import boto3
import pytest
from unit.unit_support import REGION, make_settings

from functional.fake_aws import FakeSSM
from functional.fake_elb import FakeELB, FakeGroup
from functional.plans import SHIPPED, World, applying, planned, shipped
from pipe.apply.rollout import roll_out
from pipe.apply.run import Run
from pipe.aws.clients import Clients
from pipe.config.rollout import RolloutSettings, TargetGroupChoice
from pipe.errors import DeployFailed
from pipe.plan.rollout import prepare_rollout
from pipe.report import plan as words
from pipe.report.result_file import write_result

IDS = [f"i-0{n:016x}" for n in range(1, 9)]  # 8 instances: BATCH_SIZE 25 % is 4 batches of 2
OTHER = "i-0ffffffffffffffff"  # another service's target in the same group


class CountingELB(FakeELB):
    """A fake ELBv2 that remembers the fewest healthy targets of the group right after any
    deregistration: what MIN_HEALTHY must bound."""

    def __init__(self, *groups: FakeGroup) -> None:
        super().__init__(*groups)
        self.fewest_healthy = math.inf

    def deregister_targets(self, TargetGroupArn: str, Targets: list[dict[str, Any]]) -> Any:
        answer = super().deregister_targets(TargetGroupArn=TargetGroupArn, Targets=Targets)
        healthy = sum(1 for state in self.groups[TargetGroupArn].targets.values() if state == "healthy")
        self.fewest_healthy = min(self.fewest_healthy, healthy)
        return answer


def fleet(other: str | None = None) -> CountingELB:
    targets = {(i, 3000): "healthy" for i in IDS}
    if other is not None:
        targets[(OTHER, 3000)] = other
    return CountingELB(FakeGroup("web", targets=targets))


def deploy_failing_in_batch_4(
    tmp_path: Path, elb: CountingELB, min_healthy: str, rollback_batch_size: str | None
) -> tuple[FakeSSM, Run]:
    """A command-mode rollout of 4 batches of 2 behind ``elb`` whose last batch fails its deploy."""
    ssm = FakeSSM(exit_codes=lambda phase, instance: 7 if phase == "deploy" and instance == IDS[6] else 0)
    rollout = RolloutSettings(
        target_groups=TargetGroupChoice(refs=("web",)),
        batch_size="25%",
        min_healthy=min_healthy,
        rollback_batch_size=rollback_batch_size,
    )
    settings = make_settings(
        instance_ids=IDS,
        stream_output=False,
        rollback_commands="./undo.sh",
        result_file=str(tmp_path / "result.json"),
        rollout=rollout,
    )
    clients = Clients(boto3.Session(region_name=REGION), REGION)
    clients.ssm = ssm  # type: ignore[assignment]
    clients.elbv2 = elb  # type: ignore[assignment]
    plan = planned(settings)
    rolled = prepare_rollout(settings, clients, list(plan.batches))
    run = applying(planned(settings, batches=tuple(rolled.batches), traffic=tuple(rolled.traffic)), clients)
    with pytest.raises(DeployFailed) as failed:
        roll_out(run, list(run.plan.batches), run.plan.hook)
    assert "Rollback succeeded on all 8 instance(s)" in str(failed.value)
    return ssm, run


def rollback_batches(ssm: FakeSSM) -> list[list[str]]:
    return [sorted(sent.instance_ids) for sent in ssm.phase("rollback")]


@pytest.mark.parametrize(
    ("min_healthy", "other", "size", "expected"),
    [
        # the deploy's batches (default): the failed batch 4 in its own window, then 3, 2, 1
        ("25%", None, None, [IDS[6:8], IDS[4:6], IDS[2:4], IDS[0:2]]),
        # max with MIN_HEALTHY 25 % (2 of 8): 6 may be out, so batches 3, 2 and 1 go back together
        ("25%", None, "max", [IDS[6:8], IDS[4:6] + IDS[2:4] + IDS[0:2]]),
        # max with MIN_HEALTHY 50 % (4 of 8): 4 may be out, batches 3 and 2, then 1
        ("50%", None, "max", [IDS[6:8], IDS[4:6] + IDS[2:4], IDS[0:2]]),
        # max reads the group at that moment: another service's unhealthy target leaves room for 5 (9
        # registered, MIN_HEALTHY 25 % is 3, 8 healthy), so 4 then 2
        ("25%", "unhealthy", "max", [IDS[6:8], IDS[4:6] + IDS[2:4], IDS[0:2]]),
        # a count: up to 4 instances a batch
        ("25%", None, "4", [IDS[6:8], IDS[4:6] + IDS[2:4], IDS[0:2]]),
        # a percentage of the fleet: 75 % of 8 is 6
        ("25%", None, "75%", [IDS[6:8], IDS[4:6] + IDS[2:4] + IDS[0:2]]),
        # below two batches: whole batches, never split, so as the deploy's
        ("25%", None, "3", [IDS[6:8], IDS[4:6], IDS[2:4], IDS[0:2]]),
    ],
)
def test_the_rollback_joins_whole_batches_up_to_rollback_batch_size_and_min_healthy_holds(
    tmp_path: Path, min_healthy: str, other: str | None, size: str | None, expected: list[list[str]]
) -> None:
    elb = fleet(other)
    registered = len(elb.group("web").targets)
    floor = math.ceil(registered * int(min_healthy.rstrip("%")) / 100)

    ssm, run = deploy_failing_in_batch_4(tmp_path, elb, min_healthy, size)

    assert rollback_batches(ssm) == [sorted(batch) for batch in expected]
    assert elb.fewest_healthy >= floor  # MIN_HEALTHY held through the deploy and every rollback batch
    assert elb.group("web").targets == fleet(other).group("web").targets  # every target back
    write_result(run.settings, run.outcome, env={})
    document = json.loads(Path(run.settings.result_file).read_text())
    assert [batch["outcome"] for batch in document["batches"]] == ["rolled back"] * 4
    # each instance out of service twice (its deploy and its rollback), joined batches included
    assert sorted(document["out_of_service_seconds"]) == sorted(IDS)


def test_the_plan_says_how_the_rollout_goes_back(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.change(
        dry_run=True,
        rollback_commands="./undo.sh",
        rollout=RolloutSettings(target_groups=TargetGroupChoice(refs=("web",)), rollback_batch_size="max"),
    )

    lines = words.staging_lines(world.plan())

    assert lines == [
        "  going back: ROLLBACK_BATCH_SIZE max: a rollback switches the batches deployed before a failed one back "
        "the largest batches MIN_HEALTHY allows (whole batches joined), more instances out of service at once"
    ]


def release_world(tmp_path: Path, **release: Any) -> World:
    """RELEASE: the live release again, behind a group of 3 healthy targets, ROLLBACK_BATCH_SIZE max."""
    world = World(tmp_path)
    shipped(world.fleet)
    world.release_mode(artifact=None, release=SHIPPED, **release)
    world.change(rollout=RolloutSettings(target_groups=TargetGroupChoice(refs=("web",)), rollback_batch_size="max"))
    return world


def test_a_release_deploy_that_stages_first_goes_out_in_the_largest_batches_min_healthy_allows(
    tmp_path: Path,
) -> None:
    plan = release_world(tmp_path).plan()

    assert [len(batch.instance_ids) for batch in plan.batches] == [2, 1]  # 3 healthy, MIN_HEALTHY 1
    assert "             this RELEASE deploy too: the largest batches MIN_HEALTHY allows, each batch only a " in (
        "\n".join(words.staging_lines(plan))
    )


def test_a_release_deploy_without_staging_keeps_the_deploys_batches_and_says_why(tmp_path: Path) -> None:
    plan = release_world(tmp_path, stage_first=False).plan()

    assert [len(batch.instance_ids) for batch in plan.batches] == [1, 1, 1]
    printed = "\n".join(words.staging_lines(plan))
    assert "staging:   off (STAGE_FIRST: 'false')" in printed
    assert "not this RELEASE deploy's batches: without staging (STAGE_FIRST: 'false')" in printed
