"""The twenty-third outside attack on VERIFY_PROCESSES (issue #17, "Done when"), in the box harness of
test_unit_release_verify.py: the release scripts run for real against a temp APP_DIR and read /proc.

Finding, failed on the code the attack found it in, fixed: a server started through APP_DIR/current
(systemd's ExecStart=/usr/bin/python3 /srv/web-api/current/server.py) before the switch to a release that
renamed that file (server.py became main.py) was judged by nobody: its word names no file under current
any more, so the check said "none runs a replaced release" while it served the release before. Such a
word is now judged as the file it was in the release current pointed to when the process started.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from pipe.release.remote import ReleaseExit
from unit.release.test_unit_release_verify import RESTARTED
from unit.release.verify_support import box_with_secret, foreign, install
from unit.release_support import A, Artifact, B, Box, is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="reading other processes' /proc entries needs root")

SERVER = "import http.server as h; h.HTTPServer(('127.0.0.1', 0), h.SimpleHTTPRequestHandler).serve_forever()"


@pytest.fixture
def box() -> Iterator[Box]:
    yield from box_with_secret("att23ck-Secret-7d1f-value")


def _listening(pid: int) -> None:
    check = f"until ls -l /proc/{pid}/fd 2>/dev/null | grep -q socket; do sleep 0.2; done"
    subprocess.run(["sh", "-c", check], check=True, timeout=60)


def _without_app_txt(box: Box, release: str) -> Artifact:
    """Release ``release`` whose entry point is main.txt: it has no app.txt, A's."""
    return box.artifact({"main.txt": release, "bin": None, "bin/start.sh": "echo start"})


def test_a_server_started_through_a_file_of_current_the_new_release_renamed_fails_the_deploy(box: Box) -> None:
    code, output = install(box, A, RESTARTED)
    assert code == 0, output
    pid = foreign(box, ["python3", "-c", SERVER, f"{box.app_dir}/current/app.txt"], "/")
    _listening(pid)

    code, output = install(box, B, RESTARTED, artifact=_without_app_txt(box, B))

    assert code == ReleaseExit.STALE_PROCESS, output
    assert f"process {pid} " in output and f"runs release {A}, not {B}" in output, output
    assert box.current() == f"releases/{A}"


def test_a_server_of_a_directory_of_current_the_new_release_dropped_does_not_fail_the_deploy(box: Box) -> None:
    """`python3 -m http.server --directory /srv/web-api/current/bin`: a directory is looked up on every
    request, so the server serves what current has now (here: nothing), not the release before."""
    code, output = install(box, A, RESTARTED)
    assert code == 0, output
    pid = foreign(box, ["python3", "-c", SERVER, f"{box.app_dir}/current/bin"], "/")
    _listening(pid)
    without_bin = box.artifact({"app.txt": B})

    code, output = install(box, B, RESTARTED, artifact=without_bin)

    assert code == 0, output
    assert box.current() == f"releases/{B}"
