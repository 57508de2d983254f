"""The thirty-fourth outside attack (issue #17), on what changed last: "the deploy ran once" (exit 79, an
install the SSM Agent starts again after a reboot is refused), KEEP_RELEASES keeping where RELEASE: previous
goes, the compressed unpack program, a target unhealthy before its batch, cut-off secret masking. The disk,
the ledger, the result file and the step's words must agree."""

from __future__ import annotations

from pathlib import Path

from e2e.release_support import A
from e2e.test_attack28 import a_live_on, b_through_staging, staging_entry
from e2e.test_attack_held import fleet_on_disk, ledger_fleet, result
from standin import StandIn
from support import LivePipe

HOLD = "/tmp/hold-activate"  # while it exists, ACTIVATE_COMMANDS hang (after the switch) where it exists


def test_an_install_started_again_after_its_switch_goes_back_to_what_the_instance_ran_without_a_live_release(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live through 'prod'; B through 'staging' (its ledger names no live release: the rollback goes back
    to what each instance's install found as it began). The instance reboots during ACTIVATE_COMMANDS, after
    its switch to B, and is back before AGENT_LOST_TIMEOUT: the agent starts the install again, refused (79).
    The refused run's output is all the pipe gets (SSM keeps the last run's): it must still know the instance
    ran A before this deploy, and switch it back there, not leave it on B 'as no release was live before it'."""
    (instance,) = ids = standin.launch(1)
    a_live_on(standin, ids, tmp_path, bucket, service)
    activate = f'echo "activated $(cat version.txt)"; if [ -e {HOLD} ]; then echo holding; sleep 600; fi'
    env = b_through_staging(
        standin, ids, tmp_path, bucket, service, ACTIVATE_COMMANDS=activate, AGENT_LOST_TIMEOUT="300"
    )
    standin.instance_path(instance, HOLD).touch()
    pipe = LivePipe(env)
    try:
        pipe.wait_for_line(f"{instance} | holding", timeout=120)
        standin.service.lose_instance(instance)
    finally:
        standin.instance_path(instance, HOLD).unlink()
        standin.service.restore_instance(instance, resume=True)
    run = pipe.finish(timeout=400)

    assert run.returncode == 1, run.output
    assert f"{instance}: Failed (exit 79)" in run.output, run.output
    assert "no release was live before it" not in run.output, run.output[-3000:]
    assert fleet_on_disk(standin, ids) == {instance: A}, run.output[-3000:]
    entry = staging_entry(standin, service)
    assert ledger_fleet(entry) == {instance: A}, entry
    assert result(tmp_path)["fleet"] == {instance: A}
