"""The fifty-second outside attack (issue #17's "bad input" and secrets rules).

1. Hostile values in every variable, through the real entry point (``pipe.main.main``, in process, the
   actions replaced by a recorder so that nothing can be sent): empty, blank, invisible and direction
   characters, emoji, 1 MB, YAML-looking text, numbers out of range, in each of the three modes (commands,
   release, ACTION: status) and in each other's modes. A value is refused by name with the pipe's own words,
   or accepted whole; never a traceback, never "Unexpected error", and a refusal never reaches an action.
2. Secrets in every channel of a release deploy with DEBUG on (a success, then a failing health check and its
   rollback): the SECRETS value, the OIDC token and every session credential, raw and encoded (base64,
   URL-encoded, JSON-escaped), whole, in pieces, or split across lines.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import quote, urlsplit

import pytest
from e2e.release_support import build_bare
from e2e.test_refusals import validation_errors
from e2e.test_releases import live, release_env
from fakes.bitbucket_reports import fake_bitbucket, proxy_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standin import StandIn
from support import run_pipe

import pipe.main
from pipe.actions import ACTIONS
from pipe.config.settings import DeploySettings
from pipe.config.variables import TABLE, VARIABLE_NAMES

ANSI = re.compile(r"\x1b\[[0-9;]*m")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIAABCDEFGHIJKLMNOP", "AWS_SECRET_ACCESS_KEY": "s3cr3tK3y/" + "x" * 30}
BUILD = {
    "BITBUCKET_REPO_FULL_NAME": "team/web-api",
    "BITBUCKET_BUILD_NUMBER": "42",
    "BITBUCKET_COMMIT": "0123456789abcdef0123456789abcdef01234567",
    "BITBUCKET_BRANCH": "main",
}
TARGET = {"AWS_DEFAULT_REGION": "eu-west-1", "INSTANCE_IDS": "i-0123456789abcdef0"}
MODES = {
    "commands": {**TARGET, "COMMANDS": "./deploy.sh"},
    "release": {
        **TARGET,
        "ENVIRONMENT": "prod",
        "ARTIFACT": "web-api.tgz",
        "ARTIFACT_BUCKET": "acme-artifacts",
        "APP_DIR": "/srv/web-api",
    },
    "status": {**TARGET, "ENVIRONMENT": "prod", "ACTION": "status", "APP_DIR": "/srv/web-api"},
}
HOSTILE = {
    "empty": "",
    "blank": "   ",
    "tab": "\t",
    "newlines": "\n\n",
    "nbsp": "\u00a0",
    "nbsp inside": "web\u00a0api",
    "rtl mark": "\u200fweb",
    "rtl override": "web\u202eipa",
    "zero-width space": "web\u200bapi",
    "byte order mark": "\ufeffweb",
    "line separator": "web\u2028api",
    "next line (C1)": "web\x85api",
    "escape": "web\x1b[31mapi",
    "emoji": "🚀",
    "fullwidth digits": "１０",
    "1 MB": "a" * 1_000_000,
    "5000 characters": "x" * 5000,
    "yaml map": "{a: 1}",
    "yaml list": "- a\n- b",
    "yaml flow": "[1, 2]",
    "null": "null",
    "tilde": "~",
    "quoted": "'web'",
    "zero": "0",
    "minus one": "-1",
    "10**20": str(10**20),
    "1e3": "1e3",
    "0x10": "0x10",
    "1_000": "1_000",
    "+5": "+5",
    "2.5": "2.5",
    "50%": "50%",
    "1000%": "1000%",
    "command substitution": "$(reboot)",
    "placeholder": "{environment}",
    "misspelt placeholder": "{enviroment}",
    "dot": ".",
    "dot dot": "..",
    "slash": "/",
    "trailing slash": "web/",
}
SECRET_VARIABLES = {"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}


@dataclass
class Outcome:
    code: object
    output: str
    acted: DeploySettings | None  # what an action received: None when none ran

    def refusals(self) -> dict[str, list[str]]:
        """The ``VAR:`` / ``- reason`` lines after ``Validation errors:`` (none when nothing was refused)."""
        return validation_errors(self.output) if "Validation errors:" in self.output else {}


@contextlib.contextmanager
def clone_directory() -> Iterator[Path]:
    """A clone directory with the artifact release mode names: validation does not read it, the release does."""
    with tempfile.TemporaryDirectory(prefix="a52-") as clone, contextlib.chdir(clone):
        (Path(clone) / "web-api.tgz").write_bytes(b"not read by validation")
        (Path(clone) / "README.md").write_text("a file of the repository\n")
        yield Path(clone)


def run_main(variables: dict[str, str]) -> Outcome:
    """main() in process with exactly these variables (and the build's): every action replaced by a
    recorder, so nothing can reach AWS; stdout and stderr captured."""
    acted: list[DeploySettings] = []

    def record(settings: DeploySettings, *_: Any) -> str:
        acted.append(settings)
        return "recorded"

    buffer = io.StringIO()
    with (
        clone_directory() as clone,
        mock.patch.dict(os.environ, {**BUILD, **variables, "BITBUCKET_CLONE_DIR": str(clone)}, clear=True),
        mock.patch.dict(ACTIONS, dict.fromkeys(ACTIONS, record)),
        mock.patch.object(pipe.main, "configure_logging"),  # the test runner's logging stays as it is
        contextlib.redirect_stdout(buffer),
        contextlib.redirect_stderr(buffer),
    ):
        try:
            code: object = pipe.main.main()
        except SystemExit as exit_:
            code = exit_.code
    return Outcome(code, ANSI.sub("", buffer.getvalue()), acted[0] if acted else None)


def check_refused_or_accepted(outcome: Outcome, name: str, value: str) -> None:
    assert "Traceback" not in outcome.output, outcome.output[-2000:]
    assert "Unexpected error" not in outcome.output, outcome.output[-2000:]
    assert outcome.code in (0, 1), outcome.code
    if outcome.acted is not None:
        assert outcome.code == 0 and "Validation errors" not in outcome.output
        return
    assert outcome.code == 1
    refusals = outcome.refusals()
    assert refusals, f"refused without naming a variable: {outcome.output[-1500:]}"
    names = {variable.name for variable in TABLE}
    for refused, reasons in refusals.items():
        assert refused in names, refused
        assert reasons and all(reason.strip() for reason in reasons), (refused, reasons)
    if name in SECRET_VARIABLES and len(value.strip()) >= 8:
        assert value.strip() not in outcome.output, "a secret value was echoed"
    for reasons in refusals.values():
        assert all(len(reason) <= 600 for reason in reasons), "a reason quoted a huge value whole"


@pytest.mark.parametrize("mode", list(MODES))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(VARIABLE_NAMES), kind=st.sampled_from(sorted(HOSTILE)))
def test_a_hostile_value_in_any_variable_is_refused_by_name_or_accepted(mode: str, name: str, kind: str) -> None:
    value = HOSTILE[kind]
    outcome = run_main({**CREDENTIALS, **MODES[mode], name: value})

    check_refused_or_accepted(outcome, name, value)


# one valid value per variable: put into a mode it does not belong to, it is refused by name or accepted
VALID = {
    "ARTIFACT": "web-api.tgz",
    "RELEASE": "previous",
    "ARTIFACT_BUCKET": "acme-artifacts",
    "ARTIFACT_PREFIX": "web-api/",
    "APP_DIR": "/srv/web-api",
    "RUN_AS": "webapp",
    "SHARED_PATHS": ".env logs/",
    "ACTIVATE_COMMANDS": "pm2 reload ecosystem.config.js",
    "KEEP_RELEASES": "5",
    "STAGE_FIRST": "false",
    "VERIFY_PROCESSES": "false",
    "SERVICE": "web-api",
    "COMMANDS": "./deploy.sh",
    "SCRIPT": "README.md",
    "HEALTHCHECK_COMMANDS": "curl -fsS localhost:3000/health",
    "ROLLBACK_COMMANDS": "./rollback.sh",
    "DOCUMENT_NAME": "AWS-RunPatchBaseline",
    "DOCUMENT_PARAMETERS": '{"Operation": ["Scan"]}',
    "TARGET_GROUPS": "web",
    "AUTO_SCALING_GROUPS": "web-asg",
    "BATCH_SIZE": "50%",
    "CANARY": "1",
    "ALARMS": "web-5xx",
    "PARAMETERS_PATH": "/deploy/prod/",
    "TARGETS": "tag:Service=web",
    "ACTION": "status",
    "DRY_RUN": "true",
    "WAIT": "false",
    "LOCK": "false",
}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", sorted(VALID))
def test_a_variable_of_another_mode_is_refused_by_name_or_accepted(mode: str, name: str) -> None:
    outcome = run_main({**CREDENTIALS, **MODES[mode], name: VALID[name]})

    check_refused_or_accepted(outcome, name, VALID[name])


# --- findings: values that were accepted and failed later, or not at all where they should -----------


def refused(variables: dict[str, str], mode: str = "commands") -> dict[str, list[str]]:
    outcome = run_main({**CREDENTIALS, **MODES[mode], **variables})
    check_refused_or_accepted(outcome, next(iter(variables)), next(iter(variables.values())))
    return outcome.refusals() if outcome.acted is None else {}


@pytest.mark.parametrize("mode", ["release", "status"])
@pytest.mark.parametrize("service", [".", "..", "..."])
def test_a_service_of_dots_is_refused(mode: str, service: str) -> None:
    """SERVICE is a segment of the ledger's parameter (/release-ledger/<service>/<environment>/release), of the
    lock's, and of the ledger archive's S3 keys (<ARTIFACT_PREFIX>ledger/<service>/...): '..' made them
    relative paths, which ARTIFACT_PREFIX itself refuses ("no . or .. segments") and the slug default strips."""
    assert "SERVICE" in refused({"SERVICE": service}, mode)


SWAPPED = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS's example secret key, 40 characters of base64


@pytest.mark.parametrize(
    "key_id", [SWAPPED, "AKIA" + "A" * 125, "A" * 1_000_000, "AKIAABCDEFGHIJKLMNOP:" + SWAPPED], ids=str.__len__
)
def test_an_access_key_id_that_aws_cannot_take_is_refused_without_showing_it(key_id: str) -> None:
    """AWS's AccessKeyId is 16-128 word characters ([\\w]+, IAM and STS API references). A secret key pasted
    into AWS_ACCESS_KEY_ID (the two swapped), or one 1 MB long, went to the Authorization header of the first
    call: AWS's answer, or a dropped connection, named no variable."""
    outcome = run_main({**MODES["commands"], "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": "s" * 40})
    check_refused_or_accepted(outcome, "AWS_ACCESS_KEY_ID", key_id)
    assert "AWS_ACCESS_KEY_ID" in outcome.refusals(), outcome.output[-1500:]
    assert SWAPPED not in outcome.output and key_id[:40] not in outcome.output


def test_an_emulators_access_key_id_is_still_accepted() -> None:
    assert not refused({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"})


@pytest.mark.parametrize("invisible", ["\u200b", "\u200f", "\u202e", "\ufeff", "\u00ad", "é", "\x1b"])
def test_a_secret_key_with_an_invisible_or_non_ascii_character_is_refused_without_showing_it(invisible: str) -> None:
    """A secret key copied from a web page or a chat may carry a zero-width space, a direction mark or a
    soft hyphen: AWS's signature then never matches ("SignatureDoesNotMatch"), an answer that names no
    variable. A no-break space was already refused; these passed."""
    secret = "Kq9vTz2mWx7RbN4cYp8s" + invisible + "Lh3dFg6jUe1aQo5iZt0w"
    outcome = run_main(
        {**MODES["commands"], "AWS_ACCESS_KEY_ID": "AKIAABCDEFGHIJKLMNOP", "AWS_SECRET_ACCESS_KEY": secret}
    )
    check_refused_or_accepted(outcome, "AWS_SECRET_ACCESS_KEY", secret)
    assert "AWS_SECRET_ACCESS_KEY" in outcome.refusals(), outcome.output[-1500:]
    assert "Kq9vTz2mWx7R" not in outcome.output and "Lh3dFg6jUe1a" not in outcome.output


@pytest.mark.parametrize(
    "result_file",
    [".", "/", "./", "results/", "README.md/result.json", "r" * 256 + ".json", "r" * 248 + ".json"],
    ids=lambda v: f"{v[:24]}({len(v)})",
)
def test_a_result_file_that_cannot_be_written_is_refused_before_anything_runs(result_file: str) -> None:
    """RESULT_FILE naming a folder, a path under a file of the repository, or a name longer than a Linux file
    name may be (255 bytes) was accepted: the deploy ran, then "could not write" was only a warning and the
    step said success without the file a later step reads ("Written on success and on failure")."""
    assert "RESULT_FILE" in refused({"RESULT_FILE": result_file})


@pytest.mark.parametrize("result_file", ["out/result.json", "result.json", "/tmp/a52-result.json"])
def test_a_result_file_in_a_folder_still_to_be_made_is_accepted(result_file: str) -> None:
    assert not refused({"RESULT_FILE": result_file})


def test_a_parameters_path_longer_than_a_parameter_name_may_be_is_refused() -> None:
    """Parameter Store's names are at most 1011 characters: a longer PARAMETERS_PATH can hold no parameter,
    and GetParametersByPath refused it with an AWS message that names no variable."""
    assert "PARAMETERS_PATH" in refused({"PARAMETERS_PATH": "/deploy/" + "a" * 1100})
    assert "PARAMETERS_PATH" in refused({"PARAMETERS_PATH": "a" * 1_000_000})
    # review: the 1011 include the ARN before the name (arn:aws:ssm:<region>:<account>:parameter)
    assert "PARAMETERS_PATH" in refused({"PARAMETERS_PATH": "/deploy/" + "a" * 950})
    assert not refused({"PARAMETERS_PATH": "/deploy/" + "a" * 900})


# --- 2. secrets in every channel of a release deploy and of its failing successor ------------------------

# characters that every encoding changes: / + " and a non-ASCII letter; no piece of it is ordinary text
SECRET = "Rk4v/Tq8+" + uuid.uuid4().hex + '"é-Zm9w'
OIDC_TOKEN = "eyJhbGciOiJSUzI1NiJ9.a52-" + uuid.uuid4().hex + ".c2lnbmF0dXJl"


def encodings(value: str) -> set[str]:
    """How ``value`` could show up besides itself: base64 (standard and URL-safe, at each of the three
    alignments it can have inside a longer text, without the edge characters that depend on its neighbours),
    URL-encoded, JSON-escaped, shell-quoted by printf %q's ANSI-C form."""
    forms = {
        value,
        quote(value, safe=""),
        quote(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }
    raw = value.encode()
    for pad in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * pad + raw).decode().rstrip("=")
            forms.add(text[(pad * 4 + 2) // 3 + 1 : -2])
    return {form for form in forms if len(form) >= PIECE}


PIECE = 10  # characters of a value's start or end: no ordinary text when varied (the static key's 0000... is)


def leaks(value: str, channels: dict[str, str]) -> list[str]:
    """Where ``value`` shows, in any form: whole, or its first or last PIECE characters (a value cut) when
    they are varied enough to be no ordinary text, also where a line break splits it."""
    found = []
    for channel, text in channels.items():
        joined = re.sub(r"[\r\n]+", "", text)
        for form in encodings(value):
            parts = [form] + [part for part in (form[:PIECE], form[-PIECE:]) if len(set(part)) >= PIECE // 2]
            if any(part in haystack for part in parts for haystack in (text, joined)):
                found.append(f"{channel}: {form[:PIECE]}...")
    return sorted(set(found))


@contextlib.contextmanager
def ssm_requests(standin: StandIn) -> Iterator[list[str]]:
    """The body of every request the stand-in's SSM checks (PutParameter's ledger and lock values,
    SendCommand, GetParameters...), as it arrives: the lock's parameter is deleted when the run ends."""
    seen: list[str] = []
    with standin.requests_seen(lambda action, request: seen.append(f"{action} {json.dumps(request, default=str)}")):
        yield seen


def ssm_channels(standin: StandIn) -> dict[str, str]:
    """Every version of every parameter but the secrets' own (/deploy/...): the ledgers and the locks."""
    ssm = standin.client("ssm")
    channels: dict[str, str] = {}
    for page in ssm.get_paginator("describe_parameters").paginate():
        for parameter in page["Parameters"]:
            name = parameter["Name"]
            if name.startswith("/deploy/"):
                continue
            history = ssm.get_parameter_history(Name=name, WithDecryption=True)["Parameters"]
            channels[f"parameter {name}"] = json.dumps(history, default=str)
    return channels


def s3_channels(standin: StandIn) -> dict[str, str]:
    s3 = standin.client("s3")
    channels: dict[str, str] = {}
    for bucket in s3.list_buckets()["Buckets"]:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"]):
            for item in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket["Name"], Key=item["Key"])["Body"].read()
                channels[f"s3 key {bucket['Name']}/{item['Key']}"] = item["Key"]
                if not item["Key"].endswith((".tgz", ".tar.gz")):
                    channels[f"s3 object {bucket['Name']}/{item['Key']}"] = body.decode(errors="replace")
    return channels


def log_channels(standin: StandIn, since: float) -> dict[str, str]:
    """Every log group's events since ``since`` (epoch seconds), to the last page: the session's other tests
    add groups (50 a page) and events to the shared group, whose first page holds the session's oldest."""
    logs = standin.client("logs")
    channels: dict[str, str] = {}
    for page in logs.get_paginator("describe_log_groups").paginate():
        for group in page["logGroups"]:
            name = group["logGroupName"]
            pages = logs.get_paginator("filter_log_events").paginate(logGroupName=name, startTime=int(since * 1000))
            channels[f"log group {name}"] = "\n".join(event["message"] for read in pages for event in read["events"])
    return channels


def test_no_secret_in_any_channel_of_a_release_deploy_and_of_its_failed_successor_with_debug_on(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """SECRETS from Parameter Store, the OIDC token, the static keys and every role session's keys, in a
    release deploy with DEBUG on that succeeds, then one whose health check fails and is switched back."""
    environment = "prod"
    began = time.time() - 60  # the events' timestamps are the instance's clock
    standin.put_secret(f"/deploy/a52/{service}/db", SECRET, standin.create_key(f"a52 {service}"))
    (instance_id,) = standin.launch(1)
    output_bucket = f"out-{uuid.uuid4().hex[:8]}"
    standin.client("s3").create_bucket(
        Bucket=output_bucket, CreateBucketConfiguration={"LocationConstraint": standin.region}
    )
    result_file = tmp_path / "result.json"
    runs = []
    with fake_bitbucket() as bitbucket, ssm_requests(standin) as requests:
        for version, number, check in (("A", "1", "true"), ("B", "2", 'echo "check failed"; exit 3')):
            env = release_env(
                standin,
                [instance_id],
                tmp_path,
                bucket,
                service,
                ARTIFACT=build_bare(tmp_path, version),
                BITBUCKET_BUILD_NUMBER=number,
                ENVIRONMENT=environment,
                DEBUG="true",
                SECRETS=f"DB_PASSWORD=/deploy/a52/{service}/db",
                ACTIVATE_COMMANDS='printf %s "$DB_PASSWORD" | sha256sum',
                HEALTHCHECK_COMMANDS=check,
                HEALTHCHECK_RETRIES="1",
                ROLE_ARN="arn:aws:iam::123456789012:role/deploy-{environment}",
                AWS_OIDC_ROLE_ARN="arn:aws:iam::123456789012:role/bitbucket-oidc",
                BITBUCKET_STEP_OIDC_TOKEN=OIDC_TOKEN,
                OUTPUT_S3_BUCKET=output_bucket,
                CODE_INSIGHTS="true",
                RESULT_FILE=str(result_file),
                **proxy_env(bitbucket, str(urlsplit(standin.endpoint).hostname)),
            )
            run = run_pipe(env, timeout=300)
            runs.append(run)
            channels = {"result file": result_file.read_text(), "result .env": Path(f"{result_file}.env").read_text()}
            for name, text in channels.items():
                assert not leaks(SECRET, {name: text}), name
    first, second = runs

    # the deploys really ran as described: A live, then B failed its check and A is back; the secret arrived
    assert first.returncode == 0, first.output
    assert second.returncode == 1, second.output
    assert "check failed" in second.output and live(standin, instance_id) == "A"
    assert "DEBUG:" in first.output and "DEBUG:" in second.output
    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    assert digest in first.output, "the instance did not get the secret"

    channels = {
        "first run's output": first.output,
        "second run's output": second.output,
        "Code Insights": json.dumps(bitbucket.requests, default=str),
        "SendCommand": "\n".join(str(sent.request) for sent in standin.sent_commands()),
        "SSM requests": "\n".join(requests),
        **ssm_channels(standin),
        **s3_channels(standin),
        **log_channels(standin, began),
    }
    assert any(name.startswith("parameter /release-ledger/") for name in channels)
    assert any(request.startswith("PutParameter") and "/deploy-lock/" in request for request in requests)
    assert any(name.startswith(f"s3 key {output_bucket}/") for name in channels), "no output reached S3"
    assert any(digest in text for name, text in channels.items() if name.startswith("log group ")), "logs unread"
    secrets = [SECRET, OIDC_TOKEN, standin.admin_keys["aws_secret_access_key"]]
    sessions = standin.issued_credentials()
    assert sessions, "no role session was made"
    secrets += [part for _, secret_key, token in sessions for part in (secret_key, token)]
    found = {value[:6]: leaks(value, channels) for value in secrets}
    assert not any(found.values()), found
