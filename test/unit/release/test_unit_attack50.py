"""The fiftieth attack on VERIFY_PROCESSES (issue #17): deleted release directories, in the box harness of
test_unit_release_verify.py (the release scripts read /proc for real).

Finding, failed before the fix:

1. A process whose only link to a release is a working directory deleted since (pruned): a `sleep` an
   operator left there with nohup, or a loop with no argument, lost its terminal when the session ended. It
   failed the deploy (exit 90, then 86 on the switch back) as "a copy of release A that was deleted since it
   started", where the same process in the directory while it existed condemns nothing ("A working
   directory alone condemns nothing"). The deleted directory is now judged by the same rules: a server
   (it listens) or a process with a word that may name a file there (its entries are gone, so every word
   after its program that is no option counts: `python3 worker.py`) is a deleted copy; nothing else is.

Held (decided, README "Readers and terminals"): a follower naming a file of a pruned release by its release
path (`tail -F /srv/web-api/releases/<A>/logs/app.log`) started before the prune stays condemned, as it is
while A exists: the reader exemption is for paths through `current` only, because a program that keeps its
code file open (`java -jar releases/<A>/app.jar`, a worker) cannot be told from a reader by /proc.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pipe.release.remote import ReleaseExit
from unit.release.test_unit_attack44 import VALUE, _install
from unit.release.verify_support import box_with_secret, foreign
from unit.release_support import A, B, Box, C, D, is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="reading other processes' /proc entries needs root")


@pytest.fixture
def box() -> Iterator[Box]:
    yield from box_with_secret(VALUE)


def _started_in(box: Box, release: str, argv: list[str]) -> int:
    """``argv`` started in ``release``'s directory with no terminal (a session of its own)."""
    env = {**os.environ, "OUT": str(box.out), "DB_PASSWORD": VALUE}
    return foreign(box, argv, str(box.app_dir / "releases" / release), env)


def _a_pruned_under(box: Box, argv: list[str]) -> int:
    """A, B and C installed (no check), ``argv`` started in A, A pruned by C (KEEP_RELEASES 2)."""
    code, output = _install(box, A, verify_processes=False, keep_releases=2)
    assert code == 0, output
    pid = _started_in(box, A, argv)
    for release in (B, C):
        code, output = _install(box, release, verify_processes=False, keep_releases=2)
        assert code == 0, output
    assert A not in box.releases()
    assert os.readlink(f"/proc/{pid}/cwd").endswith(f"/releases/{A} (deleted)")
    return pid


@pytest.mark.parametrize(
    "argv",
    [["sleep", "100000"], ["sleep", "--", "100000"], ["tail", "-f", "/dev/null"], ["bash", "-l"]],
    ids=["sleep", "sleep-with-options", "a-file-outside", "a-login-shell"],
)
def test_a_process_whose_only_link_is_a_pruned_working_directory_condemns_nothing(box: Box, argv: list[str]) -> None:
    # `nohup sleep 100000 &` left in releases/<A> by an operator whose ssh session ended (no terminal left);
    # the same in A while it exists condemns nothing. Before the fix: exit 86, "a copy of release A that
    # was deleted since it started". A login shell reads stdin (/dev/null here) and ends: one titled `-bash`
    if argv[0] == "bash":
        argv = ["bash", "-c", "exec -a -bash sleep 100000"]
    _a_pruned_under(box, argv)

    code, output = _install(box, D, keep_releases=2)

    assert code == 0, output
    assert box.current() == f"releases/{D}"


@pytest.mark.parametrize(
    "argv",
    [
        ["sh", "-c", "while :; do sleep 1; done", "worker.py"],  # `python3 worker.py`: a word of A
        ["python3", "-m", "http.server", "0", "--bind", "127.0.0.1"],  # a server, no path in its words
    ],
    ids=["a-word-of-it", "a-server"],
)
def test_a_worker_or_server_in_a_pruned_working_directory_is_a_deleted_copy(box: Box, argv: list[str]) -> None:
    # held: its files are gone and cannot be looked up; a word that may name one, or a socket, condemns it
    pid = _a_pruned_under(box, argv)

    code, output = _install(box, D, keep_releases=2)

    assert code == ReleaseExit.ACTIVATION_FAILED_ROLLBACK_FAILED, output
    assert f"process {pid} (" in output
    assert f"runs a copy of release {A} that was deleted since it started, not the {D} installed now" in output
    assert box.current() == f"releases/{C}"


def test_a_follower_of_a_pruned_releases_file_by_its_release_path_stays_condemned(box: Box) -> None:
    # held, decided: `tail -F /srv/web-api/releases/<A>/app.txt` (no terminal) started while A was live;
    # it is condemned while A exists ("runs release A") and once A is pruned alike: a word naming a release
    # path ties a process to that release, reader or not (java -jar holds its code open as tail its log)
    code, output = _install(box, A, verify_processes=False, keep_releases=2)
    assert code == 0, output
    pid = _started_in(box, A, ["tail", "-F", f"{box.app_dir}/releases/{A}/app.txt"])
    code, output = _install(box, B, keep_releases=2)
    assert code == ReleaseExit.STALE_PROCESS, output
    assert f"process {pid} (tail -F {box.app_dir}/releases/{A}/app.txt) runs release {A}, not {B}" in output
    for release in (B, C):
        code, output = _install(box, release, verify_processes=False, keep_releases=2)
        assert code == 0, output
    assert A not in box.releases()

    code, output = _install(box, D, keep_releases=2)

    assert code == ReleaseExit.ACTIVATION_FAILED_ROLLBACK_FAILED, output
    assert f"runs a copy of release {A} that was deleted since it started, not the {D} installed now" in output
