"""The orchestration in process: phase order, who gets the rollback, the hook around each batch, stops,
and what the result file says, with a fake SSM client (no stand-in, no subprocess)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError
from unit.unit_support import INSTANCE_A, INSTANCE_B, INSTANCE_C, REGION, make_settings

from functional.fake_aws import FakeSSM
from functional.plans import applying, planned
from pipe.apply.phases import send_only
from pipe.apply.rollout import roll_out
from pipe.apply.run import Run
from pipe.aws.clients import Clients
from pipe.config.rollout import RolloutSettings
from pipe.errors import DeployFailed, DeployStopped, SendOutcomeUnknown
from pipe.execution import Execution
from pipe.model import Batch, PhaseStatus, Status
from pipe.plan.commands import deploy_spec
from pipe.report.result_file import write_result
from pipe.runtime.interruption import StopRequests

IDS = [INSTANCE_A, INSTANCE_B, INSTANCE_C]


def make_run(ssm: FakeSSM, tmp_path: Path, **settings: Any) -> Run:
    values: dict[str, Any] = {
        "instance_ids": IDS,
        "stream_output": False,
        "result_file": str(tmp_path / "result.json"),
        **settings,
    }
    clients = Clients(boto3.Session(region_name=REGION), REGION)
    clients.ssm = ssm  # type: ignore[assignment]
    return applying(planned(make_settings(**values)), clients, ssm.stops)


def result(run: Run) -> tuple[dict[str, Any], str]:
    write_result(run.settings, run.outcome, env={})
    path = Path(run.settings.result_file)
    return json.loads(path.read_text()), path.with_name(path.name + ".env").read_text()


def failing_on(label: str, *instances: str) -> FakeSSM:
    return FakeSSM(exit_codes=lambda phase, instance: 7 if phase == label and instance in instances else 0)


def test_success_runs_the_deploy_then_the_health_check(tmp_path: Path) -> None:
    ssm = FakeSSM()
    run = make_run(ssm, tmp_path, healthcheck_commands="curl -f localhost", rollback_commands="./undo.sh")

    message = roll_out(run, list(run.plan.batches))

    assert message == "Deployed to 3 instance(s) and passed the health check."
    assert ssm.labels() == ["deploy", "health check"]
    assert ssm.phase("health check")[0].instance_ids == IDS
    assert ssm.phase("health check")[0].request["MaxErrors"] == "100%"
    assert run.outcome.health_check.status is PhaseStatus.PASSED
    assert run.outcome.rollback.status is PhaseStatus.NOT_RUN


def test_a_failed_deploy_rolls_back_only_where_it_ran_and_the_result_describes_the_deploy(tmp_path: Path) -> None:
    ssm = failing_on("deploy", INSTANCE_B)
    run = make_run(ssm, tmp_path, rollback_commands="./undo.sh")

    with pytest.raises(DeployFailed) as failure:
        roll_out(run, list(run.plan.batches))

    assert ssm.labels() == ["deploy", "rollback"]
    assert ssm.phase("rollback")[0].instance_ids == IDS  # every instance ran the deploy, so each is undone
    assert "Deploy failed on 1 of 3 instance(s)" in str(failure.value)
    assert "Rollback succeeded on all 3 instance(s)" in str(failure.value)
    document, dotenv = result(run)
    assert (document["failed"], document["succeeded"]) == (1, 2)
    assert {row["instance_id"] for row in document["instances"] if row["exit_code"] == 7} == {INSTANCE_B}
    assert document["rollback"] == "succeeded"
    assert len(document["rollback_instances"]) == 3
    assert f"SSM_DEPLOY_FAILED_INSTANCES='{INSTANCE_B}'" in dotenv
    assert "SSM_DEPLOY_FAILED='1'" in dotenv


def test_a_failed_health_check_rolls_back_every_instance(tmp_path: Path) -> None:
    ssm = failing_on("health check", INSTANCE_C)
    run = make_run(ssm, tmp_path, healthcheck_commands="curl -f localhost", rollback_commands="./undo.sh")

    with pytest.raises(DeployFailed) as failure:
        roll_out(run, list(run.plan.batches))

    assert ssm.labels() == ["deploy", "health check", "rollback"]
    assert "health check failed on 1 of 3 instance(s)" in str(failure.value)
    document, _ = result(run)
    assert (document["failed"], document["succeeded"], document["health_check"]) == (1, 2, "failed")
    assert document["failed_instances"] == [{"instance_id": INSTANCE_C, "phases": ["health check"]}]
    assert [row["exit_code"] for row in document["health_check_instances"] if row["instance_id"] == INSTANCE_C] == [7]


def test_the_hook_wraps_each_batch_and_is_left_on_failure(tmp_path: Path) -> None:
    ssm = failing_on("deploy", INSTANCE_B)
    run = make_run(ssm, tmp_path)
    events: list[str] = []

    @contextmanager
    def hook(_: Execution, batch: Batch) -> Iterator[None]:
        events.append(f"enter {batch.number}: {len(ssm.sent)} sent")
        try:
            yield
        finally:
            events.append(f"leave {batch.number}: {len(ssm.sent)} sent")

    batches = [Batch(1, 2, (INSTANCE_A,)), Batch(2, 2, (INSTANCE_B, INSTANCE_C))]
    with pytest.raises(DeployFailed):
        roll_out(run, batches, hook)

    assert events == ["enter 1: 0 sent", "leave 1: 1 sent", "enter 2: 1 sent", "leave 2: 2 sent"]
    assert [sent.instance_ids for sent in ssm.sent] == [[INSTANCE_A], [INSTANCE_B, INSTANCE_C]]
    assert set(run.outcome.deploy.invocations) == set(IDS)  # every batch's rows stay in the outcome


def test_a_stop_as_the_deploy_ends_sends_no_health_check(tmp_path: Path) -> None:
    stops = StopRequests()
    ssm = FakeSSM(stops=stops, stop_during_send="deploy")
    run = make_run(ssm, tmp_path, healthcheck_commands="curl -f localhost", rollback_commands="./undo.sh")

    with pytest.raises(DeployStopped):
        roll_out(run, list(run.plan.batches))

    assert ssm.labels() == ["deploy"]  # cancelled, and nothing after it
    assert ssm.sent[0].cancelled
    assert run.outcome.interrupted == "deploy"
    document, dotenv = result(run)
    assert document["interrupted_phase"] == "deploy"
    assert "SSM_DEPLOY_INTERRUPTED='deploy'" in dotenv


def test_a_stop_during_the_rollback_is_recorded_as_interrupted(tmp_path: Path) -> None:
    stops = StopRequests()
    ssm = FakeSSM(exit_codes=lambda phase, _: 3 if phase == "deploy" else 0, stops=stops, stop_during_send="rollback")
    run = make_run(ssm, tmp_path, rollback_commands="./undo.sh")

    with pytest.raises(DeployStopped) as stopped:
        roll_out(run, list(run.plan.batches))

    assert ssm.labels() == ["deploy", "rollback"]
    assert "The rollback did not finish" in str(stopped.value)
    assert run.outcome.rollback.status is PhaseStatus.INTERRUPTED
    assert run.outcome.interrupted == "rollback"


def test_a_stop_before_the_rollback_sends_nothing_more(tmp_path: Path) -> None:
    ssm = failing_on("deploy", INSTANCE_A)
    run = make_run(ssm, tmp_path, rollback_commands="./undo.sh")
    original = ssm.list_command_invocations

    def stop_after_results(**request: Any) -> dict[str, Any]:
        if request.get("Details"):
            run.stops.signal_name = "SIGINT"  # the pipeline is stopped while the deploy's results are read
        return original(**request)

    ssm.list_command_invocations = stop_after_results  # type: ignore[method-assign,assignment]
    with pytest.raises(DeployStopped) as stopped:
        roll_out(run, list(run.plan.batches))

    assert ssm.labels() == ["deploy"]
    assert "before the rollback was sent" in str(stopped.value)
    assert run.outcome.interrupted == "rollback"


def test_wait_false_cancels_and_fails_when_a_stop_arrives_during_the_send(tmp_path: Path) -> None:
    stops = StopRequests()
    ssm = FakeSSM(stops=stops, stop_during_send="deploy")
    run = make_run(ssm, tmp_path, wait=False)

    with pytest.raises(DeployStopped, match="it was cancelled"):
        send_only(run, deploy_spec(run.plan, run.plan.batches[0]))

    assert ssm.sent[0].cancelled
    assert run.outcome.status is Status.RUNNING  # Deploy.run turns it into "failed"


def test_a_send_whose_outcome_stays_unknown_never_counts_as_not_sent(tmp_path: Path) -> None:
    class LostAnswer(FakeSSM):
        def send_command(self, **request: Any) -> dict[str, Any]:
            super().send_command(**request)  # AWS accepted it...
            raise ConnectionClosedError(endpoint_url="https://ssm.eu-west-1.amazonaws.com")  # ...the answer was lost

        def list_commands(self, CommandId: str = "", **_: Any) -> dict[str, Any]:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "ListCommands")

    ssm = LostAnswer()
    run = make_run(ssm, tmp_path)

    with pytest.raises(SendOutcomeUnknown):
        roll_out(run, list(run.plan.batches))

    assert len(ssm.sent) == 1  # sent once, never again blindly
    assert run.outcome.status is Status.RUNNING  # Deploy.run then reports "failed", never "not sent"


def test_a_rollback_the_hook_refuses_is_reported_as_not_run_never_as_succeeded(tmp_path: Path) -> None:
    """Batch 2 fails; batch 1's rollback needs the hook again (drained first), and the hook refuses."""
    ssm = failing_on("deploy", INSTANCE_B)
    run = make_run(ssm, tmp_path, rollback_commands="./undo.sh", rollout=RolloutSettings(batch_size="1"))
    entered: list[int] = []

    @contextmanager
    def hook(_: Execution, batch: Batch) -> Iterator[None]:
        entered.append(batch.number)
        if entered.count(batch.number) > 1:
            raise DeployFailed(f"{batch} was still draining after DRAIN_TIMEOUT 5 s.")
        yield

    batches = [Batch(1, 2, (INSTANCE_A,)), Batch(2, 2, (INSTANCE_B,))]
    with pytest.raises(DeployFailed) as failure:
        roll_out(run, batches, hook)

    message = str(failure.value)
    assert "Rollback succeeded on all" not in message
    assert f"ROLLBACK NOT RUN on 1 instance(s), still on the new version: {INSTANCE_A}" in message
    assert "was still draining" in message
    assert [sent.instance_ids for sent in ssm.phase("rollback")] == [[INSTANCE_B]]
    assert run.outcome.rollback.status is PhaseStatus.FAILED
    assert [b.outcome for b in run.outcome.batches] == ["rollback not run", "rolled back"]


