"""The fiftieth outside attack on the verdict (issue #17), aimed at VERIFY_PROCESSES and deleted releases on
the stand-in's real instances: attack 44's record of removed releases (`.ssm-deploy/removed`) proven where
`RELEASE: previous` installs a changed release again under a server of its old copy, a container whose
volume is a directory with a blank inside a release (mountinfo escapes it as `\\040`), and a process an
operator left in a release directory since pruned.
Each test compares the three truths: what the instance runs (``current`` on disk, the app asked over
HTTP), what the ledger says is live, and what the step said (exit code, last line, result file,
``ACTION: status``)."""

from __future__ import annotations

import json
from pathlib import Path

from e2e.release_support import A, B
from e2e.test_attack20 import one_instance
from e2e.test_attack30 import a_then_b, instance_with_entry, started_once
from e2e.test_attack35 import VOLUME
from e2e.test_attack_found import served
from e2e.test_ledger import entries as ledger_entries
from e2e.test_releases import APP_DIR, live
from standin import StandIn
from support import kill_instance_processes, run_pipe


def test_release_previous_installing_a_changed_release_again_under_a_server_of_its_old_copy_fails(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    # held (attack 44's fix): a unit's ExecStart=/usr/bin/python3 /srv/web-api/releases/<A>/server.py from /,
    # left running by a deploy of B that did not verify the processes; A's server.py is then edited on the
    # instance (a hot fix by hand). `RELEASE: previous` finds A changed and installs it again from the
    # artifact: the path the server names exists again, but the server runs the copy that was deleted
    port = 18500
    start = f'(cd / && exec python3 "{APP_DIR}/$(readlink {APP_DIR}/current)/server.py" {port})'
    instance_id, env = instance_with_entry(
        standin, tmp_path, bucket, service, "server.py", ACTIVATE_COMMANDS=started_once(start, port)
    )
    try:
        first = run_pipe(env("A", "1"), timeout=300)
        assert first.returncode == 0, first.output
        second = run_pipe(env("B", "2") | {"VERIFY_PROCESSES": "false"}, timeout=300)
        assert second.returncode == 0, second.output
        pid = standin.run_on_instance(instance_id, "cat /srv/web.pid").stdout.strip()
        standin.run_on_instance(instance_id, f"echo '# hot fix' >> {APP_DIR}/releases/{A}/server.py")
        previous = {name: value for name, value in env("A", "3").items() if name != "ARTIFACT"}
        back = run_pipe(previous | {"RELEASE": "previous"}, timeout=300)
        document = json.loads((tmp_path / "ssm-deploy-result.json").read_text())
        status = run_pipe(env("B", "4") | {"ACTION": "status"}, timeout=300)
        what_serves = served(standin, instance_id, port)
    finally:
        kill_instance_processes(standin, instance_id, "/srv/web.pid")

    assert what_serves == "A"  # the old copy's code
    assert f"release {A} on this instance changed since it was staged" in back.output, back.output
    # the deploy fails, and its switch back to B too (86: the server runs neither): B live, ledger failed
    assert back.returncode != 0, back.output
    assert "Failed (exit 86)" in back.output, back.output
    assert f"runs a copy of release {A} that was deleted since it started, not the {A} installed now" in back.output
    assert f"runs a copy of release {A} that was deleted since it started, not the {B} installed now" in back.output
    assert live(standin, instance_id) == "B"
    entry = ledger_entries(standin, service)[-1]
    assert entry["status"] == "failed", entry
    assert document["status"] == "failed" and document["fleet"] == {instance_id: B}, document
    assert status.returncode == 1, status.output
    assert f"process {pid}" in status.output and "Drift" in status.output, status.output


def test_a_container_whose_volume_is_a_directory_with_a_blank_in_the_release_left_running_fails_the_deploy(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    # held: `docker run -v "/srv/web-api/current/my dir:/srv/container-app"`: docker binds the directory
    # current/my dir names as the container starts (A's); /proc/PID/mountinfo writes its root
    # `.../releases/<A>/my\040dir`, and the container's paths (/srv/container-app/server.py) name no APP_DIR
    port = 18501
    start = f"cd {VOLUME} && exec python3 {VOLUME}/server.py {port}"
    command = f"""unshare -m sh -c 'mount --bind "{APP_DIR}/current/my dir" {VOLUME} && {start}'"""
    activate = started_once(command, port, prepare=f"mkdir -p {VOLUME}")
    instance_id, env = instance_with_entry(
        standin, tmp_path, bucket, service, "my dir/server.py", ACTIVATE_COMMANDS=activate
    )
    second, what_serves = a_then_b(standin, instance_id, env, port)

    assert what_serves == "A"
    assert second.returncode != 0, second.output
    assert "Failed (exit 90)" in second.output, second.output
    assert f"runs release {A}, not {B}" in second.output, second.output
    assert live(standin, instance_id) == "A"
    assert ledger_entries(standin, service)[-1]["status"] == "rolled back"


def test_a_process_an_operator_left_in_a_pruned_release_directory_does_not_fail_the_deploy(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    # found, fixed: `cd /srv/web-api/releases/<A>; nohup sleep 100000 &` over ssh, the session since ended
    # (no terminal left); A pruned by unverified deploys (KEEP_RELEASES: 2). Its only link to A is its
    # working directory, which condemns nothing while A exists; before the fix the deleted one failed the
    # deploy and its switch back (exit 86, "a copy of release A that was deleted since it started")
    instance_id, env = one_instance(standin, tmp_path, bucket, service, KEEP_RELEASES="2")
    try:
        first = run_pipe(env("A", "1"), timeout=300)
        assert first.returncode == 0, first.output
        standin.run_on_instance(
            instance_id,
            f"(cd {APP_DIR}/releases/{A} && exec setsid nohup sleep 100000) </dev/null >/dev/null 2>&1 & "
            "echo $! > /srv/left.pid",
        )
        for version, number in (("B", "2"), ("C", "3"), ("D", "4")):
            unverified = run_pipe(env(version, number, VERIFY_PROCESSES="false"), timeout=300)
            assert unverified.returncode == 0, unverified.output
        pid = standin.run_on_instance(instance_id, "cat /srv/left.pid").stdout.strip()
        cwd = standin.run_on_instance(instance_id, f"readlink /proc/{pid}/cwd").stdout.strip()
        last = run_pipe(env("E", "5"), timeout=300)
        status = run_pipe(env("E", "5", ACTION="status"), timeout=300)
    finally:
        kill_instance_processes(standin, instance_id, "/srv/left.pid")

    assert cwd == f"{APP_DIR}/releases/{A} (deleted)", cwd
    assert last.returncode == 0, last.output
    assert "processes verified" in last.output, last.output
    assert live(standin, instance_id) == "E"
    assert ledger_entries(standin, service)[-1]["status"] == "succeeded"
    assert status.returncode == 0, status.output
