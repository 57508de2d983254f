"""The fourth outside attack on VERIFY_PROCESSES (issue #17, "Done when"), in the box harness of
test_unit_release_verify.py: the release script runs for real against a temp APP_DIR and reads /proc.

Each test asserts what SHOULD hold; each failed on the code the attack found it in, and is fixed:
- an operator's ``tail -f`` started in ``current`` before the deploy fails a healthy deploy;
- a server that resolves ``current`` per request (a static file server rooted in current) is condemned
  as "started through current before the switch" although it serves the new release;
- after a switch back, a process of the failed release is named with its command line unmasked: a
  secret passed as an argument is printed in full."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Iterator

import pytest

from pipe.release.remote import ReleaseExit
from unit.release.test_unit_release_verify import PARAMETER, RESTARTED
from unit.release.verify_support import box_with_secret, foreign, free_port, install
from unit.release_support import ACTIVATE, A, Artifact, B, Box, C, is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="reading other processes' /proc entries needs root")

SECRET_CORE = "att4ck-Secret-9b7e"  # a leak shows up as this
SECRET = SECRET_CORE + "-tail"


@pytest.fixture
def box() -> Iterator[Box]:
    yield from box_with_secret(None)


def test_an_operators_tail_in_current_started_before_the_deploy_does_not_fail_it(box: Box) -> None:
    box.store_parameter(PARAMETER, SECRET)
    code, output = install(box, A, RESTARTED)
    assert code == 0, output
    # `ssh instance; cd /srv/web-api/current; tail -f app.txt` (a log file): the kernel keeps the
    # physical directory, releases/A; over ssh, tail has the session's terminal (here a pty of its own)
    spawn = "import pty; pty.spawn(['tail', '-f', 'app.txt'])"
    foreign(box, ["python3", "-c", spawn], str(box.app_dir / "current"))

    code, output = install(box, B, RESTARTED)

    # the service was restarted on B: the deploy is healthy, whoever reads a file of A
    assert code == 0, output
    assert box.current() == f"releases/{B}"


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=30) as response:
        return str(response.read().decode())


def test_a_server_that_resolves_current_per_request_is_not_condemned(box: Box) -> None:
    box.store_parameter(PARAMETER, SECRET)

    def artifact(release: str) -> Artifact:
        files = {"app.txt": release, "bin": None, "bin/start.sh": "echo start", "public": None}
        return box.artifact({**files, "public/version.txt": release})

    code, output = install(box, A, RESTARTED, artifact=artifact(A))
    assert code == 0, output
    port = free_port()
    # `caddy file-server --root /srv/web-api/current/public`: every request opens current/public/...
    root = str(box.app_dir / "current" / "public")
    foreign(box, ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", root], "/")
    for _ in range(200):  # wait for the server, then let a clock tick pass before the switch
        try:
            assert _get(port, "version.txt") == A
            break
        except OSError:
            subprocess.run(["sleep", "0.05"], check=True)
    subprocess.run(["sleep", "1.1"], check=True)
    code, output = install(box, B, RESTARTED, artifact=artifact(B), verify_processes=False)
    assert code == 0, output
    assert _get(port, "version.txt") == B  # the truth: it serves whatever current points to

    code, output = install(box, C, RESTARTED, artifact=artifact(C))

    assert _get(port, "version.txt") == box.current().removeprefix("releases/")  # type: ignore[union-attr]
    assert code == 0, output  # it serves C: nothing runs a replaced release
    assert box.current() == f"releases/{C}"


# B's activation starts a worker given the token as an argument (--token=..., java -Dtoken=...), then
# fails: the script switches back to A, activates A (which does not know B's worker) and verifies
WORKER_THEN_FAIL = ACTIVATE.replace(
    "then exit 9; fi",
    "then\n"
    '  sh -c \'while :; do sleep 1; done\' "--token=$DB_PASSWORD" "$PWD/bin/start.sh" </dev/null >/dev/null 2>&1 &\n'
    '  echo $! >> "$OUT/pids"\n'
    "  exit 9\n"
    "fi",
)


def test_after_a_switch_back_a_secret_in_the_failed_releases_command_line_is_masked(box: Box) -> None:
    assert WORKER_THEN_FAIL != ACTIVATE
    box.store_parameter(PARAMETER, SECRET)
    code, output = install(box, A, WORKER_THEN_FAIL)
    assert code == 0, output

    code, output = install(box, B, WORKER_THEN_FAIL, artifact=box.release_artifact(B, **{"fail-activation": ""}))

    assert code == ReleaseExit.ACTIVATION_FAILED_ROLLBACK_FAILED, output
    assert f"runs release {B}, not {A}" in output  # the check named B's worker
    assert "--token=" in output
    assert SECRET_CORE not in output, output
