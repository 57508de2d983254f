"""Shared fixtures: one local AWS stand-in per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings
from standin import StandIn

# CI runs the same generated cases every time and replays no saved failures (no flaky runs);
# locally each run explores new ones and replays what failed before (.hypothesis/).
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    with StandIn(tmp_path_factory.mktemp("standin"), upload_interval=0.1) as running:
        yield running
