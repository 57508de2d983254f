"""ACTION: status end to end: after two release deploys to a fleet of two, status prints both releases
from the ledger and finds no drift without touching the deploy lock; an instance whose ``current`` was
switched by hand, or whose agent is offline, is named and fails the step; the result file says the same;
the README's status policy is enough."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e.release_support import build_bare
from e2e.test_least_privilege import documented_policy, runnable_in_moto
from e2e.test_releases import APP_DIR, release_env
from standin import StandIn
from support import PipeRun, run_pipe

pytestmark = pytest.mark.xdist_group("status")  # one fleet, deployed once, for the module's tests
FIRST, SECOND = "000001-0123456", "000002-0123456"
BUILD_URL = "https://bitbucket.org/acme/web-api/pipelines/results/2"


@dataclass(frozen=True)
class Deployed:
    """Two instances that ran release 1, then release 2, of one service."""

    standin: StandIn
    ids: list[str]
    clone: Path
    bucket: str
    service: str

    def status(self, **extra: str) -> PipeRun:
        # the deploy's own step definition with ACTION: status: what only a deploy uses is ignored
        deploy = {"ARTIFACT": "web-api.tgz", "LOCK": "true", "DRY_RUN": "true"}
        env = release_env(self.standin, self.ids, self.clone, self.bucket, self.service, **deploy)
        return run_pipe(env | {"ACTION": "status", "BITBUCKET_BUILD_NUMBER": "3"} | extra)

    def result(self) -> dict[str, object]:
        document: dict[str, object] = json.loads((self.clone / "ssm-deploy-result.json").read_text())
        return document


@pytest.fixture(scope="module")
def deployed(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    clone = tmp_path_factory.mktemp("status")
    bucket, service = f"artifacts-{uuid.uuid4().hex[:8]}", f"svc{uuid.uuid4().hex[:8]}"
    standin.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": standin.region})
    ids = standin.launch(2)
    for number, version in (("1", "A"), ("2", "B")):
        artifact = build_bare(clone, version)
        env = release_env(standin, ids, clone, bucket, service, ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER=number)
        run = run_pipe(env)
        assert run.returncode == 0, run.output
    return Deployed(standin, ids, clone, bucket, service)


@pytest.fixture
def switched_by_hand(deployed: Deployed) -> Iterator[str]:
    """The second instance's ``current`` switched back to release 1 by hand, then put back."""
    current = deployed.standin.instance_path(deployed.ids[1], f"{APP_DIR}/current")
    before = os.readlink(current)
    _point(current, f"releases/{FIRST}")
    yield deployed.ids[1]
    _point(current, before)


@pytest.fixture
def offline(deployed: Deployed) -> Iterator[str]:
    """The first instance's SSM Agent offline (ConnectionLost), then back."""
    instance = deployed.standin.instance(deployed.ids[0])
    instance.ping_status = "ConnectionLost"
    yield deployed.ids[0]
    instance.ping_status = "Online"


def _point(link: Path, target: str) -> None:
    temporary = link.with_name(".current-by-hand")
    os.symlink(target, temporary)
    os.replace(temporary, link)


