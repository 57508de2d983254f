"""The sixtieth attack (issue #17): instances already stopped (EC2 StopInstances) when the deploy is planned.
Attack 58 covers a stop during the deploy. Before it, TARGETS resolved running instances only: a stopped one they
match was left out without a word (a rollout the pipe drives sends to the running ones by id) and the step said
Deployed with the release live in the ledger, while, started again, the stopped one serves the release it had;
sent to the TARGETS, SSM held its command (Delayed) and the deploy failed after sending with "agent
ConnectionLost". With INSTANCE_IDS a stopped instance was refused for its agent, never named stopped.
SSM targets a stopped managed node its tags match ("the system locates and attempts to run the command on all
managed nodes that match the specified tags"; its invocation is Delayed until it starts): the deploy is refused
before anything is sent, unless SKIP_STOPPED leaves the stopped ones out, each named (plan, last line, result
file, release ledger), and ACTION: status reports one started again as drift."""

from __future__ import annotations

from pathlib import Path

from e2e.release_support import A, B, build
from e2e.test_attack46 import last_line, status, tagged_fleet
from e2e.test_attack58 import stop
from e2e.test_attack_held import fleet_on_disk, ledger_fleet, result
from e2e.test_ledger import entries as ledger_entries
from e2e.test_releases import release_env
from standin import StandIn
from support import run_pipe


def test_an_instance_stopped_before_the_plan_refuses_a_deploy_to_targets_and_its_dry_run(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on two instances tagged Service=<tag>; the second is stopped; B to TARGETS in batches of one (the pipe
    sends each batch by id). Before: the stopped one was not resolved, the step said Deployed to 1 instance(s)
    and the ledger called B live, the dry run said all checks passed. Now both refuse before anything is sent,
    naming it stopped, what it runs once started (A) and the ways out; nothing changes on disk or in the ledger."""
    (first, second), env = tagged_fleet(standin, tmp_path, bucket, service)
    stop(standin, second)
    said = f"{second} is stopped, matched by TARGETS: it gets no deploy; started again it runs {A}"
    versions = len(ledger_entries(standin, service))

    dry = run_pipe(env("B", "2") | {"DRY_RUN": "true", "BATCH_SIZE": "1"}, timeout=300)
    run = run_pipe(env("B", "2") | {"BATCH_SIZE": "1"}, timeout=300)

    for done in (dry, run):
        assert "Traceback" not in done.output
        assert done.returncode == 1, done.output
        line = last_line(done.output)
        assert "TARGETS: nothing was sent" in line and said in line, done.output
        assert "aws ec2 start-instances" in line and "SKIP_STOPPED: 'true'" in line, done.output
    assert fleet_on_disk(standin, [first, second]) == {first: A, second: A}
    assert len(ledger_entries(standin, service)) == versions  # nothing sent: no version


def test_skip_stopped_deploys_to_the_running_ones_and_names_the_stopped_one_everywhere(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """The same with SKIP_STOPPED: 'true' and one command (no rollout): the command goes to the running instance by
    id (SSM holds none for the stopped one, which would install B whenever it starts), the dry run and the last line
    name the stopped one, the result file lists it in skipped, the ledger's instances say 'skipped, stopped'. Started
    again it serves A: ACTION: status reports it as drift."""
    (first, second), env = tagged_fleet(standin, tmp_path, bucket, service)
    tag = env("B", "2")["TARGETS"].split("=", 1)[1]
    stop(standin, second)
    said = f"{second} is stopped, matched by TARGETS: it gets no deploy; started again it runs {A}"

    dry = run_pipe(env("B", "2") | {"DRY_RUN": "true", "SKIP_STOPPED": "true"}, timeout=300)
    assert dry.returncode == 0, dry.output
    assert f"  skipped:   {said}" in dry.output, dry.output
    before = len(standin.sent_commands())
    run = run_pipe(env("B", "2") | {"SKIP_STOPPED": "true"}, timeout=300)

    assert "Traceback" not in run.output
    assert run.returncode == 0, run.output
    assert f"{second} stopped, left out (SKIP_STOPPED): not deployed" in last_line(run.output), run.output
    assert said in run.output, run.output
    sent = standin.sent_commands()[before:]
    assert sent and all(second not in command.runs for command in sent), run.output  # nothing waits for it
    assert fleet_on_disk(standin, [first]) == {first: B}
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == (B, "succeeded"), entry
    assert ledger_fleet(entry) == {first: B}, entry
    assert entry["instances"]["skipped, stopped"]["ids"] == [second], entry
    document = result(tmp_path)
    assert list(document["skipped"]) == [second] and said in document["skipped"][second], document

    standin.client("ec2").start_instances(InstanceIds=[second])
    code, said_by_status = status(standin, tmp_path, bucket, service, TARGETS=f"tag:Service={tag}")
    assert code == 1, said_by_status
    assert fleet_on_disk(standin, [first, second]) == {first: B, second: A}
    assert second in said_by_status.strip().splitlines()[-1] and A in said_by_status, said_by_status


def test_a_stopped_instance_in_instance_ids_is_refused_as_stopped_with_what_to_do(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """INSTANCE_IDS names a stopped instance. Before: refused (or, while its agent still pinged Online, failed after
    sending with "agent ConnectionLost") without ever saying it is stopped. Now the plan asks EC2 and refuses by
    state, before anything is sent, with the two ways out."""
    first, second = standin.launch(2)
    stop(standin, second)
    env = release_env(standin, [first, second], tmp_path, bucket, service, ARTIFACT=build(tmp_path, "B"))

    before = len(standin.sent_commands())
    run = run_pipe(env, timeout=300)

    assert "Traceback" not in run.output
    assert run.returncode == 1, run.output
    line = last_line(run.output)
    assert "INSTANCE_IDS: nothing was sent" in line and f"{second} is stopped" in line, run.output
    assert f"aws ec2 start-instances --instance-ids {second}" in line and "remove it from INSTANCE_IDS" in line, line
    assert len(standin.sent_commands()) == before, run.output