class RefusingSSM(FakeSSM):
    """SendCommand refused for one instance (e.g. terminated by its Auto Scaling group meanwhile)."""

    def send_command(self, **request: Any) -> dict[str, Any]:
        if INSTANCE_B in request.get("InstanceIds", []) and "rollback" not in request["Comment"]:
            # AWS's answer, a 400: the pipe knows nothing was created
            refusal: Any = {
                "Error": {"Code": "InvalidInstanceId", "Message": "Instances not in a valid state"},
                "ResponseMetadata": {"HTTPStatusCode": 400},
            }
            raise ClientError(refusal, "SendCommand")
        return super().send_command(**request)


def test_a_send_refused_in_a_later_batch_still_rolls_back_the_batches_before_it(tmp_path: Path) -> None:
    ssm = RefusingSSM()
    run = make_run(ssm, tmp_path, rollback_commands="./undo.sh", rollout=RolloutSettings(batch_size="1"))
    batches = [Batch(1, 3, (INSTANCE_A,)), Batch(2, 3, (INSTANCE_B,)), Batch(3, 3, (INSTANCE_C,))]

    with pytest.raises(DeployFailed) as failure:
        roll_out(run, batches)

    message = str(failure.value)
    assert message.startswith("Batch 2/3 (1 instance(s)): ")
    assert "Rollback succeeded on all 1 instance(s)" in message
    assert f"Batch(es) 3 (1 instance(s)) were never started and still run the old version: {INSTANCE_C}" in message
    assert [sent.instance_ids for sent in ssm.phase("rollback")] == [[INSTANCE_A]]


