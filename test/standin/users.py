"""The instances' application user for RUN_AS: a real second account, with a home on each instance.

``ssmdeploy-app`` stands for Amazon Linux's ``ec2-user``: the account a service runs as, with a home
and a login environment. The account is the machine's (``/etc/passwd`` is shared by every instance,
like ec2-user on every instance of an AMI), but each instance has its own /home (``isolation.py``),
so ``install_home`` writes the user's home into every new instance's folder: Amazon Linux 2023's dot
files (``~/.bash_profile`` sources ``~/.bashrc``), and ``~/.bashrc`` ends the way nvm's installer
leaves it, putting a tool folder on PATH. That folder holds Node.js 20, npm and pm2 (links to the
pinned tools of ``tools.py``) and ``standin-login-check``: a command finds them only when it runs in
the user's login environment (``su - ssmdeploy-app``, ``runuser -l``, ``sudo -iu``), not from root's
environment or a plain ``su``/``runuser -u``: the trap RUN_AS exists for. Each instance's user has
its own ``~/.pm2``, so its own pm2 daemon.

The user cannot run the stand-in's AWS CLI as root does (on-instance AWS calls, such as a release
download, run as root, as the SSM Agent's do).

``ensure_app_user`` creates the account once (useradd needs root); it is idempotent and safe when
several test sessions start at once (a lock file), and never removes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from standin import tools

APP_USER = "ssmdeploy-app"
LOGIN_CHECK = "standin-login-check"  # a command on the user's login PATH only
LOGIN_BIN = ".standin-login/bin"  # under the user's home, like ~/.nvm/versions/node/<v>/bin
LOGIN_TOOLS = ("node", "npm", "npx", "pm2")  # linked into LOGIN_BIN from tools.TOOLS_BIN
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"

BASH_PROFILE = """\
# .bash_profile (Amazon Linux 2023's, written by the ssm-deploy stand-in)

# Get the aliases and functions
if [ -f ~/.bashrc ]; then
	. ~/.bashrc
fi

# User specific environment and startup programs
"""

BASHRC = f"""\
# .bashrc (Amazon Linux 2023's, written by the ssm-deploy stand-in)

# Source global definitions
if [ -f /etc/bashrc ]; then
	. /etc/bashrc
fi

# User specific environment
if ! [[ "$PATH" =~ "$HOME/.local/bin:$HOME/bin:" ]]; then
    PATH="$HOME/.local/bin:$HOME/bin:$PATH"
fi
export PATH

# What nvm's installer appends, in the stand-in's terms: a tool folder on the login PATH
export STANDIN_LOGIN_ENV=1
export PATH="$HOME/{LOGIN_BIN}:$PATH"
"""

LOGIN_CHECK_SCRIPT = """\
#!/bin/sh
# Found only on the login PATH of the stand-in's application user.
echo "login environment of $(id -un)"
"""


class UserUnavailable(RuntimeError):
    """The application user cannot be created here (not root, or no useradd)."""


@dataclass(frozen=True)
class AppUser:
    name: str
    uid: int
    gid: int
    home: Path

    @property
    def login_bin(self) -> Path:
        """The folder only the user's login PATH has (``LOGIN_CHECK``, node and pm2 live there), as
        an instance sees it."""
        return self.home / LOGIN_BIN

    def install_home(self, instance_root: Path) -> None:
        """Write the user's home into an instance's folder (``instance_root`` holds its /home)."""
        home = instance_root / str(self.home).lstrip("/")
        _make_dirs(self, home, instance_root / "home")
        home.chmod(0o700)
        _write_dot_files(self, home)


def ensure_app_user(name: str = APP_USER) -> AppUser:
    """The account ``name``, created when missing."""
    if os.geteuid() != 0:
        raise UserUnavailable(f"creating the RUN_AS user {name} needs root (CI runs the tests as root)")
    with _locked(name):
        if not _exists(name):
            _useradd(name)
        entry = pwd.getpwnam(name)
    return AppUser(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _useradd(name: str) -> None:
    useradd = shutil.which("useradd", path=SBIN_PATH)
    if useradd is None:
        raise UserUnavailable(f"cannot create the RUN_AS user {name}: no useradd (apt-get install passwd)")
    done = subprocess.run(
        [useradd, "--create-home", "--user-group", "--shell", "/bin/bash", "--comment", "ssm-deploy stand-in", name],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 and not _exists(name):
        raise UserUnavailable(f"useradd {name} failed: {done.stderr.strip()}")


def _write_dot_files(user: AppUser, home: Path) -> None:
    (home / ".profile").unlink(missing_ok=True)  # Amazon Linux has none; bash reads .bash_profile
    files = {".bash_profile": (BASH_PROFILE, 0o644), ".bashrc": (BASHRC, 0o644)}
    files[f"{LOGIN_BIN}/{LOGIN_CHECK}"] = (LOGIN_CHECK_SCRIPT, 0o755)
    for relative, (text, mode) in files.items():
        target = home / relative
        _make_dirs(user, target.parent, home)
        _replace(target, text, mode, user)
    for tool in LOGIN_TOOLS:
        link = home / LOGIN_BIN / tool
        link.unlink(missing_ok=True)
        link.symlink_to(tools.TOOLS_BIN / tool)
        os.lchown(link, user.uid, user.gid)


def _make_dirs(user: AppUser, folder: Path, top: Path) -> None:
    """Create ``folder`` and its missing parents up to ``top`` (excluded), owned by the user."""
    missing = [p for p in (folder, *folder.parents) if p.is_relative_to(top) and p != top and not p.exists()]
    for path in reversed(missing):
        path.mkdir(mode=0o755)
        os.chown(path, user.uid, user.gid)


def _replace(target: Path, text: str, mode: int, user: AppUser) -> None:
    """Write by rename, so a session reading the file never sees it half written."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.chmod(temporary, mode)
    os.chown(temporary, user.uid, user.gid)
    os.replace(temporary, target)


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One creator at a time on this machine (useradd also fails when /etc/passwd is locked)."""
    lock = Path("/tmp") / f"ssm-deploy-standin-user-{name}.lock"  # not TMPDIR: one lock for every session
    with lock.open("a") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(stream, fcntl.LOCK_UN)
