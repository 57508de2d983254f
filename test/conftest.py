"""Shared fixtures: one local AWS stand-in per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from standin import StandIn


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    with StandIn(tmp_path_factory.mktemp("standin"), upload_interval=0.1) as running:
        yield running
