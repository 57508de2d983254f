"""ACTION: status's read (``read_current_body`` with processes): besides where ``current`` points, the
processes running from another release, found by the deploy's own scan (VERIFY_PROCESSES) by their paths
only, listed as ``PID RELEASE running|deleted USER COMMAND`` after a count, and read back by
``other_processes``. The "service" is test_unit_release_verify.py's shell loop, started once from the
release it was activated in and never restarted (the stale recipe), and its box."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pipe.release.remote import (
    PROCESS_REPORT,
    PROCESSES_NOT_READ,
    PROCESSES_REPORT,
    PROCESSES_SHOWN,
    OtherProcess,
    OtherProcesses,
    current_report,
    install_body,
    other_processes,
    read_current_body,
)
from unit.release.test_unit_release_verify import RESTARTED, STARTED_ONCE, _in_another_mount_namespace
from unit.release.test_unit_release_verify import box as box
from unit.release_support import ACTIVATE, SHELLS, A, B, Box, is_root


def _install(box: Box, release: str, activate: str) -> None:
    # VERIFY_PROCESSES off: the deploy lets the stale process through, as a switch back that failed does
    plan = box.plan(release, box.release_artifact(release), activate_commands=activate, verify_processes=False)
    run = box.run(install_body(plan))
    assert run.code == 0, run.stdout + run.stderr


@pytest.mark.skipif(not is_root(), reason="reading other processes' /proc entries needs root")
@pytest.mark.parametrize("shell", SHELLS)
def test_the_read_lists_a_process_of_another_release_than_current(box: Box, shell: str) -> None:
    _install(box, A, STARTED_ONCE)
    _install(box, B, STARTED_ONCE)
    [pid] = [int(line) for line in (box.out / "pids").read_text().split()]
    assert Path(f"/proc/{pid}/cwd").resolve() == box.app_dir / "releases" / A

    run = box.run(read_current_body(str(box.app_dir), processes=True), shell)

    assert run.code == 0, run.stderr
    assert current_report(run.stdout) == B
    assert other_processes(run.stdout) == OtherProcesses(count=1, shown=(OtherProcess(pid, A, False, "root", "sh"),))
    assert "start.sh" not in run.stdout  # the command name only, never the arguments


@pytest.mark.skipif(not is_root(), reason="reading other processes' /proc entries needs root")
def test_the_read_lists_nothing_when_the_processes_follow_current(box: Box) -> None:
    _install(box, A, RESTARTED)
    _install(box, B, RESTARTED)

    run = box.run(read_current_body(str(box.app_dir), processes=True))

    assert run.code == 0, run.stderr
    assert current_report(run.stdout) == B
    assert other_processes(run.stdout) == OtherProcesses(count=0)


@pytest.mark.skipif(not is_root(), reason="reading other processes' /proc entries needs root")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare for a second mount namespace")
def test_the_read_lists_a_container_whose_volume_is_the_replaced_release(box: Box) -> None:
    # `docker run -v /srv/web-api/current:/app` left running: its paths are its own (cwd /app)
    _install(box, A, RESTARTED)
    volume = box.root / "container-app"
    volume.mkdir()
    inside = (
        f'mount --bind "{box.app_dir}/current" "{volume}" && cd "{volume}" && echo $$ > "{box.out}/foreign-pids"'
        " && exec sh -c 'while :; do sleep 1; done' bin/start.sh"
    )
    foreign = _in_another_mount_namespace(box, inside)
    _install(box, B, RESTARTED)

    run = box.run(read_current_body(str(box.app_dir), processes=True))

    assert run.code == 0, run.stderr
    listed = OtherProcesses(count=1, shown=(OtherProcess(foreign, A, False, "root", "sh"),))
    assert other_processes(run.stdout) == listed


def test_the_deploys_read_does_not_scan_the_processes(box: Box) -> None:
    body = read_current_body(str(box.app_dir))
    assert "ssm_deploy_scan" not in body and PROCESSES_REPORT not in body
    assert other_processes(box.run(body).stdout) is None


def test_the_list_is_parsed_bounded_and_cleaned() -> None:
    lines = [f"{PROCESS_REPORT}{100 + n} {A} running web node /srv/web-a" for n in range(PROCESSES_SHOWN + 3)]
    stdout = "\n".join(["ssm-deploy: current release: " + B, f"{PROCESSES_REPORT}42", *lines])

    listed = other_processes(stdout)

    assert listed is not None
    assert listed.count == 42
    assert len(listed.shown) == PROCESSES_SHOWN
    assert listed.shown[0] == OtherProcess(100, A, False, "web", "node /srv/web-a")


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ("no list at all", None),
        (f"{PROCESSES_REPORT}many", None),
        (f"{PROCESSES_REPORT}0", OtherProcesses()),
        (f"{PROCESSES_REPORT}{PROCESSES_NOT_READ}not root", OtherProcesses(not_read="not root")),
        # a line that is no process line is not one; the count still says how many there are
        (f"{PROCESSES_REPORT}1\n{PROCESS_REPORT}x {A} running root sh", OtherProcesses(count=1)),
        (f"{PROCESSES_REPORT}1\n{PROCESS_REPORT}7 {A} asleep root sh", OtherProcesses(count=1)),
        # a deleted copy; a release directory whose name is no release id; control characters
        (
            f"{PROCESSES_REPORT}1\n{PROCESS_REPORT}7 old?copy deleted root a\x1bb",
            OtherProcesses(1, (OtherProcess(7, "old?copy", True, "root", "a?b"),)),
        ),
        (
            f"{PROCESSES_REPORT}0\n{PROCESS_REPORT}7 ../x running root sh",
            OtherProcesses(1, (OtherProcess(7, "?", False, "root", "sh"),)),
        ),
    ],
)
def test_what_the_list_says_is_read_strictly(stdout: str, expected: OtherProcesses | None) -> None:
    assert other_processes(stdout) == expected


# --- a switch's time and a process's start, in clock ticks ------------------------------------------


# a server (it listens: the scan judges it by the file it was started as) that says when it listens
SERVER = """\
import os, socket, sys, time
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
with open(sys.argv[1], "w") as listening:
    listening.write(str(os.getpid()))
