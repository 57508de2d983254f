"""One step definition for dev, stg and prod: the rollout variables of prod (TARGET_GROUPS: auto,
MIN_HEALTHY, DRAIN_TIMEOUT) also deploy an environment without a load balancer, saying so in one
line; and a fleet whose target group serves nothing yet (a first deploy) is told exactly that, with
the one-off fix."""

from __future__ import annotations

import uuid

from standin import StandIn
from standin.instance_app import RESTART
from support import run_pipe

ELB_TIME_SCALE = 0.05
SHARED_STEP = {"TARGET_GROUPS": "auto", "MIN_HEALTHY": "1", "DRAIN_TIMEOUT": "120"}  # prod's, in a YAML anchor


def test_auto_on_instances_in_no_target_group_deploys_them_without_a_load_balancer(standin: StandIn) -> None:
    ids = standin.launch(3)
    before = len(standin.sent_commands())
    env = standin.pipe_env(
        INSTANCE_IDS=" ".join(ids), SERVICE=f"dev{uuid.uuid4().hex[:8]}", COMMANDS="echo deployed", **SHARED_STEP
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert (
        "TARGET_GROUPS 'auto': none of the 3 instance(s) is registered in an ELBv2 target group, so they are "
        "deployed without a load balancer"
    ) in run.output
    assert all(f"{i} | deployed" in run.output for i in ids)
    assert "draining" not in run.output
    assert len(standin.sent_commands()) - before == 1  # one command for the fleet, paced by MAX_CONCURRENCY


def test_load_balancer_bounds_without_target_groups_are_ignored_with_one_line(standin: StandIn) -> None:
    ids = standin.launch(2)
    env = standin.pipe_env(INSTANCE_IDS=" ".join(ids), MIN_HEALTHY="50%", HEALTHY_TIMEOUT="60", COMMANDS="true")
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert "MIN_HEALTHY, HEALTHY_TIMEOUT: only used behind a load balancer (TARGET_GROUPS), ignored here" in run.output
    assert run.output.count("ignored here") == 1


def test_a_first_deploy_behind_a_group_that_serves_nothing_yet_is_told_so_and_min_healthy_0_deploys_it(
    standin: StandIn,
) -> None:
    standin.elb_time_scale = ELB_TIME_SCALE
    ids = standin.launch(2)  # the app is installed, but nothing runs yet: no target is healthy
    for instance_id in ids:
        standin.app_up(instance_id)
        standin.app_up(instance_id, up=False)
    name = f"web-{uuid.uuid4().hex[:8]}"
    arn = standin.create_target_group(name, ids, deregistration_delay=20)
    standin.wait_target_states(arn, ids, "unhealthy", timeout=30)
    env = standin.pipe_env(INSTANCE_IDS=" ".join(ids), SERVICE=name, COMMANDS=RESTART, **SHARED_STEP)
    before = len(standin.sent_commands())

    refused = run_pipe(env)

    assert refused.returncode == 1, refused.output
    assert f"MIN_HEALTHY: nothing was sent. No target of {name} is healthy" in refused.output
    assert "nothing serves through it yet, as before a service's first deploy" in refused.output
    assert "deploy this once with MIN_HEALTHY: '0'" in refused.output
    assert "accepts downtime" not in refused.output
    assert len(standin.sent_commands()) == before

    first = run_pipe({**env, "MIN_HEALTHY": "0"}, timeout=300)

    assert first.returncode == 0, first.output
    assert set(standin.target_states(arn).values()) == {"healthy"}