def test_a_stop_during_the_failing_batchs_rollback_keeps_it_stopped_and_the_batch_before_left_on_the_new_version(
    tmp_path: Path,
) -> None:
    stops = StopRequests()
    ssm = FakeSSM(
        exit_codes=lambda phase, instance: 3 if phase == "deploy" and instance == INSTANCE_B else 0,
        stops=stops,
        stop_during_send="rollback",
    )
    run = make_run(ssm, tmp_path, rollback_commands="./undo.sh", rollout=RolloutSettings(batch_size="1"))
    batches = [Batch(1, 3, (INSTANCE_A,)), Batch(2, 3, (INSTANCE_B,)), Batch(3, 3, (INSTANCE_C,))]

    with pytest.raises(DeployStopped) as stopped:
        roll_out(run, batches)

    message = str(stopped.value)
    assert "The rollback did not finish" in message
    assert f"Batch(es) 3 (1 instance(s)) were never started and still run the old version: {INSTANCE_C}." in message
    assert f"Batch(es) 1 (1 instance(s)) still run the new version: {INSTANCE_A}." in message
    assert [sent.instance_ids for sent in ssm.phase("rollback")] == [[INSTANCE_B]]
    assert [b.outcome for b in run.outcome.batches] == ["left on the new version", "rollback stopped", "not started"]
    assert run.outcome.rollback.status is PhaseStatus.INTERRUPTED
    document, dotenv = result(run)
    assert document["failed_phase"] == "deploy"
    assert "SSM_DEPLOY_ROLLBACK='interrupted'" in dotenv


