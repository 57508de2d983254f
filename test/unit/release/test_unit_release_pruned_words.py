"""VERIFY_PROCESSES and a release KEEP_RELEASES pruned while a process started from it still runs, the
process named by a word only (issue #17, attack 41): started from `/` as `python3
/srv/web-api/releases/<A>/server.py` (systemd's ExecStart= with a release path and no
WorkingDirectory=), neither its executable nor its working directory is in the release, and the word's
path is gone with it. It runs a copy of A deleted since it started: never the release installed now.
An operator's command with a terminal that names such a path, and a path that is no release's, condemn
nothing. In the box harness of test_unit_release_verify.py: the release scripts read /proc for real."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pipe.model import SecretRef
from pipe.release.remote import ReleaseExit, install_body
from unit.release.test_unit_release_verify import GRACE, PARAMETER, RESTARTED
from unit.release.verify_support import box_with_secret, foreign
from unit.release_support import SHELLS, A, B, Box, C, D, is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="reading other processes' /proc entries needs root")


@pytest.fixture
def box() -> Iterator[Box]:
    yield from box_with_secret("pruned-Secret-7b1e")


def _install(box: Box, release: str, **changes: object) -> tuple[int, str]:
    changes.setdefault("verify_grace", GRACE)
    plan = box.plan(release, box.release_artifact(release), activate_commands=RESTARTED, **changes)
    run = box.run(install_body(plan), SHELLS[0], secrets=(SecretRef("DB_PASSWORD", PARAMETER),))
    return run.code, run.stdout + run.stderr


def _started_from_root(box: Box, words: list[str], terminal: bool = False) -> int:
    """A process started in `/` whose command line is ``words`` (a loop that never reads them)."""
    command = ["sh", "-c", "while :; do sleep 1; done", *words]
    if terminal:  # an operator's command over ssh: `script` gives it a controlling terminal (not its own)
        loop = 'echo $$ >> \\"$PIDS\\"; while :; do sleep 1; done'  # its pid too: it outlives `script`
        command = ["script", "-q", "-c", f'exec sh -c "{loop}" $WORDS', "/dev/null"]
    return foreign(box, command, "/", {**os.environ, "WORDS": " ".join(words), "PIDS": str(box.out / "foreign-pids")})


def _prune_a(box: Box, **changes: object) -> None:
    """B then C installed after A without the check (KEEP_RELEASES 2): C's install prunes A."""
    for release in (B, C):
        code, output = _install(box, release, verify_processes=False, keep_releases=2, **changes)
        assert code == 0, output
    assert A not in box.releases()


@pytest.mark.parametrize("through", ["app dir", "physical", "after ="])
def test_a_process_named_by_a_word_in_a_release_pruned_since_fails_the_deploy(box: Box, through: str) -> None:
    # APP_DIR a symbolic link to the directory the releases are in (ssm_deploy_physical)
    app_dir = box.root / "app-link"
    box.app_dir.mkdir(parents=True)
    app_dir.symlink_to(box.app_dir)
    code, output = _install(box, A, verify_processes=False, app_dir=str(app_dir))
    assert code == 0, output
    path = {
        "app dir": f"{app_dir}/releases/{A}/bin/start.sh",
        "physical": f"{box.app_dir}/releases/{A}/bin/start.sh",
        "after =": f"--script={app_dir}/releases/{A}/bin/start.sh",
    }[through]
    pid = _started_from_root(box, [path])
    _prune_a(box, app_dir=str(app_dir))

    code, output = _install(box, D, keep_releases=2, app_dir=str(app_dir))

    # switched back to C, which the process does not run either: the instance needs a look (86)
    assert code == ReleaseExit.ACTIVATION_FAILED_ROLLBACK_FAILED, output
    assert f"process {pid} (sh -c " in output
    assert f"runs a copy of release {A} that was deleted since it started, not the {D} installed now" in output
    assert f"runs a copy of release {A} that was deleted since it started, not the {C} installed now" in output
    assert box.current() == f"releases/{C}"


def test_an_operators_command_with_a_terminal_naming_a_pruned_release_condemns_nothing(box: Box) -> None:
    # held: `less /srv/web-api/releases/<A>/logs/app.log` left open over ssh
    code, output = _install(box, A)
    assert code == 0, output
    _started_from_root(box, [f"{box.app_dir}/releases/{A}/logs/app.log"], terminal=True)
    _prune_a(box)
    assert len((box.out / "foreign-pids").read_text().split()) == 2  # `script` and the command in its terminal

    code, output = _install(box, D, keep_releases=2)

    assert code == 0, output


def test_a_word_that_names_no_release_directory_condemns_nothing(box: Box) -> None:
    # releases/ itself, a name that is no release id, a path with .. in it: none is a release's
    code, output = _install(box, A)
    assert code == 0, output
    releases = f"{box.app_dir}/releases"
    _started_from_root(box, [f"{releases}/", f"{releases}/NOT A RELEASE/x", f"{releases}/{A}/../{B}/x"])
    _prune_a(box)

    code, output = _install(box, D, keep_releases=2)

    assert code == 0, output
