"""pipe.plan.bounds: the deploy's time bounds, computed once from the settings."""

from __future__ import annotations

from pipe.plan.bounds import deploy_bounds
from unit.unit_support import make_settings


def test_the_bound_counts_every_command_the_deploy_may_send() -> None:
    settings = make_settings(
        delivery_timeout=600, execution_timeout=3600, healthcheck_commands="curl -f localhost", healthcheck_timeout=300
    )
    assert deploy_bounds(settings, 120).aws_seconds == (600 + 3600 + 120) + (600 + 300 + 120)
    with_rollback = make_settings(delivery_timeout=60, execution_timeout=100, rollback_commands="./undo")
    assert deploy_bounds(with_rollback, 120).aws_seconds == 2 * (60 + 100 + 120)
    assert deploy_bounds(make_settings(wait=False), 120).aws_seconds == 120
