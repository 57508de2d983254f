"""./dev demo: run the real pipe against the bundled local AWS stand-in, no AWS account needed.

Starts moto on 127.0.0.1 with two "instances" (local folders whose commands run as processes),
a KMS key, a SecureString parameter and a per-environment role; then runs ``pipe/pipe.py`` with a
multi-line deploy that reads the database password on the instances, then a health check (a
rollback is configured but not needed), prints the result file, and stops everything.
"""

from __future__ import annotations

import subprocess
import sys
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
        print("Stand-in stopped.")
        return result.returncode


if __name__ == "__main__":
    sys.exit(main())
