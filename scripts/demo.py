"""./dev demo: run the real pipe against the bundled local AWS stand-in, no AWS account needed.

Starts moto on 127.0.0.1 with two "instances" (local folders whose commands run as processes),
a KMS key, a SecureString parameter and a per-environment role; then runs ``pipe/pipe.py`` with a
multi-line deploy that reads the database password on the instances, then a health check (a
rollback is configured but not needed), and prints the result file. Then release mode: build A and
build B are shipped as artifacts (uploaded once each, unpacked into /srv/web-api/releases on every
instance, made live by switching `current`), and `RELEASE: previous` rolls back to A in seconds
without building or uploading anything. Last, a zero-downtime rolling deploy of four instances behind
the stand-in's load balancer while simulated users send requests (each batch drained, deployed,
registered again, healthy), next to the same restart paced by MAX_CONCURRENCY alone, which fails
requests. Stops everything at the end.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "test")]

from standin import StandIn  # noqa: E402

DEPLOY_SH = """#!/usr/bin/env bash
# What a Node.js service's deploy.sh does on an EC2 instance (simulated steps).
set -euo pipefail
echo "[$(date +%T)] fetching release ${RELEASE} of web-api"
sleep 0.6
echo "[$(date +%T)] npm ci --omit=dev (node 20)"
sleep 0.6
echo "[$(date +%T)] writing .env (DB_PASSWORD: ${#DB_PASSWORD} characters, value never printed)"
sleep 0.6
echo "[$(date +%T)] pm2 reload web-api"
echo "[$(date +%T)] health: ok"
"""


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="ssm-deploy-demo-") as folder, StandIn() as aws:
        instances = aws.launch(2, name="web-api")
        for instance_id in instances:
            script = aws.instance(instance_id).home / "deploy.sh"
            script.write_text(DEPLOY_SH)
            script.chmod(0o755)
        key = aws.create_key("deploy key for prod")
        aws.put_secret("/deploy/prod/db_password", "demo-only-Pa55w0rd", key)
        aws.create_role("deploy-prod")
        print(f"Local AWS stand-in at {aws.endpoint}; instances {' '.join(instances)}\n", flush=True)

        env = aws.pipe_env(
            BITBUCKET_DEPLOYMENT_ENVIRONMENT="prod",
            ROLE_ARN="arn:aws:iam::123456789012:role/deploy-{environment}",
            INSTANCE_IDS=" ".join(instances),
            SECRETS="DB_PASSWORD=/deploy/{environment}/db_password",
            VARIABLES="RELEASE=2026.11.25-1\nNODE_ENV=production",
            COMMANDS='cd "$HOME"\nbash ./deploy.sh',
            HEALTHCHECK_COMMANDS='echo "GET /health -> 200 (release $RELEASE)"',
            ROLLBACK_COMMANDS='echo "restoring the previous release"',
            BITBUCKET_CLONE_DIR=folder,
        )
        result = subprocess.run([sys.executable, str(ROOT / "pipe" / "pipe.py")], env=env, cwd=ROOT, check=False)
        print(f"\npipe exit code: {result.returncode}. The result file for later steps:")
        print((Path(folder) / "ssm-deploy-result.json.env").read_text())
        codes = [result.returncode, *release_demo(aws, instances, Path(folder)), *load_balancer_demo(aws, Path(folder))]
        print("Stand-in stopped.")
        return max(codes)


def build(folder: Path, version: str) -> str:
    """What a build step leaves as its artifact: web-api.tgz with the app in it."""
    files = {"version.txt": f"{version}\n", "server.sh": 'echo "web-api $(cat version.txt) serving on :3000"\n'}
    with tarfile.open(folder / "web-api.tgz", "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return "web-api.tgz"


def release_demo(aws: StandIn, instances: list[str], folder: Path) -> list[int]:
    aws.client("s3").create_bucket(
        Bucket="acme-deploy-artifacts", CreateBucketConfiguration={"LocationConstraint": aws.region}
    )
    common = {
        "BITBUCKET_DEPLOYMENT_ENVIRONMENT": "prod",
        "INSTANCE_IDS": " ".join(instances),
        "ARTIFACT_BUCKET": "acme-deploy-artifacts",
        "APP_DIR": "/srv/web-api",
        "ACTIVATE_COMMANDS": "bash server.sh",
        "HEALTHCHECK_COMMANDS": 'test "$(readlink /srv/web-api/current)" != ""',
        "BITBUCKET_CLONE_DIR": str(folder),
    }
    codes = []
    for build_number, version in (("41", "A"), ("42", "B"), ("43", "")):
        # each build step leaves its own artifact; the last run builds nothing and goes back
        extra = {"ARTIFACT": build(folder, version)} if version else {"RELEASE": "previous"}
        title = f"release {version}" if version else "RELEASE: previous (an instant rollback, nothing built)"
        print(f"\n==== Release mode: {title}, build #{build_number} ====\n", flush=True)
        env = aws.pipe_env(**common, **extra, BITBUCKET_BUILD_NUMBER=build_number)
        codes.append(subprocess.run([sys.executable, str(ROOT / "pipe" / "pipe.py")], env=env, cwd=ROOT).returncode)
    for instance_id in instances:
        current = aws.instance_path(instance_id, "/srv/web-api/current")
        releases = sorted(path.name for path in (current.parent / "releases").iterdir())
        print(f"{instance_id}: current -> {os.readlink(current)}; releases on disk: {', '.join(releases)}")
    return codes


RESTART = "rm -f /srv/lb-app/up; echo 'pm2 reload web-api'; sleep 1; touch /srv/lb-app/up"


def load_balancer_demo(aws: StandIn, folder: Path) -> list[int]:
    """A rolling deploy behind a target group under traffic, then the same restart without draining."""
    aws.elb_time_scale = 0.1  # health checks every 0.5 s, a 30-s deregistration delay lasts 3 s
    instances = aws.launch(4, name="web-lb")
    for instance_id in instances:
        aws.app_up(instance_id)
    group = aws.create_target_group("web-api-prod", instances, deregistration_delay=30)
    aws.wait_target_states(group, instances, "healthy", timeout=30)
    aws.create_alarm("web-api-5xx")
    codes = []
    runs = (
        (
            "zero-downtime rolling deploy behind the load balancer",
            {"TARGET_GROUPS": "auto", "BATCH_SIZE": "2", "ALARMS": "web-api-5xx", "BAKE_TIME": "2"},
        ),
        ("the same restart paced by MAX_CONCURRENCY alone", {"MAX_CONCURRENCY": "2"}),
    )
    for title, variables in runs:
        print(f"\n==== {title}, under traffic ====\n", flush=True)
        env = aws.pipe_env(
            BITBUCKET_DEPLOYMENT_ENVIRONMENT="prod",
            INSTANCE_IDS=" ".join(instances),
            COMMANDS=RESTART,
            BITBUCKET_CLONE_DIR=str(folder),
            **variables,
        )
        with aws.traffic(group) as traffic:
            code = subprocess.run([sys.executable, str(ROOT / "pipe" / "pipe.py")], env=env, cwd=ROOT).returncode
        print(f"\nSimulated users: {traffic.requests} requests, {len(traffic.failures)} failed.")
        codes.append(code)
    return codes


if __name__ == "__main__":
    sys.exit(main())
