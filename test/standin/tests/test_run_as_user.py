"""The instances' RUN_AS user (users.py): a real second account with Amazon Linux's login files,
whose login PATH is what a command run as that user must get."""

from __future__ import annotations

import os
import pwd
import uuid

import pytest

from standin import StandIn
from standin.tests.invoke import run_one
from standin.users import APP_USER, BASH_PROFILE, BASHRC, LOGIN_CHECK, AppUser, ensure_app_user

SWITCHES = {
    "runuser -l": "runuser -l {user} -c {command}",
    "su -": "su - {user} -c {command}",
}


def test_the_app_user_is_a_real_account_with_amazon_linuxs_login_files(app_user: AppUser) -> None:
    entry = pwd.getpwnam(APP_USER)

    assert (app_user.name, app_user.uid, app_user.gid) == (APP_USER, entry.pw_uid, entry.pw_gid)
    assert str(app_user.home) == entry.pw_dir == f"/home/{APP_USER}"
    assert entry.pw_shell == "/bin/bash" and app_user.uid != 0
    assert app_user.home.stat().st_uid == app_user.uid
    assert (app_user.home / ".bash_profile").is_file() and (app_user.home / ".bashrc").is_file()
    assert not (app_user.home / ".profile").exists()  # bash reads .bash_profile, as on Amazon Linux
    assert os.access(app_user.login_bin / LOGIN_CHECK, os.X_OK)


def test_creating_the_user_again_keeps_it_and_rewrites_its_login_files(app_user: AppUser) -> None:
    # The account is the machine's and other test sessions may use it now: nothing is broken here.
    again = ensure_app_user()

    assert again == app_user
    assert (app_user.home / ".bash_profile").read_text() == BASH_PROFILE
    assert (app_user.home / ".bashrc").read_text() == BASHRC
    assert (app_user.home / ".bashrc").stat().st_uid == app_user.uid


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
