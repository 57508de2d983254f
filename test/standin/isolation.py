"""Each instance's own file system under the roots an application lives in: /srv and /opt.

The pipe sends real absolute paths (``APP_DIR: /srv/web-api``). On AWS every instance has its own
/srv; here every instance is a folder on one machine. So each invocation's process runs in a mount
namespace of its own (util-linux ``unshare --mount``) in which ``<instance folder>/root/srv`` is
bind-mounted on /srv and ``<instance folder>/root/opt`` on /opt. Inside, the commands see and change
/srv/web-api as on an instance; outside, tests read the same files at
``<instance folder>/root/srv/web-api`` (``StandIn.instance_path``). Everything else (/, /tmp,
/home, /usr, the AWS CLI) is the machine's own, shared by every instance.

Why only /srv and /opt: they are the FHS homes of a service's files (the README's APP_DIR is under
/srv, vendor installs use /opt), and mapping a root hides the machine's own folder there for the
invocation, so mapping /home, /var or /usr would hide the user's home or the tools. The propagation
is private: nothing mounted inside an invocation is seen by the machine or another instance, and the
mounts go away with the invocation's last process.

Namespaces need privileges: as root, a mount namespace (CAP_SYS_ADMIN, which a default Docker
container lacks); as another user, a user namespace mapping that user to root inside (where the
kernel allows unprivileged user namespaces). ``probe`` picks the first that works once per stand-in;
when neither does, the stand-in refuses to start with what to change (it never runs an invocation
unmapped, which would write into the machine's real /srv).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

MAPPED_ROOTS = ("/srv", "/opt")
INSTANCE_ROOT = "root"  # the instance's own part of the file system: <instance folder>/root/srv, ...
PROBE_TIMEOUT = 10

# unshare(1) execs its program in the new namespaces, so the invocation's pid (and process group,
# which the agent kills on cancel and timeout) stays the one the agent started.
AS_ROOT = ("unshare", "--mount", "--propagation", "private", "--")
AS_USER = ("unshare", "--user", "--map-root-user", "--mount", "--propagation", "private", "--")

# Runs inside the namespace: map the roots, enter the working directory the way the agent does
# (its message when the directory is missing), then become the script (same pid, same environment).
LAUNCH = r"""
script=$1 cwd=$2; shift 2
while [ "$#" -gt 1 ]; do
  mount --bind "$1" "$2" || { echo "stand-in: cannot map $1 on $2" >&2; exit 1; }
  shift 2
done
if ! cd -- "$cwd" 2>/dev/null; then
  if [ -e "$cwd" ]; then why="not a directory"; else why="no such file or directory"; fi
  echo "failed to run commands: chdir $cwd: $why" >&2
  exit 1
fi
unset OLDPWD
exec bash -- "$script"
"""


class IsolationUnavailable(RuntimeError):
    """This machine cannot give each invocation its own mount namespace."""


def instance_root(home: Path) -> Path:
    return home / INSTANCE_ROOT


def prepare(home: Path) -> None:
    """Create an instance's mapped roots (empty, 0755 like /srv and /opt on a fresh instance)."""
    for root in MAPPED_ROOTS:
        folder = instance_root(home) / root.lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)


def host_path(home: Path, path: str) -> Path:
    """Where the instance's absolute ``path`` (under a mapped root) is on this machine."""
    pure = PurePosixPath(path)
    if not pure.is_absolute() or ".." in pure.parts:
        raise ValueError(f"{path!r}: give an absolute path without '..' on the instance, e.g. /srv/web-api")
    for root in MAPPED_ROOTS:
        if pure == PurePosixPath(root) or PurePosixPath(root) in pure.parents:
            return instance_root(home) / str(pure).lstrip("/")
    raise ValueError(
        f"{path!r} is not per instance in the stand-in: only {', '.join(MAPPED_ROOTS)} are mapped into each "
        "instance's folder (everything else is the machine's, shared by all instances)"
    )


def mounts(home: Path) -> list[tuple[str, str]]:
    """(source on this machine, mount point) for each mapped root of the instance at ``home``."""
    return [(str(instance_root(home) / root.lstrip("/")), root) for root in MAPPED_ROOTS]


def launch_command(prefix: Sequence[str], home: Path, script: Path, cwd: str) -> list[str]:
    """argv that runs ``bash script`` in ``cwd`` inside the instance's own namespace."""
    pairs = [part for pair in mounts(home) for part in pair]
    return [*prefix, "bash", "-c", LAUNCH, "standin-agent", str(script), cwd, *pairs]


def probe() -> tuple[str, ...]:
    """The ``unshare`` prefix that works here (a bind mount is tried), or IsolationUnavailable."""
    if shutil.which("unshare") is None:
        raise IsolationUnavailable(
            "the stand-in runs each invocation in its own mount namespace and needs util-linux's "
            "`unshare` on PATH (apt-get install util-linux)"
        )
    root = os.geteuid() == 0
    if root:
        for mount_point in MAPPED_ROOTS:  # mount points must exist; creating one is harmless
            Path(mount_point).mkdir(exist_ok=True)
    tried: list[str] = []
    for prefix in (AS_ROOT, AS_USER) if root else (AS_USER,):
        check = [*prefix, "bash", "-c", " && ".join(f"mount --bind {r} {r}" for r in MAPPED_ROOTS)]
        try:
            done = subprocess.run(check, capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            tried.append(f"{' '.join(prefix[:-1])}: {error}")
            continue
        if done.returncode == 0:
            return prefix
        tried.append(f"{' '.join(prefix[:-1])}: {done.stderr.strip() or f'exit {done.returncode}'}")
    missing = [r for r in MAPPED_ROOTS if not Path(r).is_dir()]
    raise IsolationUnavailable(
        "the stand-in runs each invocation in its own mount namespace (so /srv and /opt are per instance) "
        f"and cannot here ({'; '.join(tried)}). Run the tests as root with CAP_SYS_ADMIN (in Docker: "
        "--cap-add SYS_ADMIN --security-opt seccomp=unconfined, or --privileged), or as a user where "
        "unprivileged user namespaces are allowed"
        + (f"; also create {', '.join(missing)} (as root)" if missing else "")
    )
