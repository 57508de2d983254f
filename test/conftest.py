"""Shared fixtures: one local AWS stand-in per test session (per pytest-xdist worker), and the
instances' RUN_AS user."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings
from standin.users import APP_USER, AppUser, ensure_app_user

if TYPE_CHECKING:  # imported when a test first asks for it: the fast path never loads moto
    from standin import StandIn

# CI runs the same generated cases every time and replays no saved failures (no flaky runs);
# locally each run explores new ones and replays what failed before (.hypothesis/).
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(scope="session")
def standin() -> Iterator[StandIn]:
    from standin import StandIn

    with StandIn(upload_interval=0.1) as running:
        yield running


ASSOCIATION_RUNS_TIMEOUT = 120  # seconds: an association applied to every managed instance of a worker


@pytest.fixture(autouse=True)
def _retire_instances(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that uses the stand-in, retire the instances it launched (its own fixtures'
    included; those of module- or session-scoped fixtures, set up before this one, are left):
    their apps and pm2 daemons would otherwise run, and be health-checked, until the session ends.
    The State Manager runs the test started end first: an association updated near a test's end
    otherwise sent its document during the next test, which counted a SendCommand it never made."""
    if "standin" not in request.fixturenames:
        yield
        return
    running: StandIn = request.getfixturevalue("standin")
    before = set(running.fleet.ids())
    yield
    running.associations.wait_idle(ASSOCIATION_RUNS_TIMEOUT)
    running.retire([instance_id for instance_id in running.fleet.ids() if instance_id not in before])


@pytest.fixture(scope="session")
def app_user() -> AppUser:
    """``ssmdeploy-app``, a real second user for RUN_AS with an Amazon Linux login environment
    (see test/standin/users.py): created once if missing, never removed. Skips only where the tests
    do not run as root (CI runs them as root; there a failure to create it is an error)."""
    if os.geteuid() != 0:
        pytest.skip(f"creating the RUN_AS user {APP_USER} needs root")
    return ensure_app_user()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the stand-in is marked ``standin``, so ``-m "not standin"`` (the fast
    path) leaves out exactly the tests that need it. Tests marked ``slow`` run first: pytest-xdist
    (``--dist loadgroup``) hands out tests in this order, so the long ones do not start last and
    keep one worker busy while the others idle."""
    for item in items:
        if "standin" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.standin)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: otherwise as collected
