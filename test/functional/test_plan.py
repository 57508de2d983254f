"""The plan step in process (``build_plan``): what it finds, that it only reads, and every refusal it
makes before anything is sent, uploaded or changed. Fake EC2, SSM, CloudWatch and Resource Groups
(``fake_fleet.py``) and a fake ELBv2 (``fake_elb.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from unit.unit_support import INSTANCE_A, INSTANCE_B, INSTANCE_C, REGION

from functional.fake_elb import FakeELB, FakeGroup
from functional.plans import API_KEY, DB_PASSWORD, IDS, LEDGER, PROD, SHIPPED, World, shipped
from pipe.config.rollout import RolloutSettings, TargetGroupChoice
from pipe.errors import PipeError
from pipe.limits import MAX_SCRIPT_BYTES
from pipe.model import SecretRef, Target
from pipe.plan.bounds import deploy_bounds
from pipe.release.ledger import Action
from pipe.runtime.redaction import MASK


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


# --- what the plan holds ------------------------------------------------------------------------------


def test_the_plan_holds_what_the_deploy_found_and_the_settings_as_validated(world: World) -> None:
    world.change(parameters_path="/app/env", rollout=RolloutSettings(batch_size="2"))
    validated = world.settings

    plan = world.plan()

    assert plan.settings is validated  # never replaced: PARAMETERS_PATH's secrets are the plan's
    assert validated.secrets == [SecretRef("DB_PASSWORD", "/app/db")]
    assert plan.secrets == (SecretRef("DB_PASSWORD", "/app/db"), SecretRef("API_KEY", "/app/env/api_key"))
    assert plan.instances == tuple(IDS)
    assert dict(plan.names) == {i: f"web-{n}" for n, i in enumerate(IDS, 1)}
    assert [batch.instance_ids for batch in plan.batches] == [(INSTANCE_A, INSTANCE_B), (INSTANCE_C,)]
    assert plan.bounds == deploy_bounds(validated)
    assert plan.release is None
    assert world.redactor.redact(f"{DB_PASSWORD} {API_KEY}") == f"{MASK} {MASK}"  # masked, never kept in the plan
    assert world.fleet.calls and not world.fleet.changes()  # it read, and only read


def test_targets_become_the_instances_they_match_now(world: World) -> None:
    world.fleet.instances[INSTANCE_C].tags["Env"] = "staging"
    world.change(instance_ids=[], targets=[PROD])

    plan = world.plan()

    assert plan.instances == (INSTANCE_A, INSTANCE_B)
    assert [batch.targets for batch in plan.batches] == [(PROD,)]  # SSM still resolves them


def test_a_build_is_chosen_but_not_uploaded(world: World) -> None:
    world.release_mode()

    plan = world.plan()

    assert plan.release is not None
    assert plan.release.action is Action.DEPLOY
    assert plan.release.live_before == ""
    assert plan.release.artifact is not None and plan.release.artifact.key.startswith("app/")
    assert plan.release.plan.env_names == ("DB_PASSWORD",)
    assert not world.fleet.changes()


def test_a_release_from_the_ledger_names_the_one_it_replaces(world: World) -> None:
    shipped(world.fleet)
    world.release_mode(artifact=None, release=SHIPPED)

    plan = world.plan()

    assert plan.release is not None
    assert (plan.release.action, plan.release.live_before, plan.release.artifact) == (Action.REDEPLOY, SHIPPED, None)


def test_a_build_replaces_the_release_the_ledger_says_is_live(world: World) -> None:
    shipped(world.fleet)
    world.release_mode()

    plan = world.plan()

    assert plan.release is not None
    assert (plan.release.action, plan.release.live_before) == (Action.DEPLOY, SHIPPED)


# --- every refusal, before anything is sent or changed ----------------------------------------------


def steps(*arrange: Callable[[World], object]) -> Callable[[World], None]:
    def arrange_all(world: World) -> None:
        for step in arrange:
            step(world)

    return arrange_all


def deny(operation: str) -> Callable[[World], None]:
    return lambda world: world.fleet.denied.add(operation)


def _alarm(world: World, state: str) -> None:
    world.fleet.alarms["api-5xx"] = state
    world.change(rollout=RolloutSettings(alarms=("api-5xx",)))


def _big_release(world: World) -> None:
    world.release_mode(activate_commands="x" * MAX_SCRIPT_BYTES)


def _group_nothing_serves(world: World) -> None:
    world.elb = FakeELB(FakeGroup("web", targets={(i, 3000): "unhealthy" for i in IDS}))
    world.change(rollout=RolloutSettings(target_groups=TargetGroupChoice(refs=("web",))))


def _parameters_path(path: str, **parameters: str) -> Callable[[World], object]:
    def arrange(world: World) -> None:
        world.fleet.parameters.update(parameters)
        world.change(parameters_path=path)

    return arrange


# what makes the plan refuse, how the message starts, and what else it says
REFUSALS: dict[str, tuple[Callable[[World], object], str, *tuple[str, ...]]] = {
    "TARGETS match nothing": (
        lambda w: w.change(instance_ids=[], targets=[Target("tag:Env", ("nowhere",))]),
        "TARGETS: nothing was sent. tag:Env=nowhere match no running instance",
    ),
    "no such resource group": (
        lambda w: w.change(instance_ids=[], targets=[Target("resource-groups:Name", ("gone",))]),
        "TARGETS: nothing was sent. There is no resource group 'gone'",
    ),
    "TARGETS unresolved when the pipe drives the rollout": (
        steps(
            deny("DescribeInstances"),
            lambda w: w.change(
                instance_ids=[], targets=[Target("tag:Env", ("prod",))], rollout=RolloutSettings(canary=1)
            ),
        ),
        "TARGETS: nothing was sent. the pipe rolls out batch by batch here",
    ),
    "an instance SSM does not manage": (
        lambda w: setattr(w.fleet.instances[INSTANCE_B], "ping", None),
        f"INSTANCE_IDS: nothing was sent. Instances not managed by SSM in {REGION}: {INSTANCE_B}",
    ),
    "an agent offline": (
        lambda w: setattr(w.fleet.instances[INSTANCE_C], "ping", "ConnectionLost"),
        f"INSTANCE_IDS: nothing was sent. Instances SSM Agent not online: {INSTANCE_C} (ConnectionLost)",
    ),
    "a role that could not follow what it sends": (
        deny("ListCommandInvocations"),
        "The deploy role: nothing was sent.",
        "could send the command but not follow it (User: deployer",
    ),
    "a SECRETS parameter missing": (
        lambda w: w.fleet.parameters.pop("/app/db"),
        "SECRETS: nothing was sent. Parameter(s) not found: /app/db (for DB_PASSWORD)",
    ),
    "SECRETS not readable": (
        deny("GetParameters"),
        "SECRETS: nothing was sent.",
        "is not allowed ssm:GetParameters on /app/db",
    ),
    "nothing under PARAMETERS_PATH": (
        _parameters_path("/app/empty"),
        "PARAMETERS_PATH: nothing was sent. No parameter under /app/empty",
    ),
    "PARAMETERS_PATH not listable": (
        steps(deny("GetParametersByPath"), lambda w: w.change(parameters_path="/app/env")),
        "PARAMETERS_PATH: nothing was sent.",
        "is not allowed to list them (ssm:GetParametersByPath on /app/env*)",
    ),
    "PARAMETERS_PATH naming what SECRETS names": (
        _parameters_path("/app/other", **{"/app/other/db_password": "x"}),
        "PARAMETERS_PATH: nothing was sent. Names collide: DB_PASSWORD from /app/other/db_password is also set",
    ),
    "PARAMETERS_PATH exporting a reserved name": (
        _parameters_path("/app/hostile", **{"/app/hostile/bash_env": "x"}),
        "PARAMETERS_PATH: nothing was sent. /app/hostile/bash_env would be exported as BASH_ENV, a reserved name",
    ),
    "an alarm that does not exist": (
        lambda w: w.change(rollout=RolloutSettings(alarms=("gone",))),
        "ALARMS: nothing was sent. there is no CloudWatch alarm 'gone'",
    ),
    "an alarm in ALARM": (
        lambda w: _alarm(w, "ALARM"),
        "ALARMS: nothing was sent. api-5xx: ALARM: the deploy does not start while an alarm is in ALARM",
    ),
    "alarms unreadable": (
        steps(deny("DescribeAlarms"), lambda w: _alarm(w, "OK")),
        "ALARMS: nothing was sent. the deploy role may not call DescribeAlarms",
    ),
    "a target group in which nothing serves": (
        _group_nothing_serves,
        "MIN_HEALTHY: nothing was sent. No target of web is healthy",
    ),
    "MIN_HEALTHY above what the group has": (
        lambda w: w.change(rollout=RolloutSettings(target_groups=TargetGroupChoice(refs=("web",)), min_healthy="3")),
        "MIN_HEALTHY: nothing was sent.",
    ),
    "a target group that does not exist": (
        lambda w: w.change(rollout=RolloutSettings(target_groups=TargetGroupChoice(refs=("gone",)))),
        "TARGET_GROUPS: nothing was sent.",
    ),
    "a release the ledger does not know": (
        steps(lambda w: shipped(w.fleet), lambda w: w.release_mode(artifact=None, release="000001-fedcba9")),
        f"RELEASE: nothing was sent. The release ledger {LEDGER} has no release 000001-fedcba9",
    ),
    "previous with nothing live before the live one": (
        steps(lambda w: shipped(w.fleet), lambda w: w.release_mode(artifact=None, release="previous")),
        f"RELEASE: nothing was sent. The release ledger {LEDGER} has no release live before the live one",
    ),
    "previous with nothing live": (
        lambda w: w.release_mode(artifact=None, release="previous"),
        f"RELEASE: nothing was sent. The release ledger {LEDGER} has no live release",
    ),
    "a build gone since validation": (
        lambda w: w.release_mode(artifact="missing.tar.gz"),
        "ARTIFACT: nothing was sent.",
    ),
    "the ledger unreadable": (
        steps(deny("GetParameterHistory"), lambda w: w.release_mode()),
        f"Release ledger {LEDGER}:",
        "ssm:GetParameterHistory",
    ),
    "a release script too big to send": (
        _big_release,
        "COMMANDS: nothing was sent. with ACTIVATE_COMMANDS and the release steps they make a script of",
    ),
    "a deploy grown too big by PARAMETERS_PATH": (
        _parameters_path("/app/many", **{f"/app/many/name_{n}": "x" for n in range(400)}),
        "COMMANDS: nothing was sent. they make a script of",
    ),
    "a health check too big to send": (
        lambda w: w.change(healthcheck_commands="x" * MAX_SCRIPT_BYTES),
        "HEALTHCHECK_COMMANDS: nothing was sent. retried, they make a script of",
    ),
    "a release's health check too big to send": (
        steps(lambda w: w.release_mode(), lambda w: w.change(healthcheck_commands="x" * (MAX_SCRIPT_BYTES - 20_000))),
        "HEALTHCHECK_COMMANDS: nothing was sent. with the release's process check they make a script of",
    ),
    "a rollback too big to send": (
        lambda w: w.change(rollback_commands="x" * MAX_SCRIPT_BYTES),
        "ROLLBACK_COMMANDS: nothing was sent. they make a script of",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_every_refusal_happens_in_the_plan_and_changes_nothing(world: World, case: str) -> None:
    arrange, start, *details = REFUSALS[case]
    arrange(world)

    with pytest.raises(PipeError) as refused:
        world.plan()

    assert str(refused.value).startswith(start)
    assert all(detail in str(refused.value) for detail in details), str(refused.value)
    assert not world.fleet.changes()
    assert not [call for call in world.elb.calls if not call.operation.startswith(("Describe",))]
