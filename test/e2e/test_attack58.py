"""The fifty-eighth outside attack (issue #17): instances stopped (EC2 StopInstances) during a deploy to
TARGETS. Attack 46's fix counts an instance TARGETS no longer match as gone (untagged or terminated: it left
the fleet). A stopped instance still carries its tags: it is still the fleet's, it did not get the release,
and when it starts it runs what it had. The stand-in models a stop as AWS documents it (``standin/power.py``).
Each test compares what the instances run (``current`` on disk), what the ledger says, and what the step said
(exit code, last line, result file, ``ACTION: status``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2e.release_support import A, B
from e2e.test_attack46 import ACCOUNT, last_line, on_send_command, status, tagged_fleet
from e2e.test_attack_held import fleet_on_disk, ledger_fleet, result
from e2e.test_ledger import entries as ledger_entries
from moto.ec2.models import ec2_backends
from standin import StandIn
from support import LivePipe, PipeRun, run_pipe, wait_until

from pipe.release.remote import ReleaseExit

HOLD = "/tmp/hold-b"  # while it exists, B's COMMANDS hang (before the switch) on the instance that has it


def stop(standin: StandIn, instance_id: str) -> None:
    """StopInstances, straight in EC2's model (a request thread must not call the stand-in over HTTP)."""
    ec2_backends[ACCOUNT][standin.region].stop_instances([instance_id])


def failed_with_both_on_a(standin: StandIn, run: PipeRun, first: str, second: str) -> None:
    """The step failed without calling ``second`` gone, named it stopped and still in the fleet, and both
    instances are on A."""
    assert "Traceback" not in run.output
    assert run.returncode != 0, run.output
    assert "left the fleet" not in last_line(run.output), run.output
    assert f"{second} is stopped, still matched by TARGETS" in run.output, run.output
    assert fleet_on_disk(standin, [first, second]) == {first: A, second: A}, run.output


def test_an_instance_stopped_between_the_plan_and_the_send_is_still_in_the_fleet_and_fails_the_deploy(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on two instances tagged Service=<tag>. B to TARGETS: the second is stopped (by hand, by an
    instance scheduler) as the deploy's SendCommand reaches AWS. SSM still targets it (it is managed and
    tagged): its invocation is Delayed, its agent ConnectionLost, and the pipe gives it up after
    AGENT_LOST_TIMEOUT. Resolved again, TARGETS no longer match it (they match running instances), so the pipe
    counted it gone: exit 0, "Deployed to 1 instance(s) (... left the fleet)", the ledger's fleet without it,
    B live. But it is still tagged: started again, it serves A behind the same tag. It did not get the
    release: the deploy fails, the first goes back to A, and the step, the ledger, the result file and
    ``ACTION: status`` say A on both."""
    (first, second), env = tagged_fleet(standin, tmp_path, bucket, service)
    tag = env("B", "2")["TARGETS"].split("=", 1)[1]

    def stop_second_at_the_deploy(request: dict[str, Any]) -> None:
        if "Targets" in request and not standin.instance(second).stopped:
            stop(standin, second)

    with on_send_command(standin, stop_second_at_the_deploy):
        run = run_pipe(env("B", "2") | {"AGENT_LOST_TIMEOUT": "5"}, timeout=300)

    failed_with_both_on_a(standin, run, first, second)
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == (B, "rolled back"), entry
    assert ledger_fleet(entry) == {first: A, second: A}, entry
    document = result(tmp_path)
    assert document["fleet"] == {first: A, second: A}, document
    assert document["departed"] == {}, document
    code, said = status(standin, tmp_path, bucket, service, TARGETS=f"tag:Service={tag}")
    assert code == 0 and A in said and B not in said.splitlines()[-1], said  # A live, on both: no drift


def test_an_instance_stopped_while_its_install_runs_is_still_in_the_fleet_and_fails_the_deploy(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """The same, but the second is stopped while B's install runs there (its COMMANDS hold before the
    switch): the script dies with the instance, the invocation stays InProgress, the pipe gives it up. Still
    tagged and still on A: the deploy fails and the first goes back to A; nothing says B is live."""
    (first, second), env = tagged_fleet(standin, tmp_path, bucket, service)
    standin.instance_path(second, HOLD).touch()
    commands = f"if [ -e {HOLD} ]; then echo holding; sleep 600; fi"
    pipe = LivePipe(env("B", "2") | {"AGENT_LOST_TIMEOUT": "5", "COMMANDS": commands})
    pipe.wait_for_line(f"{second} | holding", timeout=120)
    standin.client("ec2").stop_instances(InstanceIds=[second])
    run = pipe.finish(timeout=300)

    failed_with_both_on_a(standin, run, first, second)
    entry = ledger_entries(standin, service)[-1]
    assert entry["status"] != "succeeded", entry
    assert ledger_fleet(entry)[first] == A and second in ledger_fleet(entry), entry
    document = result(tmp_path)
    assert document["fleet"][first] == A and second in document["fleet"], document
    assert document["departed"] == {}, document


def test_an_instance_stopped_during_its_install_and_started_again_does_not_install_it_after_the_step(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """Held (attack 31's refusal covers it): the second is stopped while B's install holds there and started
    again once the step gave it up and ended. Its agent starts the interrupted install again from the start
    (the step's CancelCommand has not reached it); the install finds its pipe run's record and refuses (79),
    so the second stays on A, where the step and the ledger left it."""
    (first, second), env = tagged_fleet(standin, tmp_path, bucket, service)
    standin.instance_path(second, HOLD).touch()
    commands = f"if [ -e {HOLD} ]; then echo holding; sleep 600; fi"
    pipe = LivePipe(env("B", "2") | {"AGENT_LOST_TIMEOUT": "5", "COMMANDS": commands})
    pipe.wait_for_line(f"{second} | holding", timeout=120)
    ec2 = standin.client("ec2")
    ec2.stop_instances(InstanceIds=[second])
    run = pipe.finish(timeout=300)
    standin.instance_path(second, HOLD).unlink()
    ec2.start_instances(InstanceIds=[second])
    sent = [command for command in standin.sent_commands() if second in command.runs]
    runs = [command.runs[second] for command in sent]
    wait_until(lambda: not any(invocation.thread.is_alive() for invocation in runs), "the resumed install", 120)
    ssm = standin.client("ssm")
    codes = [ssm.get_command_invocation(CommandId=c.command_id, InstanceId=second)["ResponseCode"] for c in sent]

    assert ReleaseExit.STARTED_AGAIN in codes, codes  # the install ran again, and refused
    assert run.returncode != 0, run.output
    assert fleet_on_disk(standin, [first, second]) == {first: A, second: A}, run.output
    entry = ledger_entries(standin, service)[-1]
    assert entry["status"] != "succeeded" and ledger_fleet(entry)[first] == A, entry