def test_status_prints_both_releases_and_no_drift_without_the_lock(deployed: Deployed) -> None:
    ssm = deployed.standin.client("ssm")
    before = deployed.standin.calls_snapshot(include_instances=False)
    run = deployed.status()
    calls = deployed.standin.calls_snapshot(include_instances=False) - before

    assert run.returncode == 0, run.output
    assert f"✔ No drift: 2 instance(s) run {SECOND}, the live release" in run.output
    ledger = f"/release-ledger/{deployed.service}/prod/release"
    assert f"Release ledger {ledger}: live release {SECOND} (version 2)" in run.output
    lines = run.output.splitlines()
    newest, oldest = (next(line for line in lines if f"v{v} {r} " in line) for v, r in (("2", SECOND), ("1", FIRST)))
    assert lines.index(newest) < lines.index(oldest)
    assert f"deploy succeeded commit 0123456 build #2 {BUILD_URL} by {{5f1c2a3b-" in newest
    for instance_id in deployed.ids:
        assert f"  {instance_id}: {SECOND}" in run.output
    # CODE_INSIGHTS comes from the stand-in's environment: a status posts no report
    ignored = "LOCK, ARTIFACT, ACTIVATE_COMMANDS, DRY_RUN, CODE_INSIGHTS: only used by a deploy"
    ignored += ", ignored by ACTION: status"
    assert ignored in run.output
    # read-only: one read command, the ledger's history; no lock, no ledger version, no upload
    assert calls["ssm:SendCommand"] == 1 and calls["ssm:GetParameterHistory"] >= 1
    assert not {"ssm:PutParameter", "ssm:GetParameter", "ssm:DeleteParameter", "s3:PutObject"} & set(calls)
    assert not ssm.describe_parameters(
        ParameterFilters=[{"Key": "Name", "Option": "BeginsWith", "Values": [f"/deploy-lock/{deployed.service}/"]}]
    )["Parameters"]
    assert [item["Version"] for item in ssm.get_parameter_history(Name=ledger)["Parameters"]] == [1, 2]
    result = deployed.result()
    assert (result["action"], result["status"], result["live_release"]) == ("status", "no drift", SECOND)
    assert [release["release"] for release in result["releases"]] == [SECOND, FIRST]  # type: ignore[attr-defined]
    assert result["fleet"] == dict.fromkeys(deployed.ids, SECOND)


def test_an_instance_switched_by_hand_is_named_as_drift_and_fails_the_step(
    deployed: Deployed, switched_by_hand: str
) -> None:
    run = deployed.status()

    assert run.returncode == 1, run.output
    assert f"Drift: {switched_by_hand} runs {FIRST}; the ledger says {SECOND} is live" in run.output
    assert f"✖ Drift on 1 of 2 instance(s) ({switched_by_hand})" in run.output
    result = deployed.result()
    assert result["status"] == "drift"
    assert result["drifted_instances"] == [{"instance_id": switched_by_hand, "runs": FIRST}]
    env_file = (deployed.clone / "ssm-deploy-result.json.env").read_text()
    assert f"SSM_DEPLOY_DRIFTED_INSTANCES='{switched_by_hand}'" in env_file


def test_an_offline_instance_is_named_as_unknown_and_fails_the_step(deployed: Deployed, offline: str) -> None:
    run = deployed.status()

    assert run.returncode == 1, run.output
    assert f"Unknown: {offline} could not be asked (SSM Agent not online: ConnectionLost)" in run.output
    assert f"1 instance(s) could not be asked ({offline})" in run.output
    result = deployed.result()
    assert result["status"] == "unknown"
    assert result["fleet"] == {offline: "unknown", deployed.ids[1]: SECOND}


def test_the_readmes_status_policy_is_enough(deployed: Deployed) -> None:
    standin, suffix = deployed.standin, uuid.uuid4().hex[:6]
    role_arn = standin.create_role(f"status-{suffix}")
    policy = runnable_in_moto(documented_policy("### The status role's policy"))
    standin.client("iam").put_role_policy(
        RoleName=f"status-{suffix}", PolicyName="status", PolicyDocument=json.dumps(policy)
    )
    assume = {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arn}
    keys = standin.create_user(f"ci-status-{suffix}", {"Version": "2012-10-17", "Statement": [assume]})
    with standin.iam_enforced():
        run = deployed.status(
            AWS_ACCESS_KEY_ID=keys["aws_access_key_id"],
            AWS_SECRET_ACCESS_KEY=keys["aws_secret_access_key"],
            ROLE_ARN=role_arn,
        )

    assert run.returncode == 0, run.output
    assert "WARNING" not in run.output
    assert f"✔ No drift: 2 instance(s) run {SECOND}, the live release" in run.output
