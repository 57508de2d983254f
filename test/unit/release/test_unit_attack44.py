"""The forty-fourth attack on VERIFY_PROCESSES (issue #17): release words and deleted copies, in the box
harness of test_unit_release_verify.py (the release scripts read /proc for real).

Findings, each failed before the fix:

1. A release installed again under its id (it changed on the instance since it was prepared, or came from
   another artifact: `RELEASE: previous`, a retried deploy) while a process of the copy it replaced still
   runs, named by a word only (`python3 /srv/web-api/releases/<A>/server.py` started from `/`): the word's
   path exists again, so the process passed as one of the new copy, running the deleted copy's code.
2. A process started after its release was pruned, naming a path in it (a log follower waiting for
   `releases/<A>/logs/app.log`, a unit's restart loop): it never ran a copy of A, but failed the deploy
   (exit 90, then 86 on the switch back) as "a copy of release A that was deleted since it started".
3. The check takes no lock after the health check (verified_after): a concurrent prune (another deploy with
   LOCK: false) deleting a stale process's release between two reads of the judge let it pass, where the
   same process is condemned before and after the prune.

The install records when it removes a release directory (`.ssm-deploy/removed`: boot id, seconds since
boot, release id; pruned, or removed to be installed again); a word's release removed since the process
started is a deleted copy, one removed before it started is none the process ever ran.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from pipe.model import SecretRef
from pipe.release.remote import ReleaseExit, install_body
from unit.config.test_unit_settings import RELEASE_MODE, STATUS, load, problems_of
from unit.release.test_unit_release_verify import GRACE, PARAMETER, RESTARTED
from unit.release.verify_support import box_with_secret, foreign
from unit.release_support import SHELLS, A, B, Box, C, D, is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="reading other processes' /proc entries needs root")

VALUE = "attack44-Secret-5d0c"


@pytest.fixture
def box() -> Iterator[Box]:
    yield from box_with_secret(VALUE)


def _install(box: Box, release: str, before_call: str = "", **changes: object) -> tuple[int, str]:
    """Install ``release``; ``before_call``: shell text run after the functions are defined (an override)."""
    changes.setdefault("verify_grace", GRACE)
    plan = box.plan(release, box.release_artifact(release), activate_commands=RESTARTED, **changes)
    body = install_body(plan)
    if before_call:
        head, call, tail = body.partition("\nssm_deploy_install")
        body = f"{head}\n{before_call}{call}{tail}"
    run = box.run(body, SHELLS[0], secrets=(SecretRef("DB_PASSWORD", PARAMETER),))
    return run.code, run.stdout + run.stderr


def _started(box: Box, words: list[str], cwd: str = "/") -> int:
    """A process started in ``cwd`` whose command line is ``words`` (a loop that never reads them), with
    this deploy's values: only its release can condemn it."""
    env = {**os.environ, "OUT": str(box.out), "DB_PASSWORD": VALUE}
    return foreign(box, ["sh", "-c", "while :; do sleep 1; done", *words], cwd, env)


@pytest.mark.parametrize("named_by", ["a word", "its working directory"])  # the second held before the fix
def test_a_process_of_the_copy_a_release_installed_again_replaced_fails_the_deploy(box: Box, named_by: str) -> None:
    for release in (A, B):
        code, output = _install(box, release, verify_processes=False)
        assert code == 0, output
    release_a = box.app_dir / "releases" / A
    if named_by == "a word":  # systemd's ExecStart=/usr/bin/python3 /srv/web-api/releases/<A>/server.py
        pid = _started(box, [f"{release_a}/bin/start.sh"])
    else:  # `node bin/start.sh` in the release, as pm2 or a unit's WorkingDirectory= starts it
        pid = _started(box, ["bin/start.sh"], cwd=str(release_a))
    (release_a / "app.txt").write_text("changed on the instance: the code that process runs")

    code, output = _install(box, A)  # RELEASE: previous

    assert f"release {A} on this instance " in output
    assert "installing it again" in output
    assert (release_a / "app.txt").read_text() == A  # installed again from the artifact
    # the switch back to B finds it too (it runs neither): the instance needs a look
    assert code == ReleaseExit.ACTIVATION_FAILED_ROLLBACK_FAILED, output
    assert f"process {pid} (sh -c " in output
    assert f"runs a copy of release {A} that was deleted since it started, not the {A} installed now" in output
    assert f"runs a copy of release {A} that was deleted since it started, not the {B} installed now" in output
    assert box.current() == f"releases/{B}"


