"""The thirty-eighth attack on VERIFY_PROCESSES (issue #17), in the box harness of
test_unit_release_verify.py: the release scripts run for real against a temp APP_DIR and read /proc.

Finding, failed on the code the attack found it in, fixed: a shell script started through current before
the switch (systemd's ExecStart=/bin/sh /srv/web-api/current/bin/worker.sh, `bash current/bin/worker.sh`
from WorkingDirectory=APP_DIR, an executable script with `#!/bin/sh`) and left running was never judged:
dash and bash keep the script they run open, so the worker was taken for a reader following the file
(`tail -f current/logs/app.log`), and the deploy said "none runs a replaced release" (exit 0) while the
worker ran the replaced release's script. ``ACTION: status`` (the same scan) did not list it either. A
file a process runs as its program (a shell's or perl's script: the first word after the interpreter and
its options) is now told from a file it holds open to follow it.
Held: readers that hold the file through current open still pass (a shell script elsewhere following the
log, and `sh -c '...' current/logs/app.log`, whose file is an argument, not the script).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from pipe.release.remote import OtherProcess, OtherProcesses, ReleaseExit, other_processes, read_current_body
from unit.release.test_unit_release_verify import RESTARTED
from unit.release.verify_support import box_with_secret, foreign, install
from unit.release_support import COMMANDS, A, Artifact, B, Box, is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="reading other processes' /proc entries needs root")

WORKER = "bin/worker.sh"
WORKER_PL = "bin/worker.pl"
LOG = "logs/app.log"


@pytest.fixture
def box() -> Iterator[Box]:
    yield from box_with_secret("att38ck-Secret-71d0-value")


def _artifact(box: Box, release: str) -> Artifact:
    """A release with a shell worker (run directly too: `#!/bin/sh`), a perl one that keeps its script
    open for __DATA__, and a log a shipper follows."""
    return box.release_artifact(
        release,
        logs=None,
        **{
            WORKER: f"#!/bin/sh\n# release {release}\nwhile :; do sleep 1; done\n",
            WORKER_PL: f"while (1) {{ sleep 1 }}\n__DATA__\nrelease {release}\n",
            LOG: f"{release} started\n",
        },
    )


def _deploy(box: Box, release: str) -> tuple[int, str]:
    # the executable bit an artifact built on Windows lacks, given back by COMMANDS
    commands = COMMANDS + f"chmod +x {WORKER}\n"
    return install(box, release, RESTARTED, _artifact(box, release), commands=commands)


def _holding(pid: int, name: str) -> None:
    """Wait until ``pid`` holds a file named ``name`` open (the shell read its script, the reader its log)."""
    held = f"until ls -l /proc/{pid}/fd 2>/dev/null | grep -q '{name}'; do sleep 0.2; done"
    subprocess.run(["sh", "-c", held], check=True, timeout=60)


# how the worker is started through current: its command line and working directory (APP_DIR: "")
WORKERS = {
    "sh": (["sh", "{app}/current/" + WORKER], "/"),
    "bash": (["bash", "{app}/current/" + WORKER], "/"),
    "sh with options": (["sh", "-e", "-o", "nounset", "{app}/current/" + WORKER], "/"),
    "run directly": (["{app}/current/" + WORKER], "/"),
    "relative to APP_DIR": (["bash", "current/" + WORKER], ""),
    "perl": (["perl", "-w", "{app}/current/" + WORKER_PL], "/"),
}


@pytest.mark.parametrize("started", WORKERS.values(), ids=WORKERS.keys())
def test_a_script_worker_started_through_current_before_the_switch_and_left_running_fails_the_deploy(
    box: Box, started: tuple[list[str], str]
) -> None:
    code, output = _deploy(box, A)
    assert code == 0, output
    command, cwd = started
    pid = foreign(box, [word.format(app=box.app_dir) for word in command], cwd or str(box.app_dir))
    _holding(pid, "worker.")  # the interpreter keeps its script open: what made it pass for a reader

    code, output = _deploy(box, B)

    assert code == ReleaseExit.STALE_PROCESS, output
    assert f"process {pid} " in output
    assert f"runs release {A}" in output
    assert box.current() == f"releases/{A}"


def test_a_script_worker_whose_shell_a_package_upgrade_replaced_since_it_started_still_fails_the_deploy(
    box: Box,
) -> None:
    # unattended-upgrades replaced bash under a running worker: its executable reads "/usr/bin/bash (deleted)",
    # which took it for no shell, so the script it holds open passed it for a reader
    code, output = _deploy(box, A)
    assert code == 0, output
    shell = box.root / "upgraded" / "bash"
    shell.parent.mkdir()
    shutil.copy2(shutil.which("bash") or "/bin/bash", shell)
    pid = foreign(box, [str(shell), f"{box.app_dir}/current/{WORKER}"], "/")
    _holding(pid, "worker.sh")
    shell.unlink()
    assert os.readlink(f"/proc/{pid}/exe").endswith("bash (deleted)")

    code, output = _deploy(box, B)

    assert code == ReleaseExit.STALE_PROCESS, output
    assert f"process {pid} " in output and f"runs release {A}" in output, output
    assert box.current() == f"releases/{A}"


def test_the_status_read_lists_a_script_worker_started_through_current_before_the_switch(box: Box) -> None:
    # VERIFY_PROCESSES off: the deploy lets the stale worker through
    code, output = install(box, A, RESTARTED, _artifact(box, A), verify_processes=False)
    assert code == 0, output
    pid = foreign(box, ["sh", f"{box.app_dir}/current/{WORKER}"], "/")
    _holding(pid, "worker.sh")
    code, output = install(box, B, RESTARTED, _artifact(box, B), verify_processes=False)
    assert code == 0, output

    run = box.run(read_current_body(str(box.app_dir), processes=True))

    assert run.code == 0, run.stderr
    assert other_processes(run.stdout) == OtherProcesses(count=1, shown=(OtherProcess(pid, A, False, "root", "sh"),))


# held: readers holding the file through current open, which run no release's code
FOLLOW = 'exec 3<"$0"; while :; do sleep 1; done'
READERS = {
    "a script elsewhere following the log": ["sh", "{root}/follow.sh", "{app}/current/" + LOG],
    "sh -c with the log as an argument": ["sh", "-c", FOLLOW, "{app}/current/" + LOG],
}


@pytest.mark.parametrize("command", READERS.values(), ids=READERS.keys())
def test_a_shell_reader_following_a_log_through_current_does_not_fail_a_healthy_deploy(
    box: Box, command: list[str]
) -> None:
    (box.root / "follow.sh").write_text('exec 3<"$1"\nwhile :; do sleep 1; done\n')
    code, output = _deploy(box, A)
    assert code == 0, output
    pid = foreign(box, [word.format(app=box.app_dir, root=box.root) for word in command], "/")
    _holding(pid, "app.log")

    code, output = _deploy(box, B)

    assert code == 0, output
    assert box.current() == f"releases/{B}"
