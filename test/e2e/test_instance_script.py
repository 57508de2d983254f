"""What runs on the instances keeps the user's shell semantics, and no value or name from outside
becomes code there: health checks under ``set -e``, ``;`` in VARIABLES values, reserved names,
hostile Bitbucket build variables, CRLF scripts. Each runs a real shell process in the stand-in."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from standin import StandIn
from support import run_pipe


def home(standin: StandIn, instance_id: str) -> Path:
    return standin.instance(instance_id).home


# --- item 1: the user's exit semantics in every phase -----------------------------------------------


def test_health_check_with_set_e_fails_at_its_failing_command_and_rolls_back(standin: StandIn, tmp_path: Path) -> None:
    (instance_id,) = standin.launch(1)
    env = standin.pipe_env(
        INSTANCE_IDS=instance_id,
        COMMANDS="echo deployed",
        # `false` stands for `curl -f` on a 503: under set -e the check must end there, failed
        HEALTHCHECK_COMMANDS='set -e\necho "got 503"\nfalse\necho "check went on after a failure"',
        HEALTHCHECK_RETRIES="2",
        HEALTHCHECK_INTERVAL="0",
        ROLLBACK_COMMANDS='cd "$HOME" && touch rolled-back',
        BITBUCKET_CLONE_DIR=str(tmp_path),
    )
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert "got 503" in run.output
    assert "check went on after a failure" not in run.output
    assert "health check failed 2 time(s)" in run.output
    assert (home(standin, instance_id) / "rolled-back").exists()
    document = json.loads((tmp_path / "ssm-deploy-result.json").read_text())
    assert (document["health_check"], document["rollback"]) == ("failed", "succeeded")


def test_health_check_keeps_pipefail_and_exit_codes_and_retries_after_exit(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    counter = home(standin, instance_id) / "attempts"
    env = standin.pipe_env(
        INSTANCE_IDS=instance_id,
        COMMANDS="true",
        # attempt 1: `exit 4` ends the attempt (not the loop); attempt 2: a pipeline failing under
        # pipefail; attempt 3 passes
        HEALTHCHECK_COMMANDS=(
            f'echo x >> "{counter}"\n'
            f'n=$(wc -l < "{counter}")\n'
            '[ "$n" -ne 1 ] || exit 4\n'
            "set -o pipefail\n"
            '[ "$n" -ne 2 ] || { false | cat; }\n'
            '[ "$n" -ge 3 ] && echo "healthy at attempt $n"'
        ),
        HEALTHCHECK_RETRIES="3",
        HEALTHCHECK_INTERVAL="0",
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert "health check attempt 1 failed (exit 4); retrying in 0 s" in run.output
    assert "health check attempt 2 failed (exit 1); retrying in 0 s" in run.output
    assert "healthy at attempt 3" in run.output


def test_set_e_in_commands_and_rollback_fails_them_at_the_failing_command(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    env = standin.pipe_env(
        INSTANCE_IDS=instance_id,
        COMMANDS='set -e\necho "deploy started"\nfalse\necho "deploy went on after a failure"',
        ROLLBACK_COMMANDS='set -e\nfalse\ncd "$HOME" && touch rollback-went-on',
    )
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert "deploy started" in run.output and "deploy went on after a failure" not in run.output
    assert f"Deploy failed on 1 of 1 instance(s): {instance_id}: Failed (exit 1)." in run.output
    assert f"ROLLBACK FAILED on 1 of 1 instance(s): {instance_id}: Failed (exit 1)" in run.output
    assert not (home(standin, instance_id) / "rollback-went-on").exists()


# --- item 7: a VARIABLES value stays whole; data never becomes a name -------------------------------


def test_semicolons_in_variables_values_stay_in_the_value_and_create_no_variable(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    pwned = home(standin, instance_id) / "pwned"
    # what Bitbucket hands the pipe for `BRANCH=$BITBUCKET_BRANCH` on the (valid) branch below
    branch = f'feature;BASH_ENV=$(touch "{pwned}")'
    env = standin.pipe_env(
        INSTANCE_IDS=instance_id,
        VARIABLES=f"JDBC_URL=jdbc:sqlserver://db:1433;databaseName=app\nBRANCH={branch}",
        COMMANDS=(
            'printf "url=%s\\n" "$JDBC_URL"\n'
            'printf "branch=%s\\n" "$BRANCH"\n'
            'env | grep -q "^databaseName=" && echo "databaseName was created"\n'
            'env | grep -q "^BASH_ENV=" && echo "BASH_ENV was created"\n'
            "bash -c 'echo child bash ran'"
        ),
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert "url=jdbc:sqlserver://db:1433;databaseName=app" in run.output
    assert f"branch={branch}" in run.output
    assert "child bash ran" in run.output
    assert "was created" not in run.output
    assert not pwned.exists()
    # 1.x split these entries at ';': the log says the values are now kept whole
    assert "VARIABLES: the value of JDBC_URL holds ';databaseName=' and is kept whole" in run.output
    assert "VARIABLES: the value of BRANCH holds ';BASH_ENV=' and is kept whole" in run.output


def test_variables_given_as_a_yaml_list_keep_each_item_whole(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    env = standin.pipe_env(
        INSTANCE_IDS=instance_id,
        VARIABLES_COUNT="2",
        VARIABLES_0="JDBC_URL=jdbc:sqlserver://db:1433;databaseName=app",
        VARIABLES_1="GREETING=line one\nline two",
        COMMANDS='printf "url=%s\\n" "$JDBC_URL"; printf "%s\\n" "$GREETING" | wc -l | sed "s/^ */lines=/"',
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert "url=jdbc:sqlserver://db:1433;databaseName=app" in run.output
    assert "lines=2" in run.output


# --- item 8: names that change how the shell or the loader behave -----------------------------------


@pytest.mark.parametrize(
    ("parameter", "exported"), [("bash_env", "BASH_ENV"), ("path", "PATH"), ("ld-preload", "LD_PRELOAD")]
)
def test_parameters_path_refuses_names_that_change_the_shell(standin: StandIn, parameter: str, exported: str) -> None:
    (instance_id,) = standin.launch(1)
    environment = f"rn{uuid.uuid4().hex[:6]}"
    key = standin.create_key("reserved")
    standin.put_secret(f"/deploy/{environment}/db_password", "fine-value", key)
    standin.put_secret(f"/deploy/{environment}/{parameter}", "/tmp/evil", key)
    env = standin.pipe_env(
        ENVIRONMENT=environment,
        INSTANCE_IDS=instance_id,
        PARAMETERS_PATH="/deploy/{environment}/",
        COMMANDS="true",
    )
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert "PARAMETERS_PATH: nothing was sent." in run.output
    assert f"/deploy/{environment}/{parameter} would be exported as {exported}, a reserved name" in run.output
    assert "/tmp/evil" not in run.output
    assert standin.client("ssm").list_commands(InstanceId=instance_id)["Commands"] == []


@pytest.mark.parametrize(
    ("variable", "entry"),
    [("VARIABLES", "BASH_ENV=/tmp/x"), ("VARIABLES", "LD_PRELOAD=/tmp/x.so"), ("SECRETS", "PATH=/deploy/path")],
)
def test_reserved_names_in_variables_and_secrets_are_refused(standin: StandIn, variable: str, entry: str) -> None:
    (instance_id,) = standin.launch(1)
    run = run_pipe(standin.pipe_env(INSTANCE_IDS=instance_id, COMMANDS="true", **{variable: entry}))

    name = entry.partition("=")[0]
    assert run.returncode == 1, run.output
    assert f"{variable}:\n- {name} is reserved:" in run.output
    assert standin.client("ssm").list_commands(InstanceId=instance_id)["Commands"] == []


# --- item 10: Bitbucket's build variables never run as commands --------------------------------------


def test_newlines_in_build_variables_do_not_run_on_the_instance(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    folder = home(standin, instance_id)
    env = standin.pipe_env(
        INSTANCE_IDS=instance_id,
        BITBUCKET_BUILD_NUMBER=f'42\ntouch "{folder}/pwned-build"',
        BITBUCKET_REPO_FULL_NAME=f'acme/web-api\ntouch "{folder}/pwned-repo"\r\ntouch "{folder}/pwned-cr"',
        COMMANDS="echo deployed",
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert "deployed" in run.output
    assert not list(folder.glob("pwned-*"))
    header = standin.sent_commands()[-1].request["Parameters"]["commands"][0]
    assert header.startswith("# ssm-deploy acme/web-api_touch")
    assert "\n" not in header and "\r" not in header


# --- item 17: a SCRIPT with Windows line endings ------------------------------------------------------


def test_script_with_crlf_line_endings_runs_to_its_last_line(standin: StandIn, tmp_path: Path) -> None:
    (instance_id,) = standin.launch(1)
    (tmp_path / "deploy.sh").write_bytes(b"echo one\r\nif true; then\r\n  echo two\r\nfi\r\nexit 0\r\n")
    env = standin.pipe_env(INSTANCE_IDS=instance_id, SCRIPT="deploy.sh", BITBUCKET_CLONE_DIR=str(tmp_path))
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert "one" in run.output and "two" in run.output
    assert "\r" not in "\n".join(standin.sent_commands()[-1].request["Parameters"]["commands"])
