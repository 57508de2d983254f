"""Stage, then roll: a rolling release deploy behind the stand-in's load balancer prepares the release on
every instance while all of them serve, before the first drain. Real instances with a real APP_DIR
(the stand-in maps /srv), real target health from HTTP health checks."""

from __future__ import annotations

import collections
import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e.release_support import A, B, build_bare
from e2e.test_load_balancer import Fleet, every_target_in_service, make_fleet
from e2e.test_releases import APP_DIR, live, release_env
from standin import StandIn
from support import LivePipe, run_pipe, wait_until

DEREGISTER = "elasticloadbalancing:DeregisterTargets"
COMMANDS_LOG = "/srv/commands.log"
# COMMANDS that record the release they run for, once per run, on the instance
RECORDING = f'echo "$SSM_DEPLOY_RELEASE" >> {COMMANDS_LOG}'


@dataclass
class Rollout:
    """Two instances behind a target group, with a service's bucket and ledger and the build's clone."""

    standin: StandIn
    fleet: Fleet
    clone: Path
    bucket: str
    service: str

    def env(self, version: str, build_number: str, **variables: str) -> dict[str, str]:
        """A rolling deploy of the build of ``version`` as build ``build_number``."""
        ids, artifact = self.fleet.ids, build_bare(self.clone, version)
        more = {"TARGET_GROUPS": self.fleet.group_name, "BITBUCKET_BUILD_NUMBER": build_number, **variables}
        return release_env(self.standin, ids, self.clone, self.bucket, self.service, ARTIFACT=artifact, **more)

    def ship_a(self, **variables: str) -> None:
        """Release A live on the whole fleet."""
        done = run_pipe(self.env("A", "1", **variables), timeout=300)
        assert done.returncode == 0, done.output


@pytest.fixture
def rollout(standin: StandIn, tmp_path: Path, bucket: str, service: str) -> Rollout:
    return Rollout(standin, make_fleet(standin, 2), tmp_path, bucket, service)


def commands_run(standin: StandIn, instance_id: str) -> list[str]:
    path = standin.instance_path(instance_id, COMMANDS_LOG)
    return path.read_text().split() if path.exists() else []


@contextmanager
def killed_on_failure(pipe: LivePipe) -> Iterator[LivePipe]:
    """A failing test leaves no pipe behind (the stand-in it talks to goes away with the session)."""
    try:
        yield pipe
    except BaseException:
        pipe.process.kill()
        raise


def all_staging(standin: StandIn, fleet: Fleet) -> bool:
    """Whether COMMANDS touched /srv/staging on every instance."""
    return all(standin.instance_path(instance_id, "/srv/staging").exists() for instance_id in fleet.ids)


def made_on_instances(standin: StandIn) -> collections.Counter[str]:
    """The AWS calls the instances made (the CLI in the release scripts), not the pipe's or the tests'."""
    return standin.calls_snapshot() - standin.calls_snapshot(include_instances=False)


def test_the_release_is_staged_on_every_instance_while_all_of_them_serve(
    standin: StandIn, rollout: Rollout, tmp_path: Path
) -> None:
    fleet, result = rollout.fleet, tmp_path / "result.json"
    # COMMANDS say they run, then wait for the test, which asks the load balancer meanwhile
    commands = f"{RECORDING}\ntouch /srv/staging\nwhile [ ! -e /srv/go ]; do sleep 0.1; done"
    with killed_on_failure(LivePipe(rollout.env("A", "1", COMMANDS=commands, RESULT_FILE=str(result)))) as pipe:
        wait_until(lambda: all_staging(standin, fleet), "COMMANDS on every instance", 120)
        during = standin.target_states(fleet.group_arn)
        switched = [standin.instance_path(i, f"{APP_DIR}/current").is_symlink() for i in fleet.ids]
        for instance_id in fleet.ids:
            standin.instance_path(instance_id, "/srv/go").touch()
        run = pipe.finish(timeout=300)

    assert during == {instance_id: "healthy" for instance_id in fleet.ids}
    assert switched == [False, False]
    assert run.returncode == 0, run.output
    assert f"Staging release {A} on 2 instance(s) while they serve" in run.output
    for instance_id in fleet.ids:
        assert live(standin, instance_id) == "A"
        assert commands_run(standin, instance_id) == [A]  # at staging only, not again in its batch
        assert f"{instance_id} | ssm-deploy: release {A} is already on this instance, unchanged since" in run.output
    document = json.loads(result.read_text())
    assert document["stage"] == "succeeded"
    assert sorted(row["instance_id"] for row in document["stage_instances"]) == sorted(fleet.ids)
    assert document["stage_seconds"] > 0
    assert sorted(document["out_of_service_seconds"]) == sorted(fleet.ids)
    assert all(seconds > 0 for seconds in document["out_of_service_seconds"].values())
    assert "Out of service" in run.output


