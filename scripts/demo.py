"""./dev demo: run the real pipe against the bundled local AWS stand-in, no AWS account needed.

Our users' stack, for real: four stand-in instances (each a host of its own: its own network
namespace and private IP, its own /home and /srv), the users' Node.js 20 service
(``test/fixtures/web-api``) run by pm2 as the login user ``ssmdeploy-app`` (node and pm2 on its
login PATH only, as nvm leaves them), a KMS key and a SecureString DB_PASSWORD per environment,
a deploy role, and an Application Load Balancer's target group served by a real HAProxy with real
HTTP health checks. Then, with the README's release recipe (``ARTIFACT``, ``RUN_AS``, ``npm ci``,
``pm2 startOrReload ecosystem.config.js --env prod``, a curl health check):

1. release v1, the first deploy (nothing serves yet, so every instance at once);
2. release v2, rolled out behind the load balancer while real HTTP clients send requests: the
   share of answers from each release, second by second, and 0 failed requests;
3. release v3, the same restart paced by MAX_CONCURRENCY alone (no draining): failed requests;
4. ``RELEASE: previous`` back to v2, behind the load balancer, under traffic: nothing rebuilt,
   nothing uploaded.

Prints the result file of the last run, and stops everything at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "test")]

from app_fixture import ACTIVATE, HEALTH_CHECK, INSTALL, pack_release  # noqa: E402
from standin import StandIn  # noqa: E402
from standin.load_generator import Summary  # noqa: E402
from standin.users import APP_USER  # noqa: E402

FLEET = 4
BUCKET = "acme-deploy-artifacts"
GROUP = "web-api-prod"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="ssm-deploy-demo-") as folder, StandIn() as aws:
        clone = Path(folder)
        aws.elb_time_scale = 0.1  # health checks every 0.5 s; the 30-s deregistration delay lasts 3 s
        instances = aws.launch(FLEET, name="web-api", tags={"Service": "web-api", "Env": "prod"})
        key = aws.create_key("deploy key for prod")
        aws.put_secret("/deploy/prod/db_password", "demo-only-Pa55w0rd", key)
        aws.create_role("deploy-prod")
        aws.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": aws.region})
        group = aws.create_target_group(GROUP, instances, deregistration_delay=30)
        print(f"Local AWS stand-in at {aws.endpoint}; subnet {aws.network.subnet}, instances:")
        for instance_id in instances:
            print(f"  {instance_id}  {aws.instance(instance_id).address}")
        print(f"Target group {GROUP}: HAProxy at {aws.data_plane.url(group)}\n", flush=True)

        codes = []
        print("==== 1. release v1: the first deploy (nothing serves yet) ====\n", flush=True)
        codes.append(deploy(aws, clone, "v1", 41, TARGETS="tag:Service=web-api;tag:Env={environment}"))
        aws.wait_target_states(group, instances, "healthy", timeout=60)
        show_fleet(aws, instances)

        rolling = {"TARGETS": "tag:Service=web-api;tag:Env={environment}", "TARGET_GROUPS": "auto"}
        rolling |= {"BATCH_SIZE": "2", "MIN_HEALTHY": "50%"}
        print("\n==== 2. release v2: rolled out behind the load balancer, under real HTTP traffic ====\n", flush=True)
        with aws.traffic(group) as traffic:
            codes.append(deploy(aws, clone, "v2", 42, **rolling))
        report(traffic.summary())
        show_fleet(aws, instances)

        paced = {"TARGETS": "tag:Service=web-api;tag:Env={environment}", "MAX_CONCURRENCY": "2"}
        print("\n==== 3. release v3: the same restart paced by MAX_CONCURRENCY alone (no draining) ====\n", flush=True)
        with aws.traffic(group) as traffic:
            codes.append(deploy(aws, clone, "v3", 43, **paced))
        report(traffic.summary())

        print("\n==== 4. RELEASE: previous (back to v2: nothing built, nothing uploaded), under traffic ====\n")
        with aws.traffic(group) as traffic:
            codes.append(deploy(aws, clone, None, 44, RELEASE="previous", **rolling))
        report(traffic.summary())
        show_fleet(aws, instances)

        print("\nThe result file for later steps (ssm-deploy-result.json.env):")
        print((clone / "ssm-deploy-result.json.env").read_text())
        print("Stand-in stopped.")
        return max(codes)


def deploy(aws: StandIn, clone: Path, release: str | None, build: int, **variables: str) -> int:
    """Run the pipe as the README's release example does (a build step packs ``release`` first)."""
    if release is not None:
        variables["ARTIFACT"] = os.path.relpath(pack_release(clone, release), clone)
    env = aws.pipe_env(
        BITBUCKET_DEPLOYMENT_ENVIRONMENT="prod",
        BITBUCKET_BUILD_NUMBER=str(build),
        BITBUCKET_CLONE_DIR=str(clone),
        ROLE_ARN="arn:aws:iam::123456789012:role/deploy-{environment}",
        ARTIFACT_BUCKET=BUCKET,
        APP_DIR="/srv/web-api",
        RUN_AS=APP_USER,
        PARAMETERS_PATH="/deploy/{environment}/",
        COMMANDS=INSTALL,  # the README's release recipe
        ACTIVATE_COMMANDS=ACTIVATE,
        HEALTHCHECK_COMMANDS=HEALTH_CHECK,
        **variables,
    )
    return subprocess.run([sys.executable, str(ROOT / "pipe" / "pipe.py")], env=env, cwd=ROOT).returncode


def report(summary: Summary) -> None:
    """What the clients saw: requests, failures, and the share of each release second by second."""
    failed = f"{summary.failed} failed" + (
        f" (statuses {dict(sorted(summary.statuses.items()))}, {summary.connection_errors} connection errors, "
        f"{summary.timeouts} timeouts)"
        if summary.failed
        else ""
    )
    print(f"\nReal HTTP clients through the load balancer: {summary.requests} requests, {failed}.")
    print("Share of answers by release, second by second:")
    print(summary.render())


def show_fleet(aws: StandIn, instances: list[str]) -> None:
    """What each instance's app answers when asked directly (its pm2 process's release and cwd)."""
    for instance_id in instances:
        address = aws.instance(instance_id).address
        with urllib.request.urlopen(f"http://{address}:3000/", timeout=10) as response:
            document = json.loads(response.read())
        print(
            f"  {instance_id} {address}: release {document['release']}, cwd {document['cwd']}, "
            f"DB_PASSWORD sha256 {document['db_password_sha256']}…"
        )


if __name__ == "__main__":
    sys.exit(main())
