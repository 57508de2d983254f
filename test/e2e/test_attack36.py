"""The thirty-sixth outside attack (issue #17): "the deploy ran once" with two deploys on one instance, and
secret values end to end. The disk, the ledger, the result file and the step's words must agree; a
secret's value must appear nowhere the pipe writes or sends."""

from __future__ import annotations

from e2e.release_support import build_bare
from e2e.test_attack_held import fleet_on_disk
from e2e.test_release_fleet import Shop, shop
from standin import StandIn
from support import LivePipe, wait_until

__all__ = ["shop"]  # the fixture, used by name

HOLD = "/tmp/hold-x"  # while it exists, deploy X's COMMANDS hang (before its switch)
RAN_X = "/tmp/commands-x"  # X's COMMANDS append a line each time they run (a migration, say)
RAN_Y = "/tmp/commands-y"


def test_a_deploy_started_again_after_another_one_recorded_its_run_is_still_refused(
    standin: StandIn, shop: Shop
) -> None:
    """Two deploys of one APP_DIR overlap on an instance (LOCK: false, documented): X runs its COMMANDS,
    Y's install waits for the instance's deploy lock. The instance reboots: the SSM Agent starts both again
    (AWS resubmits every begun, unfinished document; which one takes the lock first is not defined). Y
    first: Y records its own run in .ssm-deploy/run and deploys. Then X's start must still be known as X's
    second: before the fix the record kept only the last run (Y's), so X ran its COMMANDS (a migration)
    a second time and switched, and its step said Deployed."""
    (instance,) = ids = standin.launch(1)
    shop.ship(ids, "A", "1")
    standin.instance_path(instance, HOLD).touch()
    x_commands = f"echo ran >> {RAN_X}\nif [ -e {HOLD} ]; then echo holding; sleep 600; fi"
    x = LivePipe(
        shop.env(
            ids,
            ARTIFACT=build_bare(shop.clone, "B"),
            BITBUCKET_BUILD_NUMBER="2",
            COMMANDS=x_commands,
            LOCK="false",
            STAGE_FIRST="false",
            AGENT_LOST_TIMEOUT="300",
        )
    )
    y: LivePipe | None = None
    try:
        x.wait_for_line(f"{instance} | holding", timeout=120)
        y = LivePipe(
            shop.env(
                ids,
                ARTIFACT=build_bare(shop.clone, "C", "web-api-c.tgz"),
                BITBUCKET_BUILD_NUMBER="3",
                COMMANDS=f"echo ran >> {RAN_Y}",
                LOCK="false",
                STAGE_FIRST="false",
                AGENT_LOST_TIMEOUT="300",
            )
        )
        y.wait_for_line("another deploy is running on this instance; waiting for it", timeout=120)
        standin.service.lose_instance(instance)  # the reboot: both scripts die
    finally:
        standin.instance_path(instance, HOLD).unlink()
    cut = [command.runs[instance] for command in standin.sent_commands() if instance in command.runs]
    x_run, y_run = cut[-2], cut[-1]  # X's install, then Y's
    y_run.resume()  # the agent is back; Y's resubmitted install takes the instance's lock first
    wait_until(lambda: not y_run.thread.is_alive(), "Y's install started again to end", 120)
    standin.service.restore_instance(instance, resume=True)  # then X's
    wait_until(lambda: not x_run.thread.is_alive(), "X's install started again to end", 120)
    assert y is not None
    y_done, x_done = y.finish(timeout=300), x.finish(timeout=300)

    assert standin.instance_path(instance, RAN_Y).read_text() == "ran\n", y_done.output
    assert y_done.returncode == 0, y_done.output
    assert standin.instance_path(instance, RAN_X).read_text() == "ran\n", (x_run.stdout, x_run.stderr)
    assert f"{instance}: Failed (exit 79)" in x_done.output, x_done.output
    assert "Deployed" not in x_done.output.splitlines()[-1], x_done.output
    assert fleet_on_disk(standin, ids)[instance] != "000002-0123456", x_done.output