time.sleep(3600)
"""


def _start_tick(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19])


def _ticks(seconds: str) -> int:
    return round(float(seconds) * os.sysconf("SC_CLK_TCK"))


@pytest.mark.skipif(not is_root(), reason="reading other processes' /proc entries needs root")
def test_what_the_activation_starts_begins_in_a_later_tick_than_the_switch(box: Box) -> None:
    # ACTIVATE_COMMANDS' `systemctl restart` a moment after the switch: were it started in the tick the
    # switch was recorded in, the scan would count it as started before the switch, running the release left
    start_tick = "cut -d ' ' -f 22 /proc/self/stat >> \"$OUT/started\"\n"
    for release in (A, B, A, B):
        _install(box, release, ACTIVATE + start_tick)

    started = [int(line) for line in (box.out / "started").read_text().split()]
    switches = (box.app_dir / ".ssm-deploy" / "switches").read_text().splitlines()
    assert len(switches) == 8  # per switch: read before current moves and after
    for switch, activation in zip(pairwise_lines(switches), started[1:], strict=True):
        assert all(_ticks(line.split()[1]) < activation for line in switch), (switches, started)


def pairwise_lines(lines: list[str]) -> list[tuple[str, str]]:
    # the switches after the first install's (which left nothing: "-"), two lines each
    return [(lines[n], lines[n + 1]) for n in range(2, len(lines), 2)]


@pytest.mark.skipif(not is_root(), reason="reading other processes' /proc entries needs root")
def test_a_process_started_in_the_tick_of_a_switch_counts_as_started_before_it(box: Box) -> None:
    # a server started through current (cwd /) in the very tick the switch to B was recorded in may have
    # started before current moved: when in doubt, it runs the release the switch left (A), and the read
    # lists it (the deploy's scan fails it); the tick's time in 2 decimals, as /proc/uptime writes it
    serve = {"bin/serve.py": SERVER}
    for release in (A, B):
        plan = box.plan(release, box.release_artifact(release, **serve), activate_commands="", verify_processes=False)
        assert box.run(install_body(plan)).code == 0
    server = f"{box.app_dir}/current/bin/serve.py"
    subprocess.Popen(
        ["sh", "-c", f'echo $$ > "{box.out}/foreign-pids"; cd / && exec python3 "$0" "{box.out}/listening"', server],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    pid = _pid_written(box.out / "foreign-pids")
    _pid_written(box.out / "listening")
    tick = _start_tick(pid)
    assert os.sysconf("SC_CLK_TCK") == 100
    switches = box.app_dir / ".ssm-deploy" / "switches"
    *earlier, switched, _moved = switches.read_text().splitlines()
    boot, _, left = switched.split()
    assert left == A
    switches.write_text("\n".join([*earlier, f"{boot} {tick // 100}.{tick % 100:02d} {A}"]) + "\n")

    run = box.run(read_current_body(str(box.app_dir), processes=True))

    assert run.code == 0, run.stderr
    listed = OtherProcesses(count=1, shown=(OtherProcess(pid, A, False, "root", "python3"),))
    assert other_processes(run.stdout) == listed


def _pid_written(file: Path) -> int:
    for _ in range(200):
        if file.exists() and file.read_text().strip():
            return int(file.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{file} names no process")