def test_a_process_started_after_its_release_was_pruned_condemns_nothing(box: Box) -> None:
    # a log follower started with a path of A after A was pruned (`tail -F .../releases/<A>/logs/app.log`):
    # it runs no copy of A, it never had one
    for release in (A, B, C):
        code, output = _install(box, release, verify_processes=False, keep_releases=2)
        assert code == 0, output
    assert A not in box.releases()
    # the prune's record has the 10-ms tick of /proc/uptime, and a process started in that same tick counts
    # as started before it (the safe side): start it two ticks later, as any real follower is
    time.sleep(0.03)
    _started(box, [f"{box.app_dir}/releases/{A}/logs/app.log"])

    code, output = _install(box, D, keep_releases=2)

    assert code == 0, output
    assert box.current() == f"releases/{D}"


def test_a_release_pruned_while_the_check_reads_its_process_still_condemns_it(box: Box) -> None:
    # another deploy (LOCK: false) prunes A between the judge's look for a deleted copy and its look at the
    # process's words: the override removes A right after the first, for that process only
    for release in (A, B):
        code, output = _install(box, release, verify_processes=False)
        assert code == 0, output
    pid = _started(box, [f"{box.app_dir}/releases/{A}/bin/start.sh"])
    prune = (
        f'ssm_deploy_through_current() {{\n  [ "$1" != {pid} ] || rm -rf -- "$ssm_deploy_releases/{A}"\n  return 1\n}}'
    )

    # no wait for young processes: the first look decides (the race is in one look)
    code, output = _install(box, C, prune, verify_settle=0)

    assert A not in box.releases()
    assert code == ReleaseExit.ACTIVATION_FAILED_ROLLBACK_FAILED, output
    assert f"runs a copy of release {A} that was deleted since it started, not the {C} installed now" in output


def test_an_app_dir_with_a_blank_is_refused_before_anything_runs_while_the_process_check_is_on() -> None:
    # the scan reads a command line's words split at blanks (ssm_deploy_release_in_words,
    # ssm_deploy_through_current, ssm_deploy_in_releases): `python3 '/srv/web api/releases/<A>/server.py'`
    # started from / named no path under APP_DIR and a process of the replaced release passed (exit 0).
    # APP_DIR refuses a space while VERIFY_PROCESSES is on and for ACTION: status (its list of processes),
    # naming the fix; with VERIFY_PROCESSES: 'false' nothing reads command lines, so it is accepted
    why = (
        "must not contain a space while the process check is on (VERIFY_PROCESSES): it reads a process's "
        "command line as words split at blanks and could not find a process of a release there; choose a "
        "path without spaces, e.g. /srv/web-api"
    )
    deploy = problems_of({**RELEASE_MODE, "APP_DIR": "/srv/web api"})
    status = problems_of({**STATUS, "APP_DIR": "/srv/web api"})
    unverified = load({**RELEASE_MODE, "APP_DIR": "/srv/web api", "VERIFY_PROCESSES": "false"})

    assert deploy["APP_DIR"] == [f"{why}, or set VERIFY_PROCESSES: 'false' (giving up that proof)"]
    assert status["APP_DIR"] == [f"{why} with ACTION: status: it lists the processes of each release the same way"]
    assert unverified.release is not None and unverified.release.app_dir == "/srv/web api"


def test_a_prune_whose_record_cannot_be_written_removes_nothing(box: Box) -> None:
    # review: a removal the record lost (a full disk) let a process of the copy it deleted pass once the
    # release was installed again (an older line for its id said "removed before it started"): the line is
    # written first, and a removal it cannot record does not happen
    for release in (A, B):
        code, output = _install(box, release, verify_processes=False, keep_releases=2)
        assert code == 0, output
    (box.app_dir / ".ssm-deploy" / "removed").mkdir()  # no line can be added to it

    code, output = _install(box, C, verify_processes=False, keep_releases=2)

    assert code == 0, output
    assert A in box.releases()
    assert f"could not remove release {A}" in output
