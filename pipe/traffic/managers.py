"""The traffic managers a deploy may use, planned in this order (``pipe/traffic/__init__.py``)."""

from __future__ import annotations

from pipe.traffic import Planner
from pipe.traffic.target_groups.plan import plan_target_groups

PLANNERS: tuple[Planner, ...] = (plan_target_groups,)
