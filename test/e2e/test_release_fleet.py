"""Release mode reads the fleet instead of inferring it: after a deploy or a rollback, however its
invocations ended (timed out, agent lost, stopped), the pipe knows where each instance's ``current``
points, rolls back every instance that is not on the release live before (and only those), and
says which instance runs which release. Instances are real processes with a real APP_DIR (the
stand-in maps /srv), so ``current`` is checked on disk."""

from __future__ import annotations

import json
import re
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e.release_support import A, B, build_bare
from e2e.test_releases import live, release_env
from standin import StandIn
from support import LivePipe, kill_instance_processes, run_pipe


@dataclass
class Shop:
    """A service's bucket and ledger, and the build's clone directory (which holds the result file)."""

    standin: StandIn
    clone: Path
    bucket: str
    service: str

    def env(self, ids: list[str], **variables: str) -> dict[str, str]:
        return release_env(self.standin, ids, self.clone, self.bucket, self.service, **variables)

    def ship(self, ids: list[str], version: str, build_number: str, **variables: str) -> str:
        """Deploy ``version`` as build ``build_number``; returns the artifact's name."""
        artifact = build_bare(self.clone, version)
        done = run_pipe(self.env(ids, ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER=build_number, **variables))
        assert done.returncode == 0, done.output
        return artifact


@pytest.fixture
def shop(standin: StandIn, tmp_path: Path, bucket: str, service: str) -> Shop:
    return Shop(standin, tmp_path, bucket, service)


def b_hanging_on(shop: Shop, ids: list[str], instance_id: str, **variables: str) -> dict[str, str]:
    """Release B everywhere, whose ACTIVATE_COMMANDS hang on ``instance_id`` (its current already switched)."""
    activate = (
        'echo "activated $(cat version.txt)"\n'
        f'if [ "$(cat version.txt)" = B ] && [ "$AWS_SSM_INSTANCE_ID" = "{instance_id}" ]; then\n'
        "  echo holding; sleep 600\n"
        "fi"
    )
    artifact = build_bare(shop.clone, "B")
    return shop.env(ids, ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="2", ACTIVATE_COMMANDS=activate, **variables)


def test_a_deploy_that_times_out_after_its_switch_is_switched_back_too(standin: StandIn, shop: Shop) -> None:
    good, slow = standin.launch(2)
    shop.ship([good, slow], "A", "1")
    run = run_pipe(b_hanging_on(shop, [good, slow], slow, EXECUTION_TIMEOUT="30"), timeout=300)

    assert run.returncode == 1, run.output
    assert (live(standin, good), live(standin, slow)) == ("A", "A")
    assert f"{slow}: TimedOut/ExecutionTimedOut" in run.output
    assert f"{slow} | ssm-deploy: current release: {B}" in run.output  # read from the instance, not guessed
    assert "Rollback succeeded on all 2 instance(s)." in run.output
    assert f"Now {good}, {slow} run {A} (the release live before)." in run.output


def test_an_instance_whose_agent_is_lost_after_its_switch_is_read_and_switched_back_once_it_answers(
    standin: StandIn, shop: Shop
) -> None:
    good, lost = standin.launch(2)
    shop.ship([good, lost], "A", "1")
    pipe = LivePipe(b_hanging_on(shop, [good, lost], lost, AGENT_LOST_TIMEOUT="5"))
    try:
        pipe.wait_for_line(f"{lost} | holding", timeout=120)
        standin.service.lose_instance(lost)  # its deploy dies with it, after the switch
        pipe.wait_for_line(f"{lost}: giving up", timeout=120)
    finally:
        standin.service.restore_instance(lost)  # the agent is back: it answers the read
    run = pipe.finish(timeout=300)

    assert run.returncode == 1, run.output
    assert (live(standin, good), live(standin, lost)) == ("A", "A")
    assert f"{lost}: InProgress, given up: agent ConnectionLost" in run.output
    assert "Reading /srv/web-api/current on 1 instance(s) whose command ended without saying" in run.output
    assert f"Now {good}, {lost} run {A} (the release live before)." in run.output


@pytest.mark.parametrize("how", ["same build again", "RELEASE"])
def test_a_redeploy_of_the_live_release_that_fails_its_health_check_stays_on_it(
    standin: StandIn, shop: Shop, how: str
) -> None:
    ids = standin.launch(2)
    shop.ship(ids, "A", "1")
    artifact = shop.ship(ids, "B", "2")
    again = {"ARTIFACT": artifact, "BITBUCKET_BUILD_NUMBER": "2"} if how == "same build again" else {"RELEASE": B}
    env = shop.env(ids, HEALTHCHECK_COMMANDS="exit 1", HEALTHCHECK_RETRIES="1", **again)
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert [live(standin, instance_id) for instance_id in ids] == ["B", "B"]  # never back to A
    assert "the health check failed on 2 of 2 instance(s)" in run.output
    assert (
        "Nothing was rolled back: no instance's current points at a release other than the one that was live before."
        in run.output
    )
    assert f"Now {ids[0]}, {ids[1]} run {B} (the release live before, deployed again)." in run.output


