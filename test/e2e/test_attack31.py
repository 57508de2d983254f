"""The thirty-first outside attack (issue #17): time and interruption against "the deploy ran once".
AWS's SSM Agent, when it starts again after a reboot (or its own restart), resubmits the documents it
began and did not finish (``EngineProcessor.processInProgressDocuments``), before it reads new messages, so a
CancelCommand sent while it was away does not stop that; ``test/standin/agent.py`` ``InvocationRun.resume``
models it. The disk (``current``), the ledger, the result file and the step's words must agree, also after
the step ended."""

from __future__ import annotations

from e2e.test_attack_held import fleet_on_disk, ledger_fleet, result
from e2e.test_ledger import entries as ledger_entries
from e2e.test_release_fleet import A, B, Shop, shop
from e2e.test_releases import build
from standin import StandIn
from support import LivePipe, run_pipe, wait_until

__all__ = ["shop"]  # the fixture, used by name

HOLD = "/tmp/hold-b"  # while it exists, B's COMMANDS hang (before the switch) on the instance that has it


def b_held(shop: Shop, ids: list[str], **variables: str) -> dict[str, str]:
    """Release B everywhere; its COMMANDS hang, before the switch, where HOLD exists."""
    commands = f"if [ -e {HOLD} ]; then echo holding; sleep 600; fi"
    artifact = build(shop.clone, "B")
    return shop.env(ids, ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="2", COMMANDS=commands, **variables)


def test_held_an_install_the_agent_runs_again_after_a_reboot_once_the_step_ended_is_named_by_status(
    standin: StandIn, shop: Shop
) -> None:
    """Held. B's install on ``rebooted`` is cut short before its switch (the instance reboots: the script
    dies, the agent goes offline). The step gives the instance up and cannot read it: it says so ("release
    unknown ... need attention"), the ledger records it ``unknown`` and keeps A live. Once the agent is back it
    runs the interrupted install again from the start (AWS's agent resumes its in-progress documents; the
    step's CancelCommand has not reached it) and B goes live there, after the step ended. Nothing said A runs
    there, and ACTION: status names the drift (B where the ledger says A)."""
    good, rebooted = standin.launch(2)
    shop.ship([good, rebooted], "A", "1")
    standin.instance_path(rebooted, HOLD).touch()
    pipe = LivePipe(b_held(shop, [good, rebooted], AGENT_LOST_TIMEOUT="5"))
    try:
        pipe.wait_for_line(f"{rebooted} | holding", timeout=120)
        standin.service.lose_instance(rebooted)
        run = pipe.finish(timeout=400)
    finally:
        standin.instance_path(rebooted, HOLD).unlink()
        standin.service.restore_instance(rebooted, resume=True)
    runs = [command.runs[rebooted] for command in standin.sent_commands() if rebooted in command.runs]
    wait_until(lambda: not any(invocation.thread.is_alive() for invocation in runs), "the resumed install to end", 120)

    assert run.returncode == 1, run.output
    assert f"{rebooted}: release unknown" in run.output and "need attention" in run.output, run.output
    entry = ledger_entries(standin, shop.service)[-1]
    assert ledger_fleet(entry) == {good: A, rebooted: "unknown"}, entry
    assert result(shop.clone)["fleet"] == {good: A, rebooted: "unknown"}, run.output
    seen = [(i.command.command_id, i.final_details, i.stdout) for i in runs]
    assert fleet_on_disk(standin, [good, rebooted]) == {good: A, rebooted: B}, (seen, run.output)  # ran again
    status = run_pipe(shop.env([good, rebooted], ACTION="status", BITBUCKET_BUILD_NUMBER="3"))
    assert status.returncode == 1, status.output
    assert f"Drift: {rebooted} runs {B}; the ledger says {A} is live" in status.output, status.output
