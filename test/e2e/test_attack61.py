"""The sixty-first outside attack (issue #17): two deploys draining the same target group at once. The
deploy lock is one per SERVICE and environment, so two services whose instances share one ELBv2 target
group (one group per port behind one ALB, a service moved between two names), or one SERVICE in two
ENVIRONMENTs registered in one group by mistake, deploy side by side. Each checks MIN_HEALTHY against the
group's health as it reads it, then drains its batch: check, then act. Both checks can pass before either
batch leaves (the group then goes below MIN_HEALTHY, to no healthy target at all with one target each), and a
percentage is counted of the targets registered as it reads them, so a batch another deploy already took out
shrinks the floor. Real HTTP requests through the stand-in's HAProxy show what the clients see, and the load
balancer's journal shows how many targets were out at once."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence

from e2e.test_load_balancer import make_fleet, rolling_env
from standin import StandIn
from support import LivePipe, PipeRun, run_pipe, wait_until


def _most_out_at_once(changes: Sequence[tuple[str, Sequence[tuple[str, int]]]]) -> int:
    """From the group's journal of RegisterTargets and DeregisterTargets: the most targets deregistered
    and not yet registered again at any moment (each one out of service then)."""
    out: set[tuple[str, int]] = set()
    most = 0
    for action, keys in changes:
        out = out | set(keys) if action == "deregister" else out - set(keys)
        most = max(most, len(out))
    return most


def test_two_services_whose_checks_pass_together_never_drain_the_shared_group_empty(standin: StandIn) -> None:
    """Two services, one instance each, both registered in one group; MIN_HEALTHY 1. Each deploy alone may
    take its instance out (1 healthy stays). Both are started at once, and the stand-in answers their
    DeregisterTargets together (``meet``: both checks passed before either batch left, as two deploys a
    moment apart do on AWS). Before the fix both drained: no healthy target, and HAProxy answered the
    clients 503 while both restarted. Now a deploy takes the group's drain lease
    (``/deploy-lock/target-group/<name>/drain``) before it checks MIN_HEALTHY and keeps it until its batch
    is healthy again: the other one waits, then finds 2 healthy and drains; no request fails."""
    fleet = make_fleet(standin, 2)
    first, second = fleet.ids
    envs = [
        rolling_env(standin, fleet, INSTANCE_IDS=instance, SERVICE=f"{fleet.group_name}-{name}", COMMANDS="sleep 3")
        for instance, name in ((first, "api"), (second, "admin"))
    ]
    journal = len(standin.load_balancer.changes(fleet.group_arn))
    runs: list[PipeRun] = []
    standin.service.meet("DeregisterTargets", parties=2, timeout=15)
    try:
        with standin.traffic(fleet.group_arn) as traffic:
            threads = [threading.Thread(target=lambda e=env: runs.append(run_pipe(e, timeout=300))) for env in envs]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=320)
    finally:
        standin.service.clear_faults()

    output = "\n\n".join(run.output for run in runs)
    assert len(runs) == 2 and all(run.returncode == 0 for run in runs), output
    assert traffic.failures == [], (len(traffic.failures), traffic.failures[:3])
    assert _most_out_at_once(standin.load_balancer.changes(fleet.group_arn)[journal:]) == 1, output
    assert f"drain lease of {fleet.group_name}" in output, output
    states = standin.target_states(fleet.group_arn)
    assert states[first] == states[second] == "healthy"


def test_one_service_in_two_environments_counts_the_other_batch_out_against_a_percentage(
    standin: StandIn,
) -> None:
    """One SERVICE in two ENVIRONMENTs (two locks) registered in one group by mistake, with a third target
    that neither deploys: 3 targets, MIN_HEALTHY 50% (2). Each deploy alone leaves 2. The staging deploy's
    batch is out (its command waits for the test); the prod deploy then reads 2 registered targets (the
    other batch is deregistered), a floor of 1, and before the fix drained too: 1 healthy of 3 for the
    whole time. Now it waits for the group's drain lease, and drains once the staging batch is back."""
    fleet = make_fleet(standin, 3)
    staging_instance, prod_instance, _ = fleet.ids
    go = f"/tmp/attack61-go-{uuid.uuid4().hex[:8]}"
    common = {"SERVICE": fleet.group_name, "MIN_HEALTHY": "50%"}
    staging = rolling_env(
        standin,
        fleet,
        **common,
        INSTANCE_IDS=staging_instance,
        ENVIRONMENT="staging",
        COMMANDS=f"for i in $(seq 600); do [ -e {go} ] && break; sleep 0.1; done",
    )
    prod = rolling_env(standin, fleet, **common, INSTANCE_IDS=prod_instance, ENVIRONMENT="production", COMMANDS="true")
    journal = len(standin.load_balancer.changes(fleet.group_arn))

    first = LivePipe(staging)
    first.wait_for_line("draining from", timeout=120)
    second = LivePipe(prod)
    try:
        wait_until(
            lambda: any(text in second.output for text in ("draining from", "drain lease of")),
            "the production deploy to drain or to wait for the group",
            timeout=120,
            every=0.2,
        )
    finally:
        standin.run_on_instance(staging_instance, f"touch {go}")
    done = [first.finish(timeout=300), second.finish(timeout=300)]

    output = "\n\n".join(run.output for run in done)
    assert all(run.returncode == 0 for run in done), output
    assert _most_out_at_once(standin.load_balancer.changes(fleet.group_arn)[journal:]) == 1, output
    assert set(standin.target_states(fleet.group_arn).values()) == {"healthy"}
