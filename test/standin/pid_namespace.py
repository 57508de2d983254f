"""Each instance's own processes: a PID namespace per instance, so /proc on an instance lists only its
processes, as on EC2.

Without it /proc on every instance showed every process of the machine (other instances', other test
workers'), and what scans /proc there (the pipe's VERIFY_PROCESSES) judged processes an instance
never sees, at the cost of thousands of readlinks per test file.

A PID namespace lives as long as its PID 1. Each instance's is held by a small process, the holder:
``nsenter --net=<instance's network> unshare --pid --fork --kill-child python3 -c HOLDER``. Its
python is PID 1 of the new namespace: it reaps what is re-parented to it (a ``setsid`` daemon such as
pm2's, once the command that started it exits) and does nothing else. Every invocation enters the
namespace (``nsenter --pid=/proc/<holder>/ns/pid``, ``isolation.launch_command``) and mounts a /proc
of its own there. Killing the holder's PID 1 kills every process of the namespace (the kernel does,
and PID 1's exit waits for them): ``kill`` is an instance's processes ending at once, as a stopped
instance's do. A later command starts a fresh holder, as on a rebooted host.

The holder is in the instance's network namespace, so a stand-in that died without stopping leaves
nothing the next one's clean-up misses (``hosts.remove_stale`` kills by network namespace).

The path ``/proc/<pid>/ns/pid`` names the holder by pid: after a kill, a command launched with the
old path could only enter another namespace if the kernel gave that pid to another process in the
meantime, which it does only after cycling through every other pid (``pid_max``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

STOP_TIMEOUT = 30  # seconds for PID 1's exit (it waits for the namespace's processes to end)

# PID 1 of the instance's namespace. SIGCHLD stays blocked, so one that arrives between reaping and
# waiting stays pending for ``sigwait``: no orphan is left a zombie. The first line it writes is its
# pid on this machine: /proc is still the machine's when it starts (``readlink /proc/self``).
HOLDER = r"""
import os, signal
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
os.write(1, (os.readlink("/proc/self") + "\n").encode())
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
    """The instance's PID namespace could not be made."""


class PidNamespace:
    """An instance's PID namespace, held by its PID 1 until ``kill``."""

    def __init__(self, net_namespace: str) -> None:
        self._process = subprocess.Popen(
            [
                "nsenter",
                f"--net={net_namespace}",
                "--",
                "unshare",
                "--pid",
                "--fork",
                "--kill-child",
                "--",
                sys.executable,
                "-c",
                HOLDER,
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
                f"could not start PID 1 of an instance's PID namespace: {error or 'no pid reported'} (the stand-in "
                "needs root and util-linux's unshare)"
            )
        self._process.stderr.close()
        self.init_pid = int(line)  # PID 1's pid on this machine
        self.path = f"/proc/{self.init_pid}/ns/pid"
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
