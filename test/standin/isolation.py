"""Each instance's own file system: /home, /root, /tmp, /srv and /opt are the instance's.

The pipe sends real absolute paths (``APP_DIR: /srv/web-api``), the app user's pm2 keeps its daemon
under ``~/.pm2``, programs write to /tmp. On AWS every instance has its own of each; here every
instance is a folder on one machine. So each instance has a mount namespace of its own, made once
with its PID namespace by the instance's holder (``pid_namespace.py``: ``unshare --mount``), in which
``MOUNT_SETUP`` mounts a /proc of the instance's PID namespace and binds ``<instance folder>/root/home``
on /home, ``.../root/root`` on /root, and so on. Every invocation on the instance enters that one
namespace with its network and PID namespaces (``launch_command``: ``nsenter --net --pid --mount``),
as the SSM Agent runs every command in the host's one mount namespace on AWS: what a command mounts
the next one sees, and a process an earlier command left running (pm2's daemon, a server) is in the
script's own mount namespace; only a container (``unshare --mount``, ``docker run``) is in another.
Inside, the commands see and change /srv/web-api or ~ec2-user as on an instance; outside, tests read
the same files at ``<instance folder>/root/srv/web-api`` (``StandIn.instance_path``). The rest
(/usr, /etc, /var, the tools in /usr/local/lib/ssm-deploy-standin) is the machine's, shared by every
instance the way an AMI's system files are the same on every instance.

The instance folders themselves must not be under a mapped root (``check_root``): inside the
namespace they would be hidden by the mounts. The propagation is private: nothing mounted on an
instance is seen by the machine or another instance. A stopped instance's namespace goes with its
processes; the next command gets a fresh one (mounts made by commands are gone, as after a reboot).

Needs root (CAP_SYS_ADMIN, and CAP_NET_ADMIN for the network): ``probe`` checks once per stand-in
and refuses to start with what to change; the stand-in never runs an invocation unmapped, which
would write into the machine's real /srv or /home.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path, PurePosixPath

from standin.pid_namespace import UNSHARE

# mode of each root on a fresh instance: /tmp is world-writable with the sticky bit, /root private
MAPPED_ROOTS = {"/home": 0o755, "/root": 0o700, "/tmp": 0o1777, "/srv": 0o755, "/opt": 0o755}
INSTANCE_ROOT = "root"  # the instance's own part of the file system: <instance folder>/root/srv, ...
PROBE_TIMEOUT = 10
NETNS_DIR = "/run/netns"

# Runs once in the instance's new mount namespace (the holder's setup, ``pid_namespace.py``): a /proc of
# its PID namespace (only its processes), then map the roots, given as pairs of arguments.
MOUNT_SETUP = r"""
mount -t proc proc /proc || { echo "stand-in: cannot mount the instance's /proc" >&2; exit 1; }
while [ "$#" -gt 1 ]; do
  mount --bind "$1" "$2" || { echo "stand-in: cannot map $1 on $2" >&2; exit 1; }
  shift 2
done
"""

# Runs in the instance's namespaces: enter the working directory the way the agent does (its message
# when the directory is missing), then become the script (same pid, same environment). nsenter(1)
# entering a PID namespace forks (only its child is in it) and passes back the child's exit status or
# signal; the child stays in the process group the agent started, which the agent kills on cancel and
# timeout.
LAUNCH = r"""
script=$1 cwd=$2
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


def check_root(folder: Path) -> None:
    """Refuse instance folders under a mapped root: the mounts would hide them inside the instance."""
    for root in MAPPED_ROOTS:
        if folder.resolve() == Path(root) or Path(root) in folder.resolve().parents:
            raise IsolationUnavailable(
                f"the stand-in's folder {folder} is under {root}, which each instance has its own of: "
                "put it elsewhere (e.g. under /var/tmp)"
            )


def prepare(home: Path) -> None:
    """Create an instance's mapped roots (empty, with the modes of a fresh instance's)."""
    for root, mode in MAPPED_ROOTS.items():
        folder = instance_root(home) / root.lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(mode)


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


def mount_setup(home: Path) -> list[str]:
    """argv that makes the instance's file system in its new mount namespace (run once per namespace:
    ``PrivateNetwork.processes``)."""
    pairs = [part for pair in mounts(home) for part in pair]
    return ["bash", "-c", MOUNT_SETUP, "standin-mounts", *pairs]


def launch_command(net_namespace: str, pid_namespace: str, mount_namespace: str, script: Path, cwd: str) -> list[str]:
    """argv that runs ``bash script`` in ``cwd`` on the instance: in its network, PID and mount
    namespaces (``pid_namespace`` and ``mount_namespace`` are paths as ``/proc/<pid>/ns/pid``)."""
    enter = ("nsenter", f"--net={NETNS_DIR}/{net_namespace}", f"--pid={pid_namespace}", f"--mount={mount_namespace}")
    return [*enter, "--", "bash", "-c", LAUNCH, "standin-agent", str(script), cwd]


def probe() -> None:
    """Check once that a PID namespace with its /proc and a mount namespace with bind mounts work here,
    or IsolationUnavailable."""
    if os.geteuid() != 0:
        raise IsolationUnavailable(
            "the stand-in gives each instance its own /home, /root, /tmp, /srv and /opt (mount namespaces) "
            "and network (network namespaces), which needs root: run the tests as root (CI does)"
        )
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        raise IsolationUnavailable(
            "the stand-in runs each instance in namespaces of its own and needs util-linux's `unshare` and "
            "`nsenter` on PATH (apt-get install util-linux)"
        )
    for mount_point in MAPPED_ROOTS:  # mount points must exist; creating one is harmless
        Path(mount_point).mkdir(exist_ok=True)
    pairs = [root for root in MAPPED_ROOTS for _ in range(2)]  # each on itself
    check = [*UNSHARE, "bash", "-c", MOUNT_SETUP, "standin-probe", *pairs]
    try:
        done = subprocess.run(check, capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise IsolationUnavailable(f"the stand-in cannot create a mount namespace here: {error}") from error
    if done.returncode != 0:
        raise IsolationUnavailable(
            "the stand-in runs each instance in PID and mount namespaces of its own and cannot here "
            f"({done.stderr.strip() or f'exit {done.returncode}'}). Run the tests as root with CAP_SYS_ADMIN and "
            "CAP_NET_ADMIN (in Docker: --privileged)"
        )
