"""The thirty-first outside attack (issue #17): time and interruption against "the deploy ran once".
AWS's SSM Agent, when it starts again after a reboot (or its own restart), resubmits the documents it
began and did not finish (``EngineProcessor.processInProgressDocuments``), before it reads new messages, so a
CancelCommand sent while it was away does not stop that; ``test/standin/agent.py`` ``InvocationRun.resume``
models it. The disk (``current``), the ledger, the result file and the step's words must agree, also after
the step ended."""

from __future__ import annotations

from pathlib import Path

from e2e.release_support import A, build_bare
from e2e.test_attack20 import one_instance
from e2e.test_attack_held import fleet_on_disk, ledger_fleet, result
from e2e.test_ledger import entries as ledger_entries
from e2e.test_release_fleet import Shop, shop
from standin import StandIn
from support import LivePipe, run_pipe, wait_until

__all__ = ["shop"]  # the fixture, used by name

HOLD = "/tmp/hold-b"  # while it exists, B's COMMANDS hang (before the switch) on the instance that has it
RAN = "/tmp/commands-b"  # B's COMMANDS append a line to it each time they run (a migration, say)


def b_held(shop: Shop, ids: list[str], **variables: str) -> dict[str, str]:
    """Release B everywhere; its COMMANDS count their runs, then hang, before the switch, where HOLD exists."""
    commands = f"echo ran >> {RAN}\nif [ -e {HOLD} ]; then echo holding; sleep 600; fi"
    artifact = build_bare(shop.clone, "B")
    return shop.env(ids, ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="2", COMMANDS=commands, **variables)


def test_an_install_the_agent_starts_again_after_a_reboot_during_the_step_is_refused_and_commands_ran_once(
    standin: StandIn, shop: Shop
) -> None:
    """``rebooted`` reboots while B's COMMANDS run (the script dies, the agent goes offline) and is back before
    AGENT_LOST_TIMEOUT: its agent starts the install again from the start, with the same command. Before the
    fix COMMANDS ran twice there and the step said ``Deployed``. Now the install finds its own pipe run's
    record (``.ssm-deploy/run``) and refuses (79) before COMMANDS: the instance failed, named with what to
    check; the rollback switches ``good`` back; the ledger, the result file and the disk say A everywhere."""
    good, rebooted = standin.launch(2)
    shop.ship([good, rebooted], "A", "1")
    standin.instance_path(rebooted, HOLD).touch()
    pipe = LivePipe(b_held(shop, [good, rebooted], AGENT_LOST_TIMEOUT="300"))
    try:
        pipe.wait_for_line(f"{rebooted} | holding", timeout=120)
        standin.service.lose_instance(rebooted)
    finally:
        standin.instance_path(rebooted, HOLD).unlink()
        standin.service.restore_instance(rebooted, resume=True)
    run = pipe.finish(timeout=400)

    assert standin.instance_path(rebooted, RAN).read_text() == "ran\n", run.output  # COMMANDS ran once there
    assert standin.instance_path(good, RAN).read_text() == "ran\n", run.output
    assert run.returncode == 1, run.output
    assert "Deployed" not in run.output.splitlines()[-1], run.output
    assert f"{rebooted}: Failed (exit 79)" in run.output, run.output
    assert f"Exit 79 on {rebooted}: the SSM Agent started this deploy's script again on the instance" in run.output
    assert "the SSM Agent started this deploy again on this instance (after a reboot or an agent restart): " in (
        run.output
    )
    assert fleet_on_disk(standin, [good, rebooted]) == {good: A, rebooted: A}, run.output
    entry = ledger_entries(standin, shop.service)[-1]
    assert (entry["status"], ledger_fleet(entry)) == ("rolled back", {good: A, rebooted: A}), entry
    document = result(shop.clone)
    assert document["fleet"] == {good: A, rebooted: A}, document
    assert [inv["exit_code"] for inv in document["instances"] if inv["instance_id"] == rebooted] == [79], document


def test_an_install_the_agent_starts_again_after_a_reboot_once_the_step_ended_is_refused_and_status_agrees(
    standin: StandIn, shop: Shop
) -> None:
    """B's install on ``rebooted`` is cut short before its switch (the instance reboots: the script dies, the
    agent goes offline). The step gives the instance up and cannot read it: it says so ("release unknown ...
    need attention"), the ledger records it ``unknown`` and keeps A live. Once the agent is back it starts the
    interrupted install again (AWS's agent resumes its in-progress documents; the step's CancelCommand has not
    reached it): before the fix B went live there after the step ended; now the install is refused (79), so
    ``rebooted`` stays on A, where the step left it, COMMANDS ran there once, and ACTION: status finds no drift."""
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
    seen = [(i.command.command_id, i.final_details, i.stdout, i.stderr) for i in runs]
    assert fleet_on_disk(standin, [good, rebooted]) == {good: A, rebooted: A}, (seen, run.output)  # not run again
    assert standin.instance_path(rebooted, RAN).read_text() == "ran\n", seen
    assert any("the SSM Agent started this deploy again on this instance" in i.stderr for i in runs), seen
    status = run_pipe(shop.env([good, rebooted], ACTION="status", BITBUCKET_BUILD_NUMBER="3"))
    assert status.returncode == 0, status.output
    assert f"  {rebooted}: {A}\n" in status.output, status.output
    assert f"No drift: 2 instance(s) run {A}, the live release" in status.output.splitlines()[-1], status.output


def test_a_rerun_that_rebuilds_the_live_release_with_other_bytes_is_refused_before_anything_is_sent(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """Attack 31's note, fixed: a Rerun of a build-and-deploy step keeps BITBUCKET_BUILD_NUMBER, so a build that
    is not byte-for-byte reproducible gives the live release's id to other bytes. Each instance refused it
    (exit 80, "give the new build its own release id (a new build number)", which a Rerun cannot): the pipe
    refuses before anything is uploaded or sent, naming the Rerun and the two ways out."""
    _, env = one_instance(standin, tmp_path, bucket, service)

    first = run_pipe(env("A", "7"), timeout=300)
    assert first.returncode == 0, first.output
    rerun = run_pipe(env("A, built again", "7"), timeout=300)

    assert rerun.returncode == 1, rerun.output
    assert "ARTIFACT: nothing was sent. Release 000007-0123456 is live, built from another artifact" in rerun.output
    assert "use RELEASE: 000007-0123456" in rerun.output, rerun.output
    assert "Sent command" not in rerun.output and "Uploaded" not in rerun.output, rerun.output
    assert [entry["status"] for entry in ledger_entries(standin, service)] == ["succeeded"]