def test_a_release_that_fails_to_stage_on_one_instance_drains_and_switches_nothing(
    standin: StandIn, rollout: Rollout, tmp_path: Path
) -> None:
    fleet, result = rollout.fleet, tmp_path / "result.json"
    good, bad = fleet.ids
    rollout.ship_a()
    commands = f'if [ "$AWS_SSM_INSTANCE_ID" = "{bad}" ]; then echo "npm ci failed" >&2; exit 3; fi'
    before = standin.calls_snapshot(include_instances=False)
    run = run_pipe(rollout.env("B", "2", COMMANDS=commands, RESULT_FILE=str(result)), timeout=300)
    calls = standin.calls_snapshot(include_instances=False) - before

    assert run.returncode == 1, run.output
    assert f"Staging release {B} failed on 1 of 2 instance(s): {bad}: Failed (exit 84)" in run.output
    assert f"Exit 84 on {bad}: COMMANDS failed in the new release" in run.output
    assert f"Nothing was drained or switched: every instance still serves {A}." in run.output
    assert calls[DEREGISTER] == 0
    assert "draining from" not in run.output
    assert every_target_in_service(standin, fleet)
    assert (live(standin, good), live(standin, bad)) == ("A", "A")
    # the copy staged on the good instance stays for a retry (or KEEP_RELEASES); the failed one is gone
    assert standin.instance_path(good, f"{APP_DIR}/releases/{B}").is_dir()
    assert not standin.instance_path(bad, f"{APP_DIR}/releases/{B}").exists()
    document = json.loads(result.read_text())
    assert (document["failed_phase"], document["stage"]) == ("stage", "failed")
    assert document["failed_instances"] == [{"instance_id": bad, "phases": ["stage"]}]
    assert [batch["outcome"] for batch in document["batches"]] == ["not started", "not started"]
    assert document["instances"] == []  # no deploy command was sent
    assert document["fleet"] == {good: A, bad: A}  # what each instance runs, as after every other failure


def test_a_staged_release_changed_before_its_batch_is_refused_and_the_rollback_only_switches(
    standin: StandIn, rollout: Rollout
) -> None:
    first, second = rollout.fleet.ids
    # B's activation on the first instance waits for the test: the second's staged copy is changed meanwhile
    activate = (
        'echo "activated $(cat version.txt)"\n'
        'if [ "$(cat version.txt)" = B ] && [ ! -e /srv/go ]; then\n'
        "  echo holding; while [ ! -e /srv/go ]; do sleep 0.1; done\n"
        "fi"
    )
    rollout.ship_a(COMMANDS=RECORDING, ACTIVATE_COMMANDS=activate)
    before = made_on_instances(standin)
    with killed_on_failure(LivePipe(rollout.env("B", "2", COMMANDS=RECORDING, ACTIVATE_COMMANDS=activate))) as pipe:
        pipe.wait_for_line(f"{first} | holding", timeout=180)
        standin.instance_path(second, f"{APP_DIR}/releases/{B}/version.txt").write_text("B, changed\n")
        standin.instance_path(first, "/srv/go").touch()
        run = pipe.finish(timeout=300)
    downloads = (made_on_instances(standin) - before)["s3:GetObject"]

    assert run.returncode == 1, run.output
    assert f"ssm-deploy: release {B} in {APP_DIR}/releases/{B} changed after this deploy staged it (now: " in run.output
    assert f"Exit 92 on {second}: the release this deploy staged on the instance changed" in run.output
    assert "Rollback succeeded on all 1 instance(s)." in run.output
    assert (live(standin, first), live(standin, second)) == ("A", "A")
    assert every_target_in_service(standin, rollout.fleet)
    # COMMANDS ran for A at its deploy and for B at its staging: never in a batch, never in the rollback
    assert commands_run(standin, first) == commands_run(standin, second) == [A, B]
    assert downloads == 2  # B's staging on each instance; the batches and the rollback downloaded nothing


def test_a_stop_during_staging_leaves_every_instance_on_the_old_release_and_in_service(
    standin: StandIn, rollout: Rollout
) -> None:
    fleet = rollout.fleet
    rollout.ship_a()
    before = standin.calls_snapshot(include_instances=False)
    with killed_on_failure(LivePipe(rollout.env("B", "2", COMMANDS="touch /srv/staging\nsleep 600"))) as pipe:
        wait_until(lambda: all_staging(standin, fleet), "COMMANDS on every instance", 120)
        pipe.signal(signal.SIGTERM)
        run = pipe.finish(timeout=120)
    calls = standin.calls_snapshot(include_instances=False) - before

    assert run.returncode != 0, run.output
    assert "SIGTERM" in run.output
    assert "were never started and still run the old version" in run.output
    assert calls[DEREGISTER] == 0
    assert every_target_in_service(standin, fleet)
    assert [live(standin, instance_id) for instance_id in fleet.ids] == ["A", "A"]


def test_with_stage_first_off_each_batch_installs_the_release_while_it_is_out_of_service(
    standin: StandIn, rollout: Rollout, tmp_path: Path
) -> None:
    fleet, result = rollout.fleet, tmp_path / "result.json"
    first, second = fleet.ids
    commands = f"{RECORDING}\ntouch /srv/staging\nwhile [ ! -e /srv/go ]; do sleep 0.1; done"
    env = rollout.env("A", "1", COMMANDS=commands, STAGE_FIRST="false", RESULT_FILE=str(result))
    with killed_on_failure(LivePipe(env)) as pipe:
        installing = [standin.instance_path(i, "/srv/staging") for i in fleet.ids]
        wait_until(lambda: any(path.exists() for path in installing), "COMMANDS on an instance", 120)
        during = standin.target_states(fleet.group_arn)
        started = [i for i, path in zip(fleet.ids, installing, strict=True) if path.exists()]
        for instance_id in fleet.ids:
            standin.instance_path(instance_id, "/srv/go").touch()
        run = pipe.finish(timeout=300)

    assert started == [first]  # only the first batch's instance, not every one at once
    assert during.get(first, "gone") != "healthy"  # drained: COMMANDS run out of service
    assert during[second] == "healthy"
    assert run.returncode == 0, run.output
    assert "Staging release" not in run.output
    assert "staging:   off (STAGE_FIRST: 'false')" in run.output
    for instance_id in fleet.ids:
        assert live(standin, instance_id) == "A"
        assert commands_run(standin, instance_id) == [A]  # once, in its batch
    document = json.loads(result.read_text())
    assert document["stage"] == "not run"
    assert sorted(document["out_of_service_seconds"]) == sorted(fleet.ids)
