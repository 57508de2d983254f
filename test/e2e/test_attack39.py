"""The thirty-ninth outside attack (issue #17), on what changed last: ``current`` on a deleted release (the
deploys after ``ACTION: status`` said so), and containers judged through an APP_DIR
volume. Each test compares what each instance runs (``current`` on disk, the app over HTTP), what the
ledger says and what the step said (exit code, last line, ``ACTION: status``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from e2e.release_support import A, B, C, build_server
from e2e.test_attack30 import a_then_b, instance_with_entry, started_once
from e2e.test_attack35 import container
from e2e.test_ledger import entries as ledger_entries
from e2e.test_releases import APP_DIR, live, release_env
from standin import StandIn
from support import run_pipe

# ACTIVATE_COMMANDS that fail for release C only
FAIL_C = 'if [ "$(cat version.txt)" = C ]; then exit 3; fi'


def _a_and_b(standin: StandIn, tmp_path: Path, bucket: str, service: str) -> tuple[str, dict[str, str]]:
    """One instance where A then B went live; the step's environment for it (no ARTIFACT)."""
    (instance,) = standin.launch(1)
    env = release_env(standin, [instance], tmp_path, bucket, service, ACTIVATE_COMMANDS=FAIL_C)
    for number, version in (("1", "A"), ("2", "B")):
        run = run_pipe(env | {"ARTIFACT": build_server(tmp_path, version), "BITBUCKET_BUILD_NUMBER": number})
        assert run.returncode == 0, run.output
    return instance, env


# held
def test_after_status_said_current_names_a_deleted_release_previous_then_that_release_deploy_and_run_it(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """B live; B's directory deleted by hand (status: runs no release). ``RELEASE: previous`` goes to A and
    says so; ``RELEASE: B`` then installs B again from its artifact (its ready mark outlived its directory):
    each step, the disk, the server's files, the ledger and status agree."""
    instance, env = _a_and_b(standin, tmp_path, bucket, service)
    shutil.rmtree(standin.instance_path(instance, f"{APP_DIR}/releases/{B}"))
    status = run_pipe(env | {"ACTION": "status", "BITBUCKET_BUILD_NUMBER": "3"})
    assert status.returncode == 1 and f"Drift: {instance} runs no release" in status.output, status.output

    back = run_pipe(env | {"RELEASE": "previous", "BITBUCKET_BUILD_NUMBER": "4"})
    assert back.returncode == 0, back.output
    assert live(standin, instance) == "A"
    assert ledger_entries(standin, service)[-1]["status"] == "succeeded"
    assert ledger_entries(standin, service)[-1]["release"] == A

    again = run_pipe(env | {"RELEASE": B, "BITBUCKET_BUILD_NUMBER": "5"})
    after = run_pipe(env | {"ACTION": "status", "BITBUCKET_BUILD_NUMBER": "6"})

    assert again.returncode == 0, again.output
    assert live(standin, instance) == "B"  # its files are there again
    assert ledger_entries(standin, service)[-1]["release"] == B
    assert after.returncode == 0 and f"✔ No drift: 1 instance(s) run {B}" in after.output, after.output


# held
def test_a_deploy_over_a_dangling_current_that_fails_says_where_the_instance_stays_and_the_ledger_agrees(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """B live, B's directory deleted by hand; C's activation fails: there is nothing to switch back to (B is
    gone). The step fails, the instance stays on C (said), the ledger does not say B or C is live there
    while the instance serves neither, and status says what the instance runs."""
    instance, env = _a_and_b(standin, tmp_path, bucket, service)
    shutil.rmtree(standin.instance_path(instance, f"{APP_DIR}/releases/{B}"))
    run = run_pipe(env | {"ARTIFACT": build_server(tmp_path, "C"), "BITBUCKET_BUILD_NUMBER": "3"})
    status = run_pipe(env | {"ACTION": "status", "BITBUCKET_BUILD_NUMBER": "4"})
    on_disk = os.readlink(standin.instance_path(instance, f"{APP_DIR}/current"))

    assert run.returncode == 1, run.output
    assert "Deployed" not in run.output.splitlines()[-1], run.output
    assert f"the release before it (releases/{B}) is gone: current stays on {C}" in run.output, run.output
    assert on_disk == f"releases/{C}"
    assert status.returncode == 1, status.output
    assert f"Drift: {instance} runs {C}" in status.output, status.output


def test_a_container_of_a_copy_of_app_dir_named_like_it_is_not_judged(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    # held: `docker run -v /srv/web-api-old:/srv/container-app ... python3 /srv/container-app/current/server.py`
    # where /srv/web-api-old is a copy of APP_DIR (cp -a, its own releases/ and current): another app, left
    # running; B's deploy must pass, not judge it through this APP_DIR's current
    port = 18390
    copy = f"{APP_DIR}-old"
    command, prepare = container(copy, f"cd / && exec python3 /srv/container-app/current/server.py {port}")
    activate = started_once(command, port, prepare=f"rm -rf {copy} && cp -a {APP_DIR} {copy} && {prepare}")
    instance_id, env = instance_with_entry(standin, tmp_path, bucket, service, "server.py", ACTIVATE_COMMANDS=activate)
    second, what_serves = a_then_b(standin, instance_id, env, port)

    assert what_serves == "A"  # the copy's A
    assert second.returncode == 0, second.output
    assert "processes verified" in second.output, second.output
    assert live(standin, instance_id) == "B"
    assert ledger_entries(standin, service)[-1]["status"] == "succeeded"
