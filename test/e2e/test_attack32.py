"""The thirty-second outside attack (issue #17), aimed at the secrets and load balancer paths earlier attacks
had not reached: a secret cut in two by SSM's 24,000-character copy of the output, values with a Windows
line ending, a trailing space, ``%``, backslashes, ``$(``, backquotes, several lines, 8 KiB, one value the
prefix of another; a target group ARN of another Region. Each test compares what the instance holds, what
the step said (output, result file, Code Insights) and that no value shows anywhere."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from e2e.release_support import build_server
from e2e.test_attack9 import rolling, ship_a
from e2e.test_attack22 import DEAD_PORT
from e2e.test_load_balancer import make_fleet, rolling_env
from fakes.bitbucket_reports import fake_bitbucket, proxy_env
from standin import StandIn
from support import run_pipe

from pipe.runtime.redaction import MIN_LENGTH

# no prefix of it is ordinary text: any piece of MIN_LENGTH characters or more that shows is a leak
CUT_SECRET = "Zq8v-Kd3w-" + uuid.uuid4().hex + "-Tn5p"
FIELD_LIMIT = 24000  # GetCommandInvocation's StandardOutputContent keeps the first 24,000 characters


def pieces(value: str, text: str) -> list[str]:
    """The prefixes of ``value`` (MIN_LENGTH characters or more) that ``text`` holds."""
    return [value[:end] for end in range(len(value), MIN_LENGTH - 1, -1) if value[:end] in text][:1]


def test_a_secret_that_ssm_cuts_at_its_24000_character_limit_shows_no_piece_of_it(
    standin: StandIn, tmp_path: Path
) -> None:
    """COMMANDS print a line of 23,990 characters, then the secret (a debugging `echo`), then fail. SSM keeps
    the first 24,000 characters of stdout: its copy ends with the secret's first characters, a piece no mask
    of the whole value matches. Without live output that copy is the build log's, and it is always what Code
    Insights' annotation shows as the failed instance's last lines."""
    environment = f"a32{uuid.uuid4().hex[:8]}"
    standin.put_secret(f"/deploy/{environment}/token", CUT_SECRET, standin.create_key(f"a32 {environment}"))
    (instance_id,) = standin.launch(1)
    result_file = tmp_path / "result.json"
    with fake_bitbucket() as bitbucket:
        env = standin.pipe_env(
            ENVIRONMENT=environment,
            INSTANCE_IDS=instance_id,
            SECRETS=f"API_TOKEN=/deploy/{environment}/token",
            COMMANDS=f"printf '%0{FIELD_LIMIT - 10}d\\n' 0\necho \"$API_TOKEN\"\necho 'migration failed' >&2\nexit 4",
            STREAM_OUTPUT="false",
            CODE_INSIGHTS="true",
            RESULT_FILE=str(result_file),
            **proxy_env(bitbucket, str(urlsplit(standin.endpoint).hostname)),
        )
        run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert "Failed (exit 4)" in run.output or "exit 4" in run.output, run.output
    assert pieces(CUT_SECRET, run.output) == []
    assert pieces(CUT_SECRET, json.dumps(bitbucket.requests, default=str)) == []
    assert pieces(CUT_SECRET, result_file.read_text()) == []


def test_a_target_group_arn_of_another_region_is_refused_by_name_before_anything_is_sent(standin: StandIn) -> None:
    # held: the group's ARN copied with another Region (a typo, or the staging Region's group) is named as not
    # found in this account and Region, with the fix; nothing is sent and no target leaves the load balancer
    fleet = make_fleet(standin, 2)
    other_region = "eu-west-1" if standin.region != "eu-west-1" else "us-east-1"
    typo = fleet.group_arn.replace(f":{standin.region}:", f":{other_region}:")
    before = len(standin.sent_commands())

    run = run_pipe(rolling_env(standin, fleet, TARGET_GROUPS=typo, COMMANDS="true"))

    assert run.returncode == 1, run.output
    assert f"there is no target group '{typo}' in this account and Region" in run.output, run.output
    assert "AWS_DEFAULT_REGION" in run.output and "Traceback" not in run.output
    assert len(standin.sent_commands()) == before
    assert set(standin.target_states(fleet.group_arn).values()) == {"healthy"}


def test_a_target_unhealthy_before_the_deploy_that_stays_so_is_named_as_such_in_the_verdict(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """Attack 32's note, fixed: one instance behind the app's group and behind a second named group on a port
    where nothing listens (unhealthy before the deploy, as a target whose app an operator stopped). Its
    batch cannot come back healthy there: the verdict fails, and says the target was already unhealthy before
    this deploy took it out, so the reader does not blame the release alone."""
    fleet = make_fleet(standin, 1)
    ship_a(standin, fleet, tmp_path, bucket, service)
    name = f"side-{uuid.uuid4().hex[:8]}"
    arn = standin.create_target_group(name, fleet.ids, deregistration_delay=2, port=DEAD_PORT)
    standin.wait_target_states(arn, fleet.ids, "unhealthy", timeout=60)
    env = rolling(
        standin,
        fleet,
        tmp_path,
        bucket,
        service,
        ARTIFACT=build_server(tmp_path, "B"),
        BITBUCKET_BUILD_NUMBER="2",
        TARGET_GROUPS=f"{fleet.group_name},{name}",
        HEALTHY_TIMEOUT="8",
    )
    run = run_pipe(env, timeout=300)

    assert run.returncode != 0, run.output
    (instance_id,) = fleet.ids
    assert f"{instance_id} in {name}: unhealthy" in run.output, run.output
    assert "already unhealthy in it before this deploy took it out" in run.output, run.output
    # the app's own group was never a problem: its target is not called unhealthy before
    assert f"{instance_id} in {fleet.group_name}: unhealthy" not in run.output, run.output
