"""Plans for in-process tests: ``planned``, the plan ``build_plan`` would make for instances known in
advance, without reading AWS (for the apply side); ``World``, a fake fleet ``build_plan`` reads."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import boto3
from unit.unit_support import INSTANCE_A, INSTANCE_B, INSTANCE_C, REGION, make_settings

from functional.fake_elb import FakeELB, FakeGroup
from functional.fake_fleet import FakeFleet, FakeInstance
from pipe.apply.run import Run
from pipe.aws.authenticate import Identity
from pipe.aws.clients import Clients
from pipe.config.settings import DeploySettings, ReleaseSettings
from pipe.execution import Execution
from pipe.model import SecretRef, Target
from pipe.plan import DeployPlan
from pipe.plan.batches import plan_batches
from pipe.plan.bounds import deploy_bounds
from pipe.plan.build import build_plan
from pipe.release.ledger import (
    EntryStatus,
    Groups,
    LedgerEntry,
    ReleaseInfo,
    RunInfo,
    ledger_name,
    utc_timestamp,
)
from pipe.runtime.interruption import StopRequests
from pipe.runtime.redaction import Redactor

ROLE = "arn:aws:sts::123456789012:assumed-role/deploy/ssm-deploy"
IDENTITY = Identity(ROLE, "123456789012")
IDS = [INSTANCE_A, INSTANCE_B, INSTANCE_C]
DB_PASSWORD = "pl4n-Db-Passw0rd"
API_KEY = "pl4n-Api-K3y"
BUCKET = "releases"
LEDGER = ledger_name("app", "production")
SHIPPED = "000007-0123456"
PROD = Target("tag:Env", ("prod",))


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


class World:
    """The fleet the plan reads, the settings it is made for, and the clone directory."""

    def __init__(self, tmp_path: Path) -> None:
        self.fleet = FakeFleet(
            instances={i: FakeInstance(tags={"Name": f"web-{n}", "Env": "prod"}) for n, i in enumerate(IDS, 1)},
            parameters={"/app/db": DB_PASSWORD, "/app/env/api_key": API_KEY},
        )
        self.elb = FakeELB(FakeGroup("web", targets={(i, 3000): "healthy" for i in IDS}))
        self.clone = tmp_path
        (tmp_path / "build").mkdir()
        (tmp_path / "build" / "server.js").write_text("console.log('v8')\n")
        self.settings = make_settings(instance_ids=IDS, secrets=[SecretRef("DB_PASSWORD", "/app/db")])
        self.redactor = Redactor()

    def change(self, **fields: Any) -> None:
        self.settings = dataclasses.replace(self.settings, **fields)

    def release_mode(self, **fields: Any) -> None:
        values: dict[str, Any] = {"bucket": BUCKET, "prefix": "app/", "app_dir": "/srv/app", "artifact": "build"}
        self.change(release=ReleaseSettings(**{**values, **fields}))

    def plan(self) -> DeployPlan:
        clients = Clients(boto3.Session(region_name=REGION), REGION)
        for service in ("ec2", "ssm", "cloudwatch", "resource_groups", "s3"):
            setattr(clients, service, self.fleet.client(service))
        clients.elbv2 = self.elb  # type: ignore[assignment]
        ctx = Execution(clients, StopRequests(), self.redactor)
        return build_plan(self.settings, IDENTITY, deploy_bounds(self.settings), ctx, str(self.clone))


def shipped(fleet: FakeFleet) -> None:
    """The ledger records release SHIPPED as live on every instance."""
    digest = "ab" * 32
    entry = LedgerEntry(
        release=ReleaseInfo(SHIPPED, "0123456789ab", "7", f"app/{digest}.tar.gz", digest),
        run=RunInfo("7", "0123456789ab", "", ""),
        action="deploy",
        status=EntryStatus.SUCCEEDED.value,
        fleet=Groups.of(dict.fromkeys(IDS, SHIPPED)),
        instances=Groups.of(dict.fromkeys(IDS, EntryStatus.SUCCEEDED.value)),
        time=utc_timestamp(),
        previous_release="",
    )
    fleet.history[LEDGER] = [entry.to_json()]