class GrowingGroup:
    """A RolloutScope whose group launches ``launched`` while the planned batches run (a scale-out), or
    cannot be read again when ``unreadable``."""

    def __init__(self, launched: list[str], unreadable: str = "") -> None:
        self.launched = launched
        self.unreadable = unreadable
        self.asked: list[list[str]] = []

    @contextmanager
    def holding(self, run: Execution) -> Iterator[None]:
        yield

    def departed(self, run: Execution, instance_ids: Sequence[str]) -> dict[str, str]:
        return {}

    def joined(self, run: Execution, covered: Sequence[str]) -> dict[str, str]:
        self.asked.append(list(covered))
        if self.unreadable:
            raise DeployFailed(self.unreadable)
        return {i: "launched by the group during the rollout" for i in self.launched if i not in covered}


def scaled_run(ssm: FakeSSM, tmp_path: Path, scope: GrowingGroup) -> Run:
    settings = make_settings(
        instance_ids=[INSTANCE_A, INSTANCE_B],
        stream_output=False,
        result_file=str(tmp_path / "result.json"),
        rollback_commands="./undo.sh",
        rollout=RolloutSettings(batch_size="1"),
    )
    clients = Clients(boto3.Session(region_name=REGION), REGION)
    clients.ssm = ssm  # type: ignore[assignment]
    return applying(planned(settings, scopes=(scope,)), clients, ssm.stops)


def test_an_instance_launched_during_the_rollout_gets_a_batch_of_its_own_through_the_hook(tmp_path: Path) -> None:
    ssm = FakeSSM()
    scope = GrowingGroup([INSTANCE_C])
    run = scaled_run(ssm, tmp_path, scope)
    entered: list[tuple[int, tuple[str, ...]]] = []

    @contextmanager
    def hook(_: Execution, batch: Batch) -> Iterator[None]:
        entered.append((batch.number, batch.instance_ids))
        yield

    message = roll_out(run, list(run.plan.batches), hook)

    assert entered == [(1, (INSTANCE_A,)), (2, (INSTANCE_B,)), (3, (INSTANCE_C,))]  # drained like the others
    assert [sent.instance_ids for sent in ssm.phase("deploy")] == [[INSTANCE_A], [INSTANCE_B], [INSTANCE_C]]
    assert scope.asked == [[INSTANCE_A, INSTANCE_B], [INSTANCE_A, INSTANCE_B, INSTANCE_C]]  # asked again after
    assert message == f"Deployed to 3 instance(s) ({INSTANCE_C} launched during the rollout)."
    assert run.targeted == [INSTANCE_A, INSTANCE_B, INSTANCE_C]  # the ledger's fleet covers it
    assert [record.instance_ids for record in run.outcome.batches][-1] == (INSTANCE_C,)


