"""The forty-second attack on VERIFY_PROCESSES (issue #17), hunting false failures of attack 38's rule (a
shell's script is the file it runs, not one it follows), in the box harness of test_unit_release_verify.py.

Finding, failed before the fix: a shell that reads its commands from standard input (`sh -s`, `bash -s`:
`... | sh -s -- current/logs/app.log`, a log shipper fed its code by a pipe) runs no file: its first word
after the options is its first argument, the file it follows. The rule took it for the script the shell
runs, so a reader started through current before the switch failed a healthy deploy (exit 90) and the
status read listed it, where attack 38's held readers (`sh -c '...' current/logs/app.log`) pass.
"""

from __future__ import annotations

import subprocess

import pytest

from pipe.release.remote import ReleaseExit
from unit.release.test_unit_attack38 import FOLLOW, LOG, WORKER, _deploy, _holding
from unit.release.test_unit_attack38 import box as box  # the fixture
from unit.release.verify_support import foreign
from unit.release_support import A, B, Box, is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="reading other processes' /proc entries needs root")

# the shell and its options; the file through current is its first argument, its commands come on stdin
READERS = {"sh -s": ["sh", "-s"], "bash -s --": ["bash", "-s", "--"], "sh -es": ["sh", "-es"]}


def _fed(box: Box, command: list[str]) -> subprocess.Popen[bytes]:
    """Start ``command`` from /, its commands (FOLLOW, with $1 for $0) written to a pipe kept open."""
    process = subprocess.Popen(
        command, cwd="/", stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    assert process.stdin is not None
    process.stdin.write(FOLLOW.replace("$0", "$1").encode() + b"\n")
    process.stdin.flush()
    with (box.out / "foreign-pids").open("a") as pids:
        pids.write(f"{process.pid}\n")
    return process


@pytest.mark.parametrize("shell", READERS.values(), ids=READERS.keys())
def test_a_shell_reading_its_commands_from_stdin_and_following_a_log_through_current_passes(
    box: Box, shell: list[str]
) -> None:
    code, output = _deploy(box, A)
    assert code == 0, output
    reader = _fed(box, [*shell, f"{box.app_dir}/current/{LOG}"])
    _holding(reader.pid, "app.log")

    code, output = _deploy(box, B)

    assert code == 0, output
    assert box.current() == f"releases/{B}"


def test_a_script_worker_run_by_a_shell_with_options_before_it_still_fails_the_deploy(box: Box) -> None:
    # the fix's other side: `bash -e -x current/bin/worker.sh` runs the script (no -s, no -c)
    code, output = _deploy(box, A)
    assert code == 0, output
    pid = foreign(box, ["bash", "-e", "-x", f"{box.app_dir}/current/{WORKER}"], "/")
    _holding(pid, "worker.")

    code, output = _deploy(box, B)

    assert code == ReleaseExit.STALE_PROCESS, output
    assert f"runs release {A}" in output
