"""The traffic managers a deploy may use, planned in this order (``pipe/traffic/__init__.py``)."""

from __future__ import annotations

from pipe.traffic import Planner
from pipe.traffic.auto_scaling.plan import plan_auto_scaling
from pipe.traffic.target_groups.plan import plan_target_groups

# the groups first: they hold scaling around the whole rollout, whose batches the target groups drain
PLANNERS: tuple[Planner, ...] = (plan_auto_scaling, plan_target_groups)