def test_a_failed_deploy_on_an_instance_launched_during_the_rollout_rolls_back_every_batch(tmp_path: Path) -> None:
    ssm = failing_on("deploy", INSTANCE_C)
    run = scaled_run(ssm, tmp_path, GrowingGroup([INSTANCE_C]))

    with pytest.raises(DeployFailed) as failure:
        roll_out(run, list(run.plan.batches))

    assert str(failure.value).startswith("Batch 3/3 (1 instance(s)): Deploy failed on 1 of 1 instance(s)")
    assert sorted(i for sent in ssm.phase("rollback") for i in sent.instance_ids) == sorted(IDS)


def test_a_group_that_cannot_tell_what_it_launched_fails_the_deploy_and_rolls_it_back(tmp_path: Path) -> None:
    ssm = FakeSSM()
    run = scaled_run(ssm, tmp_path, GrowingGroup([], unreadable="i-0launching is still being launched"))

    with pytest.raises(DeployFailed) as failure:
        roll_out(run, list(run.plan.batches))

    assert str(failure.value).startswith("i-0launching is still being launched")
    assert "Rollback succeeded on all 2 instance(s)" in str(failure.value)
    assert run.outcome.failed_phase == "scale-out"


def test_a_stop_while_a_batch_drains_names_the_load_balancer_as_the_phase_it_cut_short(tmp_path: Path) -> None:
    ssm = FakeSSM()
    run = make_run(ssm, tmp_path, rollback_commands="./undo.sh", rollout=RolloutSettings(batch_size="1"))

    @contextmanager
    def hook(_: Execution, batch: Batch) -> Iterator[None]:
        if batch.number == 2:
            run.stops.signal_name = "SIGTERM"
            run.stops.raise_stopped_if_requested(f"while {batch} was draining.")
        yield

    batches = [Batch(1, 2, (INSTANCE_A,)), Batch(2, 2, (INSTANCE_B, INSTANCE_C))]
    with pytest.raises(DeployStopped):
        roll_out(run, batches, hook)

    assert ssm.labels() == ["deploy"]  # batch 1 only; nothing after the stop
    document, dotenv = result(run)
    assert (document["interrupted_phase"], document["failed_phase"]) == ("load balancer", "load balancer")
    assert "SSM_DEPLOY_INTERRUPTED='load balancer'" in dotenv
    assert [batch["outcome"] for batch in document["batches"]] == ["deployed", "stopped"]


class StoppedWhileWaiting(GrowingGroup):
    """The pipeline is stopped while the rollout waits for instances the group is launching."""

    def joined(self, run: Execution, covered: Sequence[str]) -> dict[str, str]:
        run.stops.signal_name = "SIGTERM"
        run.stops.raise_stopped_if_requested("while waiting for i-0launching to be launched; nothing more was sent.")
        return {}


def test_a_stop_while_waiting_for_launched_instances_is_a_stop_not_a_failure_rolled_back(tmp_path: Path) -> None:
    ssm = FakeSSM()
    run = scaled_run(ssm, tmp_path, StoppedWhileWaiting([]))

    with pytest.raises(DeployStopped) as stopped:
        roll_out(run, list(run.plan.batches))

    assert "The rollback did not finish" not in str(stopped.value)
    assert ssm.phase("rollback") == []
    assert run.outcome.rollback.status is PhaseStatus.NOT_RUN
    document, _ = result(run)
    assert (document["interrupted_phase"], document["failed_phase"]) == ("scale-out", "scale-out")
