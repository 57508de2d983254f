"""Each instance's own processes and file system: a PID namespace and a mount namespace per instance,
made once with the instance (as its kernel is), so /proc on an instance lists only its processes and
every command on it sees the same mounts, as on EC2.

Without the PID namespace /proc on every instance showed every process of the machine (other
instances', other test workers'), and what scans /proc there (the pipe's VERIFY_PROCESSES) judged
processes an instance never sees, at the cost of thousands of readlinks per test file. On AWS the
SSM Agent runs every command in the host's one mount namespace (its systemd unit, aws/amazon-ssm-agent
packaging/linux/amazon-ssm-agent.service, has Type=simple and KillMode=process and no PrivateTmp=,
PrivateMounts= nor other namespace option), so a process an earlier command left running (pm2's
daemon, a server started by ACTIVATE_COMMANDS) is in the same mount namespace as the next command's
script; only a container (``unshare --mount``, ``docker run``) is in another.

Both namespaces live as long as a process is in them. Each instance's are held by a small process,
the holder: ``nsenter --net=<instance's network> unshare --pid --mount --propagation private --fork
--kill-child python3 -c HOLDER SETUP...``. Its python is PID 1 of the new PID namespace, in the new
mount namespace: it runs SETUP once (``isolation.MOUNT_SETUP``: the instance's /proc and its own
/home, /srv...), then reaps what is re-parented to it (a ``setsid`` daemon such as pm2's, once the
command that started it exits) and does nothing else. Every invocation enters both
(``nsenter --pid=/proc/<holder>/ns/pid --mount=/proc/<holder>/ns/mnt``, ``isolation.launch_command``).
Killing the holder's PID 1 kills every process of the namespace (the kernel does, and PID 1's exit
waits for them), and with the last of them the mount namespace goes: ``kill`` is an instance's
processes ending at once, as a stopped instance's do. A later command starts a fresh holder (fresh
mounts), as on a rebooted host.

The holder is in the instance's network namespace, so a stand-in that died without stopping leaves
nothing the next one's clean-up misses (``hosts.remove_stale`` kills by network namespace).

The paths ``/proc/<pid>/ns/...`` name the holder by pid: after a kill, a command launched with the
old paths could only enter other namespaces if the kernel gave that pid to another process in the
meantime, which it does only after cycling through every other pid (``pid_max``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

# the holder's new namespaces: its child (``--fork``) is PID 1 of the PID namespace, in the mount namespace,
# and takes every process of the namespace with it when it ends (``--kill-child``: when unshare dies)
UNSHARE = ("unshare", "--pid", "--mount", "--propagation", "private", "--fork", "--kill-child", "--")
STOP_TIMEOUT = 30  # seconds for PID 1's exit (it waits for the namespace's processes to end)

# PID 1 of the instance's namespaces. It reads its pid on this machine while /proc is still the
# machine's (``readlink /proc/self``), runs the setup given as its arguments (the mounts), and writes
# that pid as its first line once the setup succeeded (or exits with the setup's status, the setup's
# message on stderr). SIGCHLD stays blocked, so one that arrives between reaping and waiting stays
# pending for ``sigwait``: no orphan is left a zombie.
HOLDER = r"""
import os, signal, subprocess, sys
pid = os.readlink("/proc/self")
status = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=2).returncode
if status != 0:
    sys.exit(status)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
os.write(1, (pid + "\n").encode())
os.close(1)
while True:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass
    signal.sigwait({signal.SIGCHLD})
"""


class PidNamespaceUnavailable(RuntimeError):
    """The instance's PID and mount namespaces could not be made."""


class PidNamespace:
    """An instance's PID namespace and mount namespace, held by its PID 1 until ``kill``."""

    def __init__(self, net_namespace: str, setup: Sequence[str]) -> None:
        """Make both in the network namespace at the path ``net_namespace``; ``setup`` (an argv) runs
        once inside them before any command does (the instance's mounts)."""
        self._process = subprocess.Popen(
            [
                "nsenter",
                f"--net={net_namespace}",
                "--",
                *UNSHARE,
                sys.executable,
                "-c",
                HOLDER,
                *setup,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # never in the stand-in's process group: a Ctrl-C reaches it through stop
        )
        assert self._process.stdout is not None and self._process.stderr is not None
        line = self._process.stdout.readline().decode().strip()
        self._process.stdout.close()
        if not line.isdigit():
            self._process.kill()
            error = self._process.stderr.read().decode().strip()
            self._process.wait()
            raise PidNamespaceUnavailable(
                f"could not make an instance's PID and mount namespaces: {error or 'no pid reported'} (the "
                "stand-in needs root and util-linux's unshare)"
            )
        self._process.stderr.close()
        self.init_pid = int(line)  # PID 1's pid on this machine
        self.path = f"/proc/{self.init_pid}/ns/pid"
        self.mount_path = f"/proc/{self.init_pid}/ns/mnt"  # ``nsenter --mount=``: the instance's file system
        found = os.stat(self.path)
        self._identity = (found.st_dev, found.st_ino)

    def alive(self) -> bool:
        return self._process.poll() is None

    def kill(self) -> None:
        """End PID 1, and with it every process of the namespace; returns once they are gone."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.init_pid, signal.SIGKILL)
        try:
            self._process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def host_pid(self, pid: int) -> int | None:
        """The machine's pid of the namespace's process ``pid`` (what a pid file on the instance, or
        ``$$`` there, holds), or None when no such process runs: the last ``NSpid:`` entry of
        /proc/<pid>/status is the pid in the innermost namespace."""
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                found = os.stat(f"/proc/{entry}/ns/pid")
                if (found.st_dev, found.st_ino) != self._identity:
                    continue
                with open(f"/proc/{entry}/status") as status:
                    inner = next((line.split()[-1] for line in status if line.startswith("NSpid:")), "")
            except OSError:  # gone meanwhile, or a kernel thread
                continue
            if inner == str(pid):
                return int(entry)
        return None
