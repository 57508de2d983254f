"""./dev demo: run the real pipe against the bundled local AWS stand-in, no AWS account needed.

Starts moto on 127.0.0.1 with two "instances" (local folders whose commands run as processes),
a KMS key, a SecureString parameter and a per-environment role; then runs ``pipe/pipe.py`` with a
multi-line deploy that reads the database password on the instances, then a health check (a
rollback is configured but not needed), and prints the result file. Then release mode: build A and
build B are shipped as artifacts (uploaded once each, unpacked into /srv/web-api/releases on every
instance, made live by switching `current`), and `RELEASE: previous` rolls back to A in seconds
without building or uploading anything. Stops everything at the end.
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
    with tempfile.TemporaryDirectory(prefix="ssm-deploy-demo-") as folder, StandIn(Path(folder)) as aws:
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
        codes = [result.returncode, *release_demo(aws, instances, Path(folder))]
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


if __name__ == "__main__":
    sys.exit(main())
