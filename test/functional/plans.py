"""Plans and runs for in-process tests of the apply side: the plan ``build_plan`` would make for
instances known in advance, without reading AWS."""

from __future__ import annotations

from typing import Any

from pipe.aws.clients import Clients
from pipe.config.settings import DeploySettings
from pipe.plan import DeployPlan
from pipe.plan.bounds import deploy_bounds
from pipe.run import Run
from pipe.runtime.interruption import StopRequests
from pipe.runtime.redaction import Redactor
from pipe.stages.authenticate import Identity
from pipe.stages.rollout_plan import plan_batches

ROLE = "arn:aws:sts::123456789012:assumed-role/deploy/ssm-deploy"
IDENTITY = Identity(ROLE, "123456789012")


def planned(settings: DeploySettings, **fields: Any) -> DeployPlan:
    """The plan of INSTANCE_IDS as given, batched as ``plan_batches`` batches them; ``fields``
    replace any of the plan's other fields."""
    ids = list(settings.instance_ids)
    values: dict[str, Any] = {
        "settings": settings,
        "identity": IDENTITY,
        "bounds": deploy_bounds(settings),
        "instances": tuple(ids),
        "batches": tuple(plan_batches(settings, ids)),
        "secrets": tuple(settings.secrets),
        **fields,
    }
    return DeployPlan(**values)


def applying(plan: DeployPlan, clients: Clients, stops: StopRequests | None = None) -> Run:
    return Run(clients=clients, stops=stops or StopRequests(), redactor=Redactor(), plan=plan)
