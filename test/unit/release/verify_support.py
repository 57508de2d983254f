"""What the tests of VERIFY_PROCESSES beyond test_unit_release_verify.py share (attacks 4 to 8, 38, 41, 42):
a box whose PARAMETER holds a secret, an install as they run it, a process started as an operator would,
a free port. In the box harness of test_unit_release_verify.py: the release scripts read /proc for real."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator

from pipe.model import SecretRef
from pipe.release.remote import install_body
from unit.release.test_unit_release_verify import GRACE, PARAMETER, _stop_services
from unit.release_support import SHELLS, Artifact, Box, open_temp_dir


def box_with_secret(secret: str | None) -> Iterator[Box]:
    """A box whose PARAMETER holds ``secret`` (None: none stored); the services its tests started are
    stopped after."""
    for root in open_temp_dir():
        made = Box(root)
        if secret is not None:
            made.store_parameter(PARAMETER, secret)
        try:
            yield made
        finally:
            _stop_services(made)


def install(
    box: Box, release: str, activate: str, artifact: Artifact | None = None, staged: bool = False, **changes: object
) -> tuple[int, str]:
    """Install ``release`` with ``activate`` as ACTIVATE_COMMANDS, DB_PASSWORD from PARAMETER (and OUT)
    exported, the short grace: the exit code and the output."""
    changes.setdefault("verify_grace", GRACE)
    changes.setdefault("env_names", ("DB_PASSWORD", "OUT"))
    plan = box.plan(release, artifact or box.release_artifact(release), activate_commands=activate, **changes)
    run = box.run(install_body(plan, staged=staged), SHELLS[0], secrets=(SecretRef("DB_PASSWORD", PARAMETER),))
    return run.code, run.stdout + run.stderr


def foreign(box: Box, command: list[str], cwd: str, env: dict[str, str] | None = None) -> int:
    """Start a process that is not the service (killed after the test), as an operator would."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    with (box.out / "foreign-pids").open("a") as pids:
        pids.write(f"{process.pid}\n")
    return process.pid


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
