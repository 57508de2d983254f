"""Each instance's own /home, /root, /tmp, /srv and /opt: every invocation runs in the instance's one
mount namespace, where the instance's folder is mapped on them (isolation.py), as root with the
agent's environment."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from standin import StandIn, isolation
from standin.standin import AGENT_PATH
from standin.tests.invoke import run, run_one


def unique_dir(root: str = "/srv") -> str:
    return f"{root}/standin-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("root", isolation.MAPPED_ROOTS)
def test_the_same_absolute_path_is_a_folder_of_each_instance(standin: StandIn, root: str) -> None:
    app = unique_dir(root)
    first, second = standin.launch(2)
    script = (
        f'mkdir -p {app}/releases/000001-abc && echo "$AWS_SSM_INSTANCE_ID" > {app}/owner\n'
        f"ln -sfn releases/000001-abc {app}/current.tmp && mv -T {app}/current.tmp {app}/current"
    )
    written = run(standin, [first, second], script)
    read_back = run(standin, [first, second], f"cat {app}/owner")

    assert [answer["Status"] for answer in written] == ["Success", "Success"], written
    assert [answer["StandardOutputContent"] for answer in read_back] == [f"{first}\n", f"{second}\n"]
    for instance_id in (first, second):
        folder = standin.instance_path(instance_id, app)
        assert folder == standin.instance(instance_id).home / "root" / app.lstrip("/")
        assert (folder / "owner").read_text() == f"{instance_id}\n"
        assert os.readlink(folder / "current") == "releases/000001-abc"
        assert (folder / "current").resolve() == folder / "releases" / "000001-abc"
    assert not Path(app).exists()  # the machine's own /srv and /opt are untouched


def test_a_working_directory_under_a_mapped_root_is_the_instances(standin: StandIn) -> None:
    app = unique_dir()
    (instance_id,) = standin.launch(1)
    run_one(standin, instance_id, f"mkdir -p {app}")
    inside = run_one(standin, instance_id, "pwd\ntouch made-here", workingDirectory=app)
    missing = run_one(standin, instance_id, "pwd", workingDirectory=f"{app}/missing")

    assert inside["StandardOutputContent"] == f"{app}\n"
    assert standin.instance_path(instance_id, f"{app}/made-here").is_file()
    assert (missing["Status"], missing["ResponseCode"]) == ("Failed", 1)
    reason = f"failed to run commands: chdir {app}/missing: no such file or directory"
    assert missing["StandardErrorContent"] == reason + "\n"


def test_commands_run_as_root_with_the_agents_environment(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    answer = run_one(standin, instance_id, 'id -u\necho "$PATH"\necho "$AWS_SSM_INSTANCE_ID $AWS_SSM_REGION_NAME"')
    uid, path, ids = answer["StandardOutputContent"].splitlines()

    assert uid == "0"  # the SSM Agent runs commands as root (in a user namespace when the tests do not)
    assert path.endswith(AGENT_PATH) and "/usr/sbin" in path.split(":")  # runuser, useradd: as on AWS
    assert ids == f"{instance_id} {standin.region}"


def test_run_on_instance_runs_user_data_in_the_instances_file_system(standin: StandIn) -> None:
    app = unique_dir("/opt")
    (instance_id,) = standin.launch(1)
    role = standin.agent_keys["aws_access_key_id"]
    script = f'mkdir -p {app} && id -u > {app}/ran-as && [ "$AWS_ACCESS_KEY_ID" = {role} ]'
    done = standin.run_on_instance(instance_id, script)

    assert done.returncode == 0, done.stderr
    assert standin.instance_path(instance_id, f"{app}/ran-as").read_text() == "0\n"
    assert not Path(app).exists()


@pytest.mark.parametrize("path", ["/var/app", "/srvx/app", "srv/app", "/srv/../etc", "/usr/local/bin/app"])
def test_instance_path_refuses_what_is_not_per_instance(standin: StandIn, path: str) -> None:
    (instance_id,) = standin.launch(1)
    with pytest.raises(ValueError, match="/srv"):
        standin.instance_path(instance_id, path)


def test_a_fresh_instances_roots_have_a_fresh_instances_modes(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    answer = run_one(standin, instance_id, "stat -c '%n %a %U' /home /root /tmp /srv /opt")

    assert answer["StandardOutputContent"].splitlines() == [
        "/home 755 root",
        "/root 700 root",
        "/tmp 1777 root",
        "/srv 755 root",
        "/opt 755 root",
    ]


def test_a_stand_in_folder_under_a_per_instance_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(isolation.IsolationUnavailable, match="under /tmp, which each instance has its own of"):
        isolation.check_root(tmp_path)


def test_without_nsenter_the_stand_in_says_what_it_needs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(isolation.IsolationUnavailable, match="needs util-linux's `unshare` and `nsenter`"):
        isolation.probe()


def test_every_command_on_an_instance_shares_its_one_mount_namespace(standin: StandIn) -> None:
    # as the SSM Agent's commands share the host's (its systemd unit asks for no namespace of its own):
    # a process an earlier command left running is in the next command's mount namespace, and what a
    # command mounts the next one sees
    app = unique_dir()
    (instance_id,) = standin.launch(1)
    started = run_one(
        standin,
        instance_id,
        f"mkdir -p {app} && mount -t tmpfs scratch {app}\nsetsid sleep 600 </dev/null >/dev/null 2>&1 &\n"
        f"echo $! > /srv/sleeper-{uuid.uuid4().hex[:4]}.pid\nreadlink /proc/$$/ns/mnt",
    )
    try:
        later = run_one(
            standin,
            instance_id,
            f"readlink /proc/$(cat /srv/sleeper-*.pid)/ns/mnt /proc/$$/ns/mnt\nfindmnt -n -o FSTYPE {app}",
        )
    finally:
        run_one(standin, instance_id, "kill $(cat /srv/sleeper-*.pid)")

    assert started["Status"] == "Success", started
    sleeper, own, fstype = later["StandardOutputContent"].splitlines()
    assert sleeper == own == started["StandardOutputContent"].strip()
    assert fstype == "tmpfs"


def test_each_instance_has_a_mount_namespace_of_its_own_and_a_fresh_one_after_a_stop(standin: StandIn) -> None:
    app = unique_dir()
    first, second = standin.launch(2)
    mounted = run(
        standin, [first, second], f"mkdir -p {app} && mount -t tmpfs scratch {app} && readlink /proc/$$/ns/mnt"
    )
    standin.retire([first])  # its processes end, as a stopped instance's do
    after = run_one(standin, first, f"findmnt -n -o FSTYPE {app} || echo unmounted")

    assert [answer["Status"] for answer in mounted] == ["Success", "Success"], mounted
    spaces = [answer["StandardOutputContent"] for answer in mounted]
    assert spaces[0] != spaces[1]
    assert not os.path.ismount(app)  # the machine's own /srv has none of the instances' mounts
    # a fresh namespace: a rebooted host's mounts are its own again (the kernel may give it the same number)
    assert after["StandardOutputContent"] == "unmounted\n"
