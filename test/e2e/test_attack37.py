"""The thirty-seventh outside attack (issue #17), on rollbacks, ``ACTION: status`` and the ledger: a target
that fell ill after its batch came back (the wording of the rollback's failure), ``current`` gone missing
or not a symlink, a rollback cut short, two services in one fleet. Each test compares what each instance
runs (``current`` on disk), what the ledger says and what the step said."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from e2e.release_support import A, B, build, build_server
from e2e.test_attack3 import wait_for_port
from e2e.test_attack9 import ACTIVATE, rolling_b, ship_a
from e2e.test_attack_found import served
from e2e.test_attack_held import fleet_on_disk
from e2e.test_load_balancer import make_fleet
from e2e.test_releases import APP_DIR, release_env
from standin import StandIn
from support import LivePipe, instance_process, kill_instance_processes, run_pipe

WEB_PORT, ADMIN_PORT = 18371, 18372
GO = "/srv/go-on"  # on an instance: its held activation of B goes on (and fails)


def test_a_target_that_fell_ill_after_its_batch_came_back_is_not_said_to_be_ill_before_the_deploy(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """Batch 1 comes back healthy on B; while batch 2 deploys, batch 1's app goes down (on B: a crash, a
    full disk) and the load balancer marks it unhealthy; batch 2 fails, and batch 1 is switched back but
    stays unhealthy. Before this deploy took it out (batch 1, forward), it was healthy: the verdict must not
    say it was already unhealthy then; it was unhealthy before its switch back."""
    fleet = make_fleet(standin, 2)
    first, second = fleet.ids
    ship_a(standin, fleet, tmp_path, bucket, service)
    hold = (
        f'{ACTIVATE}\nif [ "$(cat version.txt)" = B ] && [ "$AWS_SSM_INSTANCE_ID" = "{second}" ]; then\n'
        f"  echo holding-b; while [ ! -e {GO} ]; do sleep 0.2; done; exit 3\nfi"
    )
    env = rolling_b(standin, fleet, tmp_path, bucket, service, ACTIVATE_COMMANDS=hold, HEALTHY_TIMEOUT="8")
    pipe = LivePipe(env)
    pipe.wait_for_line(f"{second} | holding-b", timeout=240)
    standin.app_up(first, up=False)  # batch 1, healthy on B a moment ago, falls ill
    standin.wait_target_states(fleet.group_arn, [first], "unhealthy", timeout=60)
    standin.instance_path(second, GO).touch()
    run = pipe.finish(timeout=300)

    assert run.returncode == 1, run.output
    assert fleet_on_disk(standin, fleet.ids) == dict.fromkeys(fleet.ids, A), run.output
    assert f"{first} in {fleet.group_name}: unhealthy" in run.output, run.output
    assert "already unhealthy in it before this deploy took it out" not in run.output, run.output
    assert "it fell ill after this deploy put it back healthy" in run.output, run.output


def _point(link: Path, target: str) -> None:
    temporary = link.with_name(".current-by-hand")
    os.symlink(target, temporary)
    os.replace(temporary, link)


def test_status_says_an_instance_whose_current_names_a_deleted_release_runs_none_and_a_trailing_slash_runs_it(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """B live on three instances; then by hand: B's directory deleted on the first (``current`` dangles), the
    second's ``current`` pointed again with ``ln -sfn /srv/web-api/releases/B/ current`` (absolute, the slash a
    shell's completion adds), the third's ``current`` replaced by a copy of B (a directory, no symlink).
    The first runs nothing (a restart fails): drift, said so. The second runs B: no drift. The third's
    ``current`` names no release (a deploy refuses it, exit 80): drift, as no release, and why."""
    ids = standin.launch(3)
    for number, version in (("1", "A"), ("2", "B")):
        env = release_env(
            standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, version), BITBUCKET_BUILD_NUMBER=number
        )
        assert run_pipe(env).returncode == 0
    dangling, slashed, directory = ids
    shutil.rmtree(standin.instance_path(dangling, f"{APP_DIR}/releases/{B}"))
    _point(standin.instance_path(slashed, f"{APP_DIR}/current"), f"{APP_DIR}/releases/{B}/")
    current = standin.instance_path(directory, f"{APP_DIR}/current")
    current.unlink()
    shutil.copytree(standin.instance_path(directory, f"{APP_DIR}/releases/{B}"), current)
    env = release_env(standin, ids, tmp_path, bucket, service, ACTION="status", BITBUCKET_BUILD_NUMBER="3")
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert f"{dangling} | ssm-deploy: {APP_DIR}/current points at releases/{B}, which is missing" in run.output
    assert f"Drift: {dangling} runs no release; the ledger says {B} is live" in run.output, run.output
    assert f"Drift: {slashed}" not in run.output, run.output
    assert f"Drift: {directory} runs no release" in run.output, run.output
    assert f"{directory} | ssm-deploy: {APP_DIR}/current exists and is not a symlink" in run.output, run.output
    assert f"✖ Drift on 2 of 3 instance(s) ({dangling}, {directory})" in run.output, run.output
    fleet = json.loads((tmp_path / "ssm-deploy-result.json").read_text())["fleet"]
    assert fleet == {dangling: "none", slashed: B, directory: "none"}, fleet


def _serving(app_dir: str, pid_file: str, port: int, fail_b_on: str = "") -> str:
    """ACTIVATE_COMMANDS: restart the release's server (its working directory the release, listening on
    ``port``); with ``fail_b_on``, the activation of B fails on that instance after the restart."""
    fail = (
        f'if [ "$(cat version.txt)" = B ] && [ "$AWS_SSM_INSTANCE_ID" = "{fail_b_on}" ]; then exit 3; fi\n'
        if fail_b_on
        else ""
    )
    return (
        f"if [ -s {pid_file} ]; then kill $(cat {pid_file}) 2>/dev/null; sleep 0.3; fi\n"
        f"(cd {app_dir}/current && exec python3 server.py {port}) </dev/null >/dev/null 2>&1 &\n"
        f"echo $! > {pid_file}\n{wait_for_port(port)}\n{fail}"
    )


def test_one_services_rollback_leaves_the_other_service_in_an_app_dir_named_like_it_alone(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """Two services on the same two instances, APP_DIR /srv/web-api and /srv/web-api-admin (the one's path a
    prefix of the other's name), each with a server started from its release. web-api's B fails its activation
    on the second instance (batch 2): batch 1 switches back to A. The admin service's ``current``, its server
    (same process, same release) and its status stay as they were (held)."""
    ids = standin.launch(2)
    _first, second = ids
    admin_dir, admin_service = f"{APP_DIR}-admin", f"{service}-admin"
    admin = release_env(
        standin,
        ids,
        tmp_path,
        bucket,
        admin_service,
        APP_DIR=admin_dir,
        ARTIFACT=build_server(tmp_path, "X"),
        BITBUCKET_BUILD_NUMBER="7",
        ACTIVATE_COMMANDS=_serving(admin_dir, "/srv/admin.pid", ADMIN_PORT),
    )
    try:
        assert run_pipe(admin, timeout=300).returncode == 0
        pids = {i: instance_process(standin, i, "/srv/admin.pid") for i in ids}
        for number, version in (("1", "A"), ("2", "B")):
            env = release_env(
                standin,
                ids,
                tmp_path,
                bucket,
                service,
                ARTIFACT=build_server(tmp_path, version),
                BITBUCKET_BUILD_NUMBER=number,
                BATCH_SIZE="1",
                ACTIVATE_COMMANDS=_serving(APP_DIR, "/srv/web.pid", WEB_PORT, fail_b_on=second),
            )
            run = run_pipe(env, timeout=300)
        admin_disk = {i: os.readlink(standin.instance_path(i, f"{admin_dir}/current")) for i in ids}
        served_now = {i: (served(standin, i, WEB_PORT), served(standin, i, ADMIN_PORT)) for i in ids}
        admin_pids = {i: instance_process(standin, i, "/srv/admin.pid") for i in ids}
        status = run_pipe(admin | {"ACTION": "status", "BITBUCKET_BUILD_NUMBER": "8"})
    finally:
        for i in ids:
            kill_instance_processes(standin, i, "/srv/web.pid", "/srv/admin.pid")

    assert run.returncode == 1, run.output
    assert "Rollback succeeded on all 1 instance(s)" in run.output, run.output
    assert fleet_on_disk(standin, ids) == dict.fromkeys(ids, A), run.output
    assert served_now == dict.fromkeys(ids, ("A", "X")), run.output
    assert admin_disk == dict.fromkeys(ids, "releases/000007-0123456")
    assert admin_pids == pids  # never restarted, never killed
    assert status.returncode == 0, status.output
    assert "✔ No drift: 2 instance(s) run 000007-0123456" in status.output, status.output
