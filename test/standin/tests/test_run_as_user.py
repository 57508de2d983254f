"""The instances' RUN_AS user (users.py): a real second account with Amazon Linux's login files in its
home on each instance, whose login PATH is what a command run as that user must get (node and pm2
included, as nvm leaves them)."""

from __future__ import annotations

import os
import pwd
import uuid

import pytest

from standin import StandIn, tools
from standin.tests.invoke import run_one
from standin.users import APP_USER, BASH_PROFILE, BASHRC, LOGIN_BIN, LOGIN_CHECK, AppUser, ensure_app_user

SWITCHES = {
    "runuser -l": "runuser -l {user} -c {command}",
    "su -": "su - {user} -c {command}",
}


def test_the_app_user_is_a_real_account_with_amazon_linuxs_login_files_on_each_instance(
    standin: StandIn, app_user: AppUser
) -> None:
    entry = pwd.getpwnam(APP_USER)
    (instance_id,) = standin.launch(1)
    home = standin.instance_path(instance_id, str(app_user.home))

    assert (app_user.name, app_user.uid, app_user.gid) == (APP_USER, entry.pw_uid, entry.pw_gid)
    assert str(app_user.home) == entry.pw_dir == f"/home/{APP_USER}"
    assert entry.pw_shell == "/bin/bash" and app_user.uid != 0
    assert home.stat().st_uid == app_user.uid
    assert (home / ".bash_profile").read_text() == BASH_PROFILE and (home / ".bashrc").read_text() == BASHRC
    assert (home / ".bashrc").stat().st_uid == app_user.uid
    assert not (home / ".profile").exists()  # bash reads .bash_profile, as on Amazon Linux
    assert os.access(home / LOGIN_BIN / LOGIN_CHECK, os.X_OK)


def test_creating_the_user_again_keeps_it(app_user: AppUser) -> None:
    # The account is the machine's and other test sessions may use it now: nothing is broken here.
    assert ensure_app_user() == app_user


def test_node_20_and_pm2_are_on_the_users_login_path_only(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    script = (
        "command -v pm2 || echo root: absent\n"  # (this machine's /usr may have a node of its own)
        f"runuser -l {APP_USER} -c 'node --version; pm2 ping >/dev/null && pm2 --version; command -v pm2'"
    )
    answer = run_one(standin, instance_id, script)

    assert answer["StandardOutputContent"].splitlines() == [
        "root: absent",
        f"v{tools.NODE_VERSION}",
        tools.PM2_VERSION,
        f"/home/{APP_USER}/{LOGIN_BIN}/pm2",
    ], answer["StandardErrorContent"]


@pytest.mark.parametrize("switch", list(SWITCHES))
def test_a_login_shell_of_the_user_has_its_login_path_and_owns_what_it_writes(
    standin: StandIn, app_user: AppUser, switch: str
) -> None:
    app = f"/srv/standin-{uuid.uuid4().hex[:8]}"
    (instance_id,) = standin.launch(1)
    command = f"'{LOGIN_CHECK} && echo \"home=$HOME user=$(id -un)\" && cd {app} && touch made-by-user'"
    script = f"mkdir -p {app} && chown {APP_USER}: {app}\n" + SWITCHES[switch].format(user=APP_USER, command=command)
    answer = run_one(standin, instance_id, script)

    assert answer["Status"] == "Success", answer["StandardErrorContent"]
    assert answer["StandardOutputContent"].splitlines() == [
        f"login environment of {APP_USER}",
        f"home={app_user.home} user={APP_USER}",
    ]
    made = standin.instance_path(instance_id, f"{app}/made-by-user")
    assert (made.stat().st_uid, made.stat().st_gid) == (app_user.uid, app_user.gid)


def test_without_a_login_shell_the_users_login_path_is_missing(standin: StandIn, app_user: AppUser) -> None:
    (instance_id,) = standin.launch(1)
    script = (
        f"command -v {LOGIN_CHECK} || echo root: absent\n"
        f"runuser -u {APP_USER} -- bash -c 'command -v {LOGIN_CHECK} || echo \"$(id -un) without login: absent\"'"
    )
    answer = run_one(standin, instance_id, script)

    assert answer["StandardOutputContent"].splitlines() == ["root: absent", f"{APP_USER} without login: absent"]