def test_a_stop_during_a_rolling_rollback_reports_it_ran_and_names_the_batch_left_on_the_new_release(
    standin: StandIn, shop: Shop
) -> None:
    first, second, third = standin.launch(3)
    shop.ship([first, second, third], "A", "1")
    standin.instance_path(second, "/srv/hold-rollback").touch()  # its switch back to A hangs in the activation
    env = shop.env(
        [first, second, third],
        ARTIFACT=build_bare(shop.clone, "B"),
        BITBUCKET_BUILD_NUMBER="2",
        BATCH_SIZE="1",
        HEALTHCHECK_COMMANDS=f'[ "$AWS_SSM_INSTANCE_ID" != "{third}" ]',
        HEALTHCHECK_RETRIES="1",
        ACTIVATE_COMMANDS='echo "activated $(cat version.txt)"\n'
        'if [ "$(cat version.txt)" = A ] && [ -e /srv/hold-rollback ]; then echo holding-rollback; sleep 600; fi',
    )
    pipe = LivePipe(env)
    pipe.wait_for_line(f"{second} | holding-rollback", timeout=180)
    pipe.signal(signal.SIGTERM)
    run = pipe.finish(timeout=300)

    assert run.returncode == 1, run.output
    assert (live(standin, first), live(standin, second), live(standin, third)) == ("B", "A", "A")
    assert "The rollback did not finish" in run.output
    assert f"Batch(es) 1 (1 instance(s)) still run the new version: {first}." in run.output
    assert f"{first} runs {B} (the new release: the pipeline was stopped before its rollback)" in run.output
    document = json.loads((shop.clone / "ssm-deploy-result.json").read_text())
    assert [batch["outcome"] for batch in document["batches"]] == [
        "left on the new version",
        "rollback stopped",
        "rolled back",
    ]
    assert document["rollback"] == "interrupted"
    assert document["fleet"] == {first: B, second: A, third: A}
    dotenv = (shop.clone / "ssm-deploy-result.json.env").read_text()
    assert "SSM_DEPLOY_ROLLBACK='interrupted'" in dotenv


def test_a_process_gone_stale_after_the_activation_fails_the_health_check_and_is_switched_back(
    standin: StandIn, shop: Shop
) -> None:
    """The deploy's own process check passed; then a process of the replaced release appeared (as a
    worker respawned from the old directory would). The health check passes, the process check after
    it does not: exit 90, and the rollback switches the instance back with the others."""
    good, stale = standin.launch(2)
    shop.ship([good, stale], "A", "1")
    start_stale = (
        f'if [ "$AWS_SSM_INSTANCE_ID" = "{stale}" ] && [ ! -e /srv/stale.pid ]; then\n'
        f"  (cd /srv/web-api/releases/{A} && exec tail -f version.txt) </dev/null >/dev/null 2>&1 &\n"
        "  echo $! > /srv/stale.pid\n"
        "fi"
    )
    env = shop.env(
        [good, stale],
        ARTIFACT=build_bare(shop.clone, "B"),
        BITBUCKET_BUILD_NUMBER="2",
        HEALTHCHECK_COMMANDS=start_stale,
        HEALTHCHECK_RETRIES="1",
    )
    try:
        run = run_pipe(env, timeout=300)
    finally:
        kill_instance_processes(standin, stale, "/srv/stale.pid")

    assert run.returncode == 1, run.output
    assert f"the health check failed on 1 of 2 instance(s): {stale}: Failed (exit 90)" in run.output
    assert f"Exit 90 on {stale}: a process still runs a replaced release" in run.output
    assert f"runs release {A}, not {B}" in run.output
    assert "Rollback succeeded on all 2 instance(s)." in run.output
    assert (live(standin, good), live(standin, stale)) == ("A", "A")


def test_an_instance_that_never_answers_is_unknown_and_treated_as_possibly_switched(
    standin: StandIn, shop: Shop
) -> None:
    good, gone = standin.launch(2)
    shop.ship([good, gone], "A", "1")
    pipe = LivePipe(b_hanging_on(shop, [good, gone], gone, AGENT_LOST_TIMEOUT="2"))
    try:
        pipe.wait_for_line(f"{gone} | holding", timeout=120)
        standin.service.lose_instance(gone)  # and it never comes back
        run = pipe.finish(timeout=300)
    finally:
        standin.service.restore_instance(gone)

    assert run.returncode == 1, run.output
    assert f"Which release /srv/web-api/current points to on {gone} is unknown" in run.output
    assert "Switching 2 instance(s) back to the release that was live before" in run.output  # unknown included
    # the status the pipe read as it gave up: Pending, or Cancelled once its CancelCommand was seen (AWS
    # cancels asynchronously; on a loaded machine the last listing can come first)
    assert re.search(
        rf"ROLLBACK FAILED on 1 of 2 instance\(s\): {gone}: (Pending|Cancelling|Cancelled), given up: agent "
        "ConnectionLost",
        run.output,
    ), run.output
    assert run.output.count("Reading /srv/web-api/current on 1 instance(s)") == 1  # not again after its rollback
    assert f"Now {good} runs {A} (the release live before); {gone}: release unknown" in run.output
    document = json.loads((shop.clone / "ssm-deploy-result.json").read_text())
    assert document["fleet"] == {good: A, gone: "unknown"}
    assert live(standin, good) == "A"


def test_a_first_release_that_fails_its_health_check_is_left_live_and_the_step_says_so(
    standin: StandIn, shop: Shop
) -> None:
    ids = standin.launch(2)
    env = shop.env(ids, ARTIFACT=build_bare(shop.clone, "A"), HEALTHCHECK_COMMANDS="exit 1", HEALTHCHECK_RETRIES="1")
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert [live(standin, instance_id) for instance_id in ids] == ["A", "A"]
    assert f"Nothing was rolled back: no release was live before this one, so {ids[0]}, {ids[1]} stayed on it." in (
        run.output
    )
    assert "Switching" not in run.output  # no switch back was sent
    document = json.loads((shop.clone / "ssm-deploy-result.json").read_text())
    assert document["rollback"] == "not run"
