"""The Code Insights report end to end: the pipe as a process against the stand-in posts its report
through the proxy to a local server that plays Bitbucket's reports API (test/fakes)."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from fakes.bitbucket_reports import fake_bitbucket, proxy_env
from standin import StandIn
from support import run_pipe

SECRET = "c0de-Insights-Pa55-" + uuid.uuid4().hex[:8]
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # the stand-in's BITBUCKET_COMMIT


def test_a_failed_deploy_leaves_a_failed_report_with_the_failed_instances_masked_output(standin: StandIn) -> None:
    environment = f"ci{uuid.uuid4().hex[:8]}"
    standin.put_secret(f"/deploy/{environment}/db_password", SECRET, standin.create_key(f"insights {environment}"))
    good, bad = standin.launch(2)
    with fake_bitbucket() as bitbucket:
        env = standin.pipe_env(
            ENVIRONMENT=environment,
            INSTANCE_IDS=f"{good} {bad}",
            SECRETS="DB_PASSWORD=/deploy/{environment}/db_password",
            COMMANDS=(
                'echo "migrating with $DB_PASSWORD"\n'
                f'if [ "$(basename "$HOME")" = "{bad}" ]; then echo "migration failed" >&2; exit 4; fi\n'
                "echo migrated"
            ),
            CODE_INSIGHTS="true",
            **proxy_env(bitbucket, str(urlsplit(standin.endpoint).hostname)),
        )
        run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert "CODE_INSIGHTS" not in run.output, run.output  # posted: no warning
    assert bitbucket.problems == []
    report = bitbucket.report("acme/web-api", COMMIT)
    assert report.body["result"] == "FAILED"
    data = {field["title"]: field["value"] for field in report.body["data"]}
    assert (data["Environment"], data["Instances deployed"], data["Instances failed"]) == (environment, 1, 1)
    (annotation,) = report.annotations.values()
    assert bad in annotation["summary"] and "exit 4" in annotation["summary"]
    assert "Phase: deploy" in annotation["details"] and "Exit code: 4" in annotation["details"]
    assert "migration failed" in annotation["details"]
    assert "migrating with ****" in annotation["details"]
    assert SECRET not in str(bitbucket.requests)
    assert f"Code Insights report '{report.body['title']}' posted on commit {COMMIT[:12]}." in run.output
