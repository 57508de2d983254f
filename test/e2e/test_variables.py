"""Pipe variables end to end: valid forms that were refused or dropped now work on the instances,
and each class of bad input is refused by name, in one clear message, with nothing sent."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from standin import StandIn
from standin.standin import ACCOUNT
from support import CLONE_DIR, LivePipe, run_pipe


def yaml_list(name: str, items: list[str]) -> dict[str, str]:
    """A YAML list the way Bitbucket passes it to a pipe."""
    return {f"{name}_COUNT": str(len(items)), **{f"{name}_{i}": item for i, item in enumerate(items)}}


def sent_so_far(standin: StandIn) -> int:
    return len(standin.sent_commands())


# --- accepted now ---------------------------------------------------------------------------------


def test_a_failing_health_check_given_as_a_yaml_list_runs_and_fails_the_step(standin: StandIn) -> None:
    """Given as a list it was once dropped: no health check ran and the step was green."""
    (instance_id,) = standin.launch(1)
    env = standin.pipe_env(
        INSTANCE_IDS=instance_id,
        **yaml_list("COMMANDS", ["echo deploying", "touch deployed"]),
        **yaml_list("HEALTHCHECK_COMMANDS", ["echo '503 from /health'", "exit 22"]),
        HEALTHCHECK_RETRIES="1",
    )
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert "health check failed on 1 of 1 instance(s)" in run.output
    assert "503 from /health" in run.output
    assert (standin.instance(instance_id).home / "deployed").exists()


def test_variables_as_a_yaml_list_keep_their_values_whole(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    url = "jdbc:sqlserver://db:1433;databaseName=app"
    env = standin.pipe_env(
        INSTANCE_IDS=instance_id,
        COMMANDS='echo "url=$JDBC_URL tpl=$TEMPLATE"',
        **yaml_list("VARIABLES", [f"JDBC_URL={url}", "TEMPLATE={{ .Values.tag }} {date}"]),
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert f"url={url} tpl={{{{ .Values.tag }}}} {{date}}" in run.output


def test_secrets_by_version_label_and_arn_are_read_on_the_instance(standin: StandIn) -> None:
    """The instance reads each reference with `aws ssm get-parameter --name <reference>`."""
    (instance_id,) = standin.launch(1)
    name = f"/deploy/ref{uuid.uuid4().hex[:6]}/db_password"
    key = standin.create_key("versions and labels")
    for value in ("first-v4lue", "second-v4lue", "third-v4lue"):
        standin.put_secret(name, value, key)
    standin.client("ssm").label_parameter_version(Name=name, ParameterVersion=2, Labels=["live"])
    arn = f"arn:aws:ssm:{standin.region}:{ACCOUNT}:parameter{name}"
    env = standin.pipe_env(
        INSTANCE_IDS=instance_id,
        SECRETS=f"PINNED={name}:1\nLABELLED={name}:live\nBY_ARN={arn}\nARN_PINNED={arn}:1",
        COMMANDS='[ "$PINNED" = first-v4lue ] && [ "$LABELLED" = second-v4lue ] && [ "$BY_ARN" = third-v4lue ] '
        '&& [ "$ARN_PINNED" = first-v4lue ] && echo all-four-read',
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert "all-four-read" in run.output
    assert "Checked 4 parameter(s)" in run.output
    for value in ("first-v4lue", "second-v4lue", "third-v4lue"):
        assert value not in run.output


def test_a_label_moved_between_two_batches_reaches_neither_batch(standin: StandIn) -> None:
    """SECRETS by label, in a rollout of one instance at a time: while the first batch bakes, the label is
    moved to a newer version. The deploy ships one configuration: both instances read the version the label
    named when the pipe read it (AWS answers a label with its Selector, and the pipe pins it)."""
    first, second = standin.launch(2)
    name = f"/deploy/lbl{uuid.uuid4().hex[:6]}/db_password"
    key = standin.create_key("a moving label")
    for value in ("old-v4lue", "new-v4lue"):
        standin.put_secret(name, value, key)
    ssm = standin.client("ssm")
    ssm.label_parameter_version(Name=name, ParameterVersion=1, Labels=["live"])
    env = standin.pipe_env(
        INSTANCE_IDS=f"{first} {second}",
        SECRETS=f"DB_PASSWORD={name}:live",
        COMMANDS='printf %s "$DB_PASSWORD" | sha256sum | cut -c1-64 > /srv/db.sha256',
        BATCH_SIZE="1",
        BAKE_TIME="20",
    )
    pipe = LivePipe(env)
    pipe.wait_for_line("batch 1/2 (1 instance(s)): baking", timeout=120)
    ssm.label_parameter_version(Name=name, ParameterVersion=2, Labels=["live"])  # moves the label
    run = pipe.finish(timeout=200)

    assert run.returncode == 0, run.output
    read = {i: standin.instance_path(i, "/srv/db.sha256").read_text().strip() for i in (first, second)}
    assert read == {i: hashlib.sha256(b"old-v4lue").hexdigest() for i in (first, second)}
    assert "v4lue" not in run.output


def test_a_missing_version_is_refused_before_anything_is_sent(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    name = f"/deploy/ref{uuid.uuid4().hex[:6]}/db_password"
    standin.put_secret(name, "only-v4lue", standin.create_key("one version"))
    before = sent_so_far(standin)
    run = run_pipe(standin.pipe_env(INSTANCE_IDS=instance_id, SECRETS=f"DB={name}:9", COMMANDS="true"))

    assert run.returncode == 1, run.output
    assert f"SECRETS: nothing was sent. Parameter(s) not found: {name}:9 (for DB)" in run.output
    assert "A :version or :label must exist" in run.output
    assert sent_so_far(standin) == before


def test_an_emulators_keys_are_accepted(standin: StandIn) -> None:
    """The key's format is AWS's (here: the stand-in's) to judge, not the pipe's."""
    (instance_id,) = standin.launch(1)
    env = standin.pipe_env(INSTANCE_IDS=instance_id, COMMANDS="echo hi", AWS_ACCESS_KEY_ID="test")
    env["AWS_SECRET_ACCESS_KEY"] = "test"
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert f"{instance_id}: Success" in run.output or "Deployed to 1 instance(s)" in run.output


# --- refused by name, nothing sent: one test per class --------------------------------------------


def symlink_loop() -> str:
    folder = Path(CLONE_DIR) / f"loop-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    (folder / "a.sh").symlink_to(folder / "b.sh")
    (folder / "b.sh").symlink_to(folder / "a.sh")
    return f"{folder.name}/a.sh"


REFUSALS: dict[str, tuple[Callable[[], dict[str, str]], str]] = {
    "a list where one value is expected": (
        lambda: yaml_list("MAX_CONCURRENCY", ["10", "20"]),
        "MAX_CONCURRENCY:\n- is given as a YAML list (MAX_CONCURRENCY_COUNT",
    ),
    "WAIT false with a health check": (
        lambda: {"WAIT": "false", "HEALTHCHECK_COMMANDS": "curl -f localhost"},
        "WAIT:\n- 'false' ends the step as soon as the command is sent, so HEALTHCHECK_COMMANDS would never run",
    ),
    "JSON nested 2,000 deep": (
        lambda: {"DOCUMENT_PARAMETERS": '{"a": ' * 2000 + '"x"' + "}" * 2000},
        "DOCUMENT_PARAMETERS:\n- nests too deeply",
    ),
    "a script that is a symlink loop": (
        lambda: {"COMMANDS": "", "SCRIPT": symlink_loop()},
        "(a symlink loop)",
    ),
    "a script name over 255 characters": (
        lambda: {"COMMANDS": "", "SCRIPT": "s" * 300 + ".sh"},
        "(File name too long)",
    ),
    "6,000 bad ids": (
        lambda: {"INSTANCE_IDS": " ".join(f"i-bad{n}" for n in range(6000))},
        "and 5,990 more are not instance ids",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_each_class_of_bad_input_is_refused_by_name_and_nothing_is_sent(standin: StandIn, case: str) -> None:
    variables, expected = REFUSALS[case]
    (instance_id,) = standin.launch(1)
    env = {**standin.pipe_env(INSTANCE_IDS=instance_id, COMMANDS="echo hi"), **variables()}
    before = sent_so_far(standin)
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert "Validation errors:" in run.output
    assert expected in run.output, run.output[-2000:]
    assert "Traceback" not in run.output
    assert "Unexpected error" not in run.output
    assert len(run.output) < 4000  # a value is quoted cut, a list of ids shortened
    assert sent_so_far(standin) == before
    ssm = standin.client("ssm")
    assert ssm.list_commands(InstanceId=instance_id)["Commands"] == []


# --- hybrid (mi-) nodes selected by TARGETS ---------------------------------------------------------


def test_targets_select_hybrid_nodes_by_tag_along_with_ec2_instances(standin: StandIn) -> None:
    service = f"hyb-{uuid.uuid4().hex[:8]}"
    (hybrid,) = standin.register_hybrid(1, tags={"Service": service})
    (ec2,) = standin.launch(1, tags={"Service": service})
    run = run_pipe(standin.pipe_env(TARGETS=f"tag:Service={service}", COMMANDS="echo deployed here"))

    assert run.returncode == 0, run.output
    assert "TARGETS match 2 running instance(s)" in run.output
    assert "All 2 instance(s) have the SSM Agent online" in run.output
    assert f"{hybrid} | deployed here" in run.output
    assert f"{ec2} | deployed here" in run.output


def test_targets_that_only_hybrid_nodes_match_are_not_refused(standin: StandIn) -> None:
    """Resolved through EC2 alone, they once matched "no running instance": nothing was sent."""
    site = f"site-{uuid.uuid4().hex[:8]}"
    hybrids = standin.register_hybrid(2, tags={"Site": site})
    run = run_pipe(standin.pipe_env(TARGETS=f"tag:Site={site}", COMMANDS="echo on-premises"))

    assert run.returncode == 0, run.output
    for instance_id in hybrids:
        assert f"{instance_id} | on-premises" in run.output
