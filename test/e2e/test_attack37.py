"""The thirty-seventh outside attack (issue #17), on rollbacks, ``ACTION: status`` and the ledger: a target
that fell ill after its batch came back (the wording of the rollback's failure), ``current`` gone missing
or not a symlink, a rollback cut short, two services in one fleet. Each test compares what each instance
runs (``current`` on disk), what the ledger says and what the step said."""

from __future__ import annotations

from pathlib import Path

from e2e.test_attack9 import ACTIVATE, rolling, ship_a
from e2e.test_attack_held import build, fleet_on_disk
from e2e.test_load_balancer import make_fleet
from standin import StandIn
from support import LivePipe

A = "000001-0123456"
GO = "/srv/go-on"  # on an instance: its held activation of B goes on (and fails)


def test_a_target_that_fell_ill_after_its_batch_came_back_is_not_said_to_be_ill_before_the_deploy(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """Batch 1 comes back healthy on B; while batch 2 deploys, batch 1's app goes down (on B: a crash, a
    full disk) and the load balancer marks it unhealthy; batch 2 fails, and batch 1 is switched back but
    stays unhealthy. Before this deploy took it out (batch 1, forward), it was healthy: the verdict must not
    say it was already unhealthy then; it was unhealthy before its switch back."""
    fleet = make_fleet(standin, 2)
    first, second = fleet.ids
    ship_a(standin, fleet, tmp_path, bucket, service)
    hold = (
        f'{ACTIVATE}\nif [ "$(cat version.txt)" = B ] && [ "$AWS_SSM_INSTANCE_ID" = "{second}" ]; then\n'
        f"  echo holding-b; while [ ! -e {GO} ]; do sleep 0.2; done; exit 3\nfi"
    )
    env = rolling(
        standin,
        fleet,
        tmp_path,
        bucket,
        service,
        ARTIFACT=build(tmp_path, "B"),
        BITBUCKET_BUILD_NUMBER="2",
        BATCH_SIZE="1",
        ACTIVATE_COMMANDS=hold,
        HEALTHY_TIMEOUT="8",
    )
    pipe = LivePipe(env)
    pipe.wait_for_line(f"{second} | holding-b", timeout=240)
    standin.app_up(first, up=False)  # batch 1, healthy on B a moment ago, falls ill
    standin.wait_target_states(fleet.group_arn, [first], "unhealthy", timeout=60)
    standin.instance_path(second, GO).touch()
    run = pipe.finish(timeout=300)

    assert run.returncode == 1, run.output
    assert fleet_on_disk(standin, fleet.ids) == dict.fromkeys(fleet.ids, A), run.output
    assert f"{first} in {fleet.group_name}: unhealthy" in run.output, run.output
    assert "already unhealthy in it before this deploy took it out" not in run.output, run.output
    assert "it fell ill after this deploy put it back healthy" in run.output, run.output
