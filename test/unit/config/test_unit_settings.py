"""pipe.config.settings.load_settings: valid variables become DeploySettings, every problem is named."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from pipe.config.parsers import SHOWN_ITEMS
from pipe.config.rollout import AutoScalingChoice, TargetGroupChoice
from pipe.config.settings import DeploySettings, ReleaseSettings, StaticKeys, load_settings
from pipe.config.variables import (
    CLOUDWATCH_LOG_GROUP,
    DELIVERY_TIMEOUT,
    EXECUTION_TIMEOUT,
    EXPANDED,
    LIST_FORMS,
    VARIABLE_NAMES,
)
from pipe.errors import ValidationFailed
from pipe.model import SecretRef, Target
from pipe.plan.script import script_size_problem

ID_A = "i-0123456789abcdef0"
ID_B = "i-0fedcba9876543210"
ID_SHORT = "i-12345678"
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLESESSIONTOKENvalue"

BITBUCKET_ENV = {
    "BITBUCKET_REPO_FULL_NAME": "team/app",
    "BITBUCKET_BUILD_NUMBER": "42",
    "BITBUCKET_COMMIT": "0123456789abcdef0123",
    "BITBUCKET_BRANCH": "main",
    "BITBUCKET_DEPLOYMENT_ENVIRONMENT": "production",
}

# the smallest valid set; invalid cases change one variable of it
MINIMAL: dict[str, str | None] = {
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "INSTANCE_IDS": ID_A,
    "COMMANDS": "./deploy.sh",
}


def load(overrides: Mapping[str, str | None] | None = None, env: Mapping[str, str] = BITBUCKET_ENV) -> DeploySettings:
    return load_settings({**MINIMAL, **(overrides or {})}, env, script_size=script_size_problem)


RELEASE_MODE: dict[str, str | None] = {
    "RELEASE": "previous",
    "ARTIFACT_BUCKET": "acme-artifacts",
    "APP_DIR": "/srv/web-api",
    "ENVIRONMENT": "prod",
}


def _release(s: DeploySettings) -> ReleaseSettings:
    assert s.release is not None
    return s.release


def _oidc(s: DeploySettings) -> object:
    return s.oidc_role_arn


def _role(s: DeploySettings) -> object:
    return s.role_arn


def _targets(s: DeploySettings) -> object:
    return s.targets


def _target_pairs(s: DeploySettings) -> object:
    return [(t.key, t.values) for t in s.targets]


def _secrets(s: DeploySettings) -> object:
    return s.secrets


def _variables(s: DeploySettings) -> object:
    return s.variables


def _parameters_path(s: DeploySettings) -> object:
    return s.parameters_path


def _comment(s: DeploySettings) -> object:
    return s.comment


def _log_group(s: DeploySettings) -> object:
    return s.log_group


def _prefix(s: DeploySettings) -> object:
    return s.output_s3_prefix


def _ids(s: DeploySettings) -> object:
    return s.instance_ids


def _commands(s: DeploySettings) -> object:
    return s.commands


def _healthcheck(s: DeploySettings) -> object:
    return s.healthcheck_commands


def _rollback(s: DeploySettings) -> object:
    return s.rollback_commands


def problems_of(overrides: Mapping[str, str | None], env: Mapping[str, str] = BITBUCKET_ENV) -> dict[str, list[str]]:
    with pytest.raises(ValidationFailed) as info:
        load(overrides, env)
    return info.value.problems


def test_full_valid_set() -> None:
    variables: dict[str, str | None] = {
        "AWS_DEFAULT_REGION": " eu-west-1 ",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "AWS_OIDC_ROLE_ARN": "arn:aws:iam::111111111111:role/bitbucket-oidc",
        "ENVIRONMENT": "staging",
        "ROLE_ARN": "arn:aws:iam::123456789012:role/deploy-{environment}",
        "EXTERNAL_ID": "ext-id:1",
        "INSTANCE_IDS": f"{ID_A}, {ID_B}\n{ID_SHORT}",
        "COMMANDS": "\ncd /srv/app\n./deploy.sh\n",
        "WORKING_DIRECTORY": " /srv ",
        "EXECUTION_TIMEOUT": "900",
        "DELIVERY_TIMEOUT": "120",
        "COMMENT": "release {environment}",
        "SECRETS": "DB_PASSWORD=/deploy/{environment}/db-password\nAPI_TOKEN=/deploy/{environment}/api-token",
        "VARIABLES": "APP_ENV={environment}\nLOG_LEVEL=info",
        "DEBUG": "yes",
        "STREAM_OUTPUT": "false",
        "CLOUDWATCH_LOG_GROUP": "/deploy/{environment}/ssm",
    }
    settings = load_settings(variables, BITBUCKET_ENV)

    assert settings.region == "eu-west-1"
    assert settings.environment == "staging"  # ENVIRONMENT wins over the deployment environment
    assert settings.static_keys == StaticKeys(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN)
    assert settings.oidc_role_arn == "arn:aws:iam::111111111111:role/bitbucket-oidc"
    assert settings.role_arn == "arn:aws:iam::123456789012:role/deploy-staging"
    assert settings.external_id == "ext-id:1"
    assert settings.instance_ids == [ID_A, ID_B, ID_SHORT]
    assert settings.commands == "cd /srv/app\n./deploy.sh"
    assert settings.working_directory == "/srv"
    assert settings.execution_timeout == 900
    assert settings.delivery_timeout == 120
    assert settings.comment == "release staging"
    assert settings.secrets == [
        SecretRef("DB_PASSWORD", "/deploy/staging/db-password"),
        SecretRef("API_TOKEN", "/deploy/staging/api-token"),
    ]
    assert settings.variables == [("APP_ENV", "staging"), ("LOG_LEVEL", "info")]
    assert settings.debug is True
    assert settings.stream_output is False
    assert settings.log_group == "/deploy/staging/ssm"
    assert settings.build.repo == "team/app"
    assert settings.build.build_number == "42"


def test_minimal_set_uses_defaults() -> None:
    settings = load({"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}, env={})
    assert settings.static_keys is None
    assert settings.environment is None
    assert settings.role_arn is None
    assert settings.oidc_role_arn is None
    assert settings.execution_timeout == int(EXECUTION_TIMEOUT.default) == 3600
    assert settings.delivery_timeout == int(DELIVERY_TIMEOUT.default) == 600
    assert settings.working_directory is None
    assert settings.secrets == []
    assert settings.variables == []
    assert settings.debug is False
    assert settings.stream_output is True
    assert settings.log_group == CLOUDWATCH_LOG_GROUP.default == "/aws/ssm/ssm-deploy"
    assert settings.comment == "ssm-deploy local#0"


def test_code_insights_is_on_by_default_and_false_turns_it_off() -> None:
    assert load().code_insights is True
    assert load({"CODE_INSIGHTS": "false"}).code_insights is False
    assert "CODE_INSIGHTS" in problems_of({"CODE_INSIGHTS": "sometimes"})


def test_default_comment_from_build() -> None:
    assert load().comment == "ssm-deploy team/app#42 0123456"


def test_long_comment_is_cut_to_the_sendcommand_limit() -> None:
    comment = load({"COMMENT": "x" * 300}).comment
    assert len(comment) == 100
    assert comment.endswith("…")


def test_blank_optional_variables_count_as_unset() -> None:
    settings = load({"ROLE_ARN": "  ", "EXECUTION_TIMEOUT": "", "DEBUG": " ", "SECRETS": "\n"})
    assert settings.role_arn is None
    assert settings.execution_timeout == int(EXECUTION_TIMEOUT.default)
    assert settings.debug is False
    assert settings.secrets == []


def test_environment_from_bitbucket_deployment_expands_role_arn() -> None:
    settings = load({"ROLE_ARN": "arn:aws:iam::123456789012:role/deploy-{environment}"})
    assert settings.environment == "production"
    assert settings.role_arn == "arn:aws:iam::123456789012:role/deploy-production"


def test_role_arn_in_gov_partition_accepted() -> None:
    arn = "arn:aws-us-gov:iam::123456789012:role/path/deploy"
    assert load({"ROLE_ARN": arn, "AWS_DEFAULT_REGION": "us-gov-west-1"}).role_arn == arn


def test_external_id_with_role_arn() -> None:
    settings = load({"ROLE_ARN": "arn:aws:iam::123456789012:role/deploy", "EXTERNAL_ID": "a1"})
    assert settings.external_id == "a1"


# --- INSTANCE_IDS -------------------------------------------------------------------------------


def test_instance_ids_duplicates_removed_in_order() -> None:
    settings = load({"INSTANCE_IDS": f"{ID_B} {ID_A},{ID_B}\n{ID_A}"})
    assert settings.instance_ids == [ID_B, ID_A]


def test_instance_ids_fifty_unique_after_dedupe_accepted() -> None:
    ids = [f"i-{n:017x}" for n in range(50)]
    assert load({"INSTANCE_IDS": " ".join(ids + ids)}).instance_ids == ids


def test_instance_ids_hybrid_managed_node_accepted() -> None:
    assert load({"INSTANCE_IDS": "mi-0123456789abcdef0"}).instance_ids == ["mi-0123456789abcdef0"]


def test_instance_ids_yaml_list_from_env() -> None:
    env = {
        **BITBUCKET_ENV,
        "INSTANCE_IDS_COUNT": "2",
        "INSTANCE_IDS_0": ID_B,
        "INSTANCE_IDS_1": f"{ID_A} {ID_SHORT}",  # an item may itself hold several ids
    }
    # the toolkit puts the list's YAML text in INSTANCE_IDS; the _COUNT/_n form is what counts
    settings = load({"INSTANCE_IDS": f"['{ID_B}', '{ID_A} {ID_SHORT}']"}, env)
    assert settings.instance_ids == [ID_B, ID_A, ID_SHORT]


def test_instance_ids_yaml_list_missing_item() -> None:
    env = {**BITBUCKET_ENV, "INSTANCE_IDS_COUNT": "2", "INSTANCE_IDS_0": ID_A}
    problems = problems_of({"INSTANCE_IDS": None}, env)
    assert set(problems) == {"INSTANCE_IDS"}
    assert "INSTANCE_IDS_1 is missing" in problems["INSTANCE_IDS"][0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("i-123", "'i-123' is not an instance id"),
        (f"{ID_A} i-123 I-0123456789ABCDEF0", "'i-123', 'I-0123456789ABCDEF0' are not instance ids"),
        ("i-0123456789abcdef", "'i-0123456789abcdef' is not an instance id"),  # 16 hex digits
        ("arn:aws:ec2:eu-west-1:123456789012:instance/i-0123456789abcdef0", "is not an instance id"),
        ("", "is required"),
        (" , \n", "is required"),
        (None, "is required"),
    ],
)
def test_instance_ids_invalid(value: str | None, expected: str) -> None:
    problems = problems_of({"INSTANCE_IDS": value})
    assert set(problems) == {"INSTANCE_IDS"}
    assert expected in problems["INSTANCE_IDS"][0]


def test_instance_id_problem_explains_the_format() -> None:
    reason = problems_of({"INSTANCE_IDS": "i-123"})["INSTANCE_IDS"][0]
    assert "8 or 17 hex digits" in reason


# --- one invalid variable at a time -------------------------------------------------------------

INVALID_CASES: list[tuple[dict[str, str | None], str, list[str]]] = [
    ({"ROLE_ARN": "deploy-role"}, "ROLE_ARN", ["must be an IAM role ARN", "'deploy-role'"]),
    (
        {"ROLE_ARN": "arn:aws:iam::12345:role/deploy"},
        "ROLE_ARN",
        ["arn:aws:iam::123456789012:role/deploy", "'arn:aws:iam::12345:role/deploy'"],
    ),
    ({"ROLE_ARN": "arn:aws:iam::123456789012:user/deploy"}, "ROLE_ARN", ["must be an IAM role ARN"]),
    ({"ROLE_ARN": "arn:aws:iam::123456789012:role/{env}"}, "ROLE_ARN", ["unknown placeholder {env}"]),
    ({"AWS_OIDC_ROLE_ARN": "bitbucket"}, "AWS_OIDC_ROLE_ARN", ["must be an IAM role ARN", "'bitbucket'"]),
    ({"EXTERNAL_ID": "ext-1"}, "EXTERNAL_ID", ["is only used with ROLE_ARN"]),
    ({"EXECUTION_TIMEOUT": "abc"}, "EXECUTION_TIMEOUT", ["whole number of seconds from 1 to 172800", "'abc'"]),
    ({"EXECUTION_TIMEOUT": "0"}, "EXECUTION_TIMEOUT", ["from 1 to 172800 seconds, got 0"]),
    ({"EXECUTION_TIMEOUT": "999999"}, "EXECUTION_TIMEOUT", ["from 1 to 172800 seconds, got 999999"]),
    ({"DELIVERY_TIMEOUT": "10"}, "DELIVERY_TIMEOUT", ["from 30 to 2592000 seconds, got 10"]),
    ({"SECRETS": "DB_PASSWORD=/deploy/db password"}, "SECRETS", ["DB_PASSWORD:", "not a Parameter Store name"]),
    ({"SECRETS": "DB_PASSWORD="}, "SECRETS", ["DB_PASSWORD:", "not a Parameter Store name"]),
    ({"SECRETS": "DB_PASSWORD=deploy/db"}, "SECRETS", ["DB_PASSWORD:", "not a Parameter Store name"]),
    ({"SECRETS": "DB_PASSWORD=/deploy//db"}, "SECRETS", ["not a Parameter Store name", "'/deploy//db'"]),
    ({"SECRETS": "DB_PASSWORD=/deploy/db/"}, "SECRETS", ["not a Parameter Store name"]),
    ({"SECRETS": "DB=/deploy/a\nDB=/deploy/b"}, "SECRETS", ["DB is given twice"]),
    ({"SECRETS": "1DB=/deploy/a"}, "SECRETS", ["'1DB' is not a valid environment variable name"]),
    ({"SECRETS": "DB /deploy/a"}, "SECRETS", ["has no '='"]),
    ({"VARIABLES": "A=1\nA=2"}, "VARIABLES", ["A given twice"]),
    (
        {"SECRETS": "DB_PASSWORD=/deploy/db", "VARIABLES": "DB_PASSWORD=plain\nX=1"},
        "VARIABLES",
        ["DB_PASSWORD also set by SECRETS"],
    ),
    ({"DEBUG": "maybe"}, "DEBUG", ["must be true or false", "'maybe'"]),
    ({"STREAM_OUTPUT": "sometimes"}, "STREAM_OUTPUT", ["must be true or false", "'sometimes'"]),
    ({"CLOUDWATCH_LOG_GROUP": "my log group"}, "CLOUDWATCH_LOG_GROUP", ["log group name", "'my log group'"]),
    ({"CLOUDWATCH_LOG_GROUP": "/ssm/" + "g" * 600}, "CLOUDWATCH_LOG_GROUP", ["log group name"]),
    ({"CLOUDWATCH_LOG_GROUP": "/ssm/{branch}"}, "CLOUDWATCH_LOG_GROUP", ["unknown placeholder {branch}"]),
    ({"AWS_SECRET_ACCESS_KEY": None}, "AWS_SECRET_ACCESS_KEY", ["is missing", "AWS_ACCESS_KEY_ID"]),
    ({"AWS_ACCESS_KEY_ID": " "}, "AWS_ACCESS_KEY_ID", ["is missing", "AWS_SECRET_ACCESS_KEY"]),
    ({"AWS_DEFAULT_REGION": "Europe"}, "AWS_DEFAULT_REGION", ["AWS region such as eu-west-1", "'Europe'"]),
    ({"AWS_DEFAULT_REGION": "eu-west"}, "AWS_DEFAULT_REGION", ["'eu-west'"]),
    ({"AWS_DEFAULT_REGION": None}, "AWS_DEFAULT_REGION", ["got ''"]),
    ({"ENVIRONMENT": "prod env"}, "ENVIRONMENT", ["'prod env'"]),
    ({"COMMANDS": " \n\n "}, "COMMANDS", ["is empty"]),
]


@pytest.mark.parametrize(("overrides", "variable", "expected"), INVALID_CASES)
def test_invalid_variable_is_reported_under_its_name(
    overrides: dict[str, str | None], variable: str, expected: list[str]
) -> None:
    problems = problems_of(overrides)
    assert set(problems) == {variable}
    reason = " ".join(problems[variable])
    for text in expected:
        assert text in reason


def test_secret_value_of_static_keys_never_in_problems() -> None:
    problems = problems_of({"AWS_ACCESS_KEY_ID": None})
    assert SECRET_KEY not in repr(problems)


def test_placeholder_without_any_environment() -> None:
    env = {k: v for k, v in BITBUCKET_ENV.items() if k != "BITBUCKET_DEPLOYMENT_ENVIRONMENT"}
    problems = problems_of(
        {
            "ROLE_ARN": "arn:aws:iam::123456789012:role/deploy-{environment}",
            "SECRETS": "DB=/deploy/{environment}/db",
        },
        env,
    )
    assert set(problems) == {"ROLE_ARN", "SECRETS"}
    for name in ("ROLE_ARN", "SECRETS"):
        assert "no environment is known: set ENVIRONMENT" in problems[name][0]


def test_several_problems_reported_together() -> None:
    problems = problems_of(
        {
            "AWS_DEFAULT_REGION": "Europe",
            "INSTANCE_IDS": "i-123",
            "COMMANDS": "",
            "EXECUTION_TIMEOUT": "abc",
            "DELIVERY_TIMEOUT": "10",
            "SECRETS": "DB=/a//b",
            "DEBUG": "maybe",
            "AWS_SECRET_ACCESS_KEY": None,
        }
    )
    assert set(problems) == {
        "AWS_DEFAULT_REGION",
        "INSTANCE_IDS",
        "COMMANDS",
        "EXECUTION_TIMEOUT",
        "DELIVERY_TIMEOUT",
        "SECRETS",
        "DEBUG",
        "AWS_SECRET_ACCESS_KEY",
    }


def test_two_reasons_for_one_variable_are_both_kept() -> None:
    reasons = problems_of({"EXTERNAL_ID": "x"})["EXTERNAL_ID"]
    assert len(reasons) == 2
    assert "2 to 1224" in reasons[0]
    assert "only used with ROLE_ARN" in reasons[1]


def test_validation_failed_message_names_each_variable() -> None:
    with pytest.raises(ValidationFailed) as info:
        load({"DEBUG": "maybe", "DELIVERY_TIMEOUT": "10"})
    message = str(info.value)
    assert "DEBUG: must be true or false, got 'maybe'" in message
    assert "DELIVERY_TIMEOUT: must be from 30 to 2592000 seconds, got 10" in message


def test_invalid_role_arn_does_not_blame_external_id() -> None:
    problems = problems_of({"ROLE_ARN": "deploy-role", "EXTERNAL_ID": "ext-1"})
    assert set(problems) == {"ROLE_ARN"}


# --- StaticKeys never shows the secret ----------------------------------------------------------


def test_static_keys_repr_hides_secret_and_token() -> None:
    keys = StaticKeys(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN)
    for text in (repr(keys), str(keys), f"{keys}", f"{keys!r}"):
        assert ACCESS_KEY in text
        assert SECRET_KEY not in text
        assert SESSION_TOKEN not in text


def test_settings_repr_hides_secret_key() -> None:
    settings = load({"AWS_SESSION_TOKEN": SESSION_TOKEN})
    assert settings.static_keys is not None
    assert settings.static_keys.secret_access_key == SECRET_KEY
    text = repr(settings)
    assert ACCESS_KEY in text
    assert SECRET_KEY not in text
    assert SESSION_TOKEN not in text


def test_braces_that_are_not_placeholders_pass_through() -> None:
    settings = load({"VARIABLES": 'CONFIG={"a": 1}\nHOME_DIR=${HOME}/app'})
    assert settings.variables == [("CONFIG", '{"a": 1}'), ("HOME_DIR", "${HOME}/app")]


def test_secrets_manager_references_are_accepted() -> None:
    settings = load({"SECRETS": "TOKEN=/aws/reference/secretsmanager/prod/token"})
    assert settings.secrets[0].parameter == "/aws/reference/secretsmanager/prod/token"


def test_trailing_newline_does_not_slip_through_a_pattern() -> None:
    assert "ENVIRONMENT" in problems_of({"ENVIRONMENT": None}, env={"BITBUCKET_DEPLOYMENT_ENVIRONMENT": "prod\n"})


def test_more_than_fifty_instance_ids_are_accepted() -> None:
    ids = [f"i-{n:017x}" for n in range(120)]
    assert load({"INSTANCE_IDS": " ".join(ids)}).instance_ids == ids


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("tag:Service=api;tag:Env=prod", [("tag:Service", ("api",)), ("tag:Env", ("prod",))]),
        (
            "tag:Env=stg,prod\nresource-groups:Name=web",
            [("tag:Env", ("stg", "prod")), ("resource-groups:Name", ("web",))],
        ),
        ("tag-key=Service", [("tag-key", ("Service",))]),
    ],
)
def test_targets_are_parsed(value: str, expected: list[tuple[str, tuple[str, ...]]]) -> None:
    settings = load({"INSTANCE_IDS": None, "TARGETS": value})
    assert [(t.key, t.values) for t in settings.targets] == expected
    assert settings.instance_ids == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"TARGETS": "Service=api"}, "unknown target key 'Service'"),
        ({"TARGETS": "tag:Service"}, "must be KEY=value"),
        ({"TARGETS": "tag:Env=a;tag:Env=b"}, "tag:Env is given twice"),
        ({"TARGETS": "tag:A=1;tag:B=1;tag:C=1;tag:D=1;tag:E=1;tag:F=1"}, "at most 5"),
        ({"TARGETS": "tag:Env={stage}"}, "unknown placeholder {stage}"),
    ],
)
def test_bad_targets_are_refused(overrides: dict[str, str], expected: str) -> None:
    problems = problems_of({"INSTANCE_IDS": None, **overrides})
    assert set(problems) == {"TARGETS"}
    assert expected in problems["TARGETS"][0]


def test_instance_ids_and_targets_together_are_refused() -> None:
    assert "not both" in problems_of({"TARGETS": "tag:Service=api"})["TARGETS"][0]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MAX_CONCURRENCY", "0", "at least 1"),
        ("MAX_CONCURRENCY", "0%", "from 1% to 100%"),
        ("MAX_CONCURRENCY", "ten", "number like 10"),
        ("MAX_ERRORS", "101%", "from 0% to 100%"),
        ("MAX_ERRORS", "-1", "number like 10"),
    ],
)
def test_bad_rate_controls_are_refused(name: str, value: str, expected: str) -> None:
    assert expected in problems_of({name: value})[name][0]


def test_rate_controls_and_result_file_defaults() -> None:
    settings = load({"MAX_CONCURRENCY": "10%", "MAX_ERRORS": "2"}, env={"BITBUCKET_CLONE_DIR": "/build"})
    assert (settings.max_concurrency, settings.max_errors) == ("10%", "2")
    assert settings.result_file == "/build/ssm-deploy-result.json"


# --- {environment}: replaced exactly where the table says ---------------------------------------

# a valid value holding {environment} for each variable the table expands it in, and where it shows
EXPANDING_SAMPLES: dict[str, tuple[dict[str, str | None], Callable[[DeploySettings], object]]] = {
    "AWS_OIDC_ROLE_ARN": ({"AWS_OIDC_ROLE_ARN": "arn:aws:iam::123456789012:role/ci-{environment}"}, _oidc),
    "ROLE_ARN": ({"ROLE_ARN": "arn:aws:iam::123456789012:role/deploy-{environment}"}, _role),
    "TARGETS": ({"INSTANCE_IDS": None, "TARGETS": "tag:Env={environment}"}, _targets),
    "SECRETS": ({"SECRETS": "DB=/deploy/{environment}/db"}, _secrets),
    "VARIABLES": ({"VARIABLES": "STAGE={environment}"}, _variables),
    "PARAMETERS_PATH": ({"PARAMETERS_PATH": "/deploy/{environment}/"}, _parameters_path),
    "COMMENT": ({"COMMENT": "release to {environment}"}, _comment),
    "CLOUDWATCH_LOG_GROUP": ({"CLOUDWATCH_LOG_GROUP": "/deploy/{environment}"}, _log_group),
    "OUTPUT_S3_PREFIX": ({"OUTPUT_S3_BUCKET": "out-bucket", "OUTPUT_S3_PREFIX": "web/{environment}"}, _prefix),
    "ARTIFACT_PREFIX": ({**RELEASE_MODE, "ARTIFACT_PREFIX": "web/{environment}/"}, lambda s: _release(s).prefix),
    "TARGET_GROUPS": ({"TARGET_GROUPS": "web-{environment}"}, lambda s: s.rollout.target_groups),
    "AUTO_SCALING_GROUPS": ({"AUTO_SCALING_GROUPS": "web-{environment}"}, lambda s: s.rollout.auto_scaling_groups),
    "ACTIVATE_COMMANDS": (
        {**RELEASE_MODE, "ACTIVATE_COMMANDS": "pm2 startOrReload app.js --env {environment}"},
        lambda s: _release(s).activate_commands,
    ),
}


def test_environment_is_expanded_exactly_where_the_table_says() -> None:
    assert set(EXPANDING_SAMPLES) == set(EXPANDED), "give every expanding variable a sample"
    for name, (overrides, read) in EXPANDING_SAMPLES.items():
        shown = str(read(load({**overrides, "ENVIRONMENT": "stg"})))
        assert "stg" in shown and "{environment}" not in shown, name


@pytest.mark.parametrize(
    ("name", "read"),
    [("COMMANDS", lambda s: s.commands), ("WORKING_DIRECTORY", lambda s: s.working_directory)],
)
def test_environment_is_left_alone_elsewhere(name: str, read: Callable[[DeploySettings], object]) -> None:
    assert read(load({name: "/srv/{environment}", "ENVIRONMENT": "stg"})) == "/srv/{environment}"


@pytest.mark.parametrize(
    "value",
    ['{"a": 1}', "{date}", "{{ .Values.tag }}", "{Environment}", "x{}y", "${environment}", "{env}/{region}"],
)
def test_braces_in_variables_and_comment_values_are_kept(value: str) -> None:
    settings = load({"VARIABLES": f"V={value}", "COMMENT": f"c {value}"})
    assert settings.variables == [("V", value)]
    assert settings.comment == f"c {value}"


def test_doubled_braces_give_a_literal_environment_placeholder() -> None:
    settings = load({"VARIABLES": "V={environment}/{{environment}}", "ENVIRONMENT": "stg"})
    assert settings.variables == [("V", "stg/{environment}")]


def test_a_misspelt_placeholder_is_still_refused_where_values_hold_no_braces() -> None:
    problems = problems_of({"ROLE_ARN": "arn:aws:iam::123456789012:role/deploy-{env}", "TARGETS": None})
    assert "unknown placeholder {env}" in problems["ROLE_ARN"][0]


# --- WAIT: 'false' with later phases (issue 9, item 6) -------------------------------------------


@pytest.mark.parametrize(
    "later", [["HEALTHCHECK_COMMANDS"], ["ROLLBACK_COMMANDS"], ["HEALTHCHECK_COMMANDS", "ROLLBACK_COMMANDS"]]
)
def test_wait_false_with_a_health_check_or_rollback_is_refused_by_name(later: list[str]) -> None:
    problems = problems_of({"WAIT": "false", **{name: "true" for name in later}})
    assert set(problems) == {"WAIT"}
    assert all(name in problems["WAIT"][0] for name in later)
    assert "would never run" in problems["WAIT"][0]


def test_wait_false_alone_and_wait_true_with_later_phases_are_accepted() -> None:
    assert load({"WAIT": "false"}).wait is False
    assert load({"WAIT": "true", "HEALTHCHECK_COMMANDS": "true", "ROLLBACK_COMMANDS": "true"}).wait is True


# --- valid inputs that were refused (issue 9, item 14) -------------------------------------------


@pytest.mark.parametrize(("key_id", "secret"), [("test", "test"), ("testing", "testing"), ("minioadmin", "minioadmin")])
def test_emulator_keys_are_accepted(key_id: str, secret: str) -> None:
    keys = load({"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}).static_keys
    assert keys == StaticKeys(key_id, secret)


@pytest.mark.parametrize(
    "secret", ["wJalrXUtn FEMIK7", "'wJalrXUtnFEMI'", '"wJalrXUtnFEMI"', "wJalr\tXUtn", "wJalr\u00a0XUtn"]
)
def test_a_pasting_slip_in_the_secret_key_is_refused_without_showing_it(secret: str) -> None:
    problems = problems_of({"AWS_SECRET_ACCESS_KEY": secret})
    assert set(problems) == {"AWS_SECRET_ACCESS_KEY"}
    assert secret not in repr(problems)
    assert not any(part in repr(problems) for part in re.split(r"[\s'\"]", secret) if len(part) > 3)


@pytest.mark.parametrize("key_id", ["AKIA EXAMPLE", "'AKIAEXAMPLE'", "AKIAÉXAMPLE", "AKIA\u2028X"])
def test_a_key_id_that_cannot_travel_in_a_header_is_refused(key_id: str) -> None:
    assert set(problems_of({"AWS_ACCESS_KEY_ID": key_id})) == {"AWS_ACCESS_KEY_ID"}


@pytest.mark.parametrize(
    "parameter",
    [
        "arn:aws:ssm:eu-west-1:210987654321:parameter/shared/db_password",
        "arn:aws:ssm:eu-west-1:210987654321:parameter/shared/db_password:4",
        "arn:aws-us-gov:ssm:us-gov-west-1:210987654321:parameter/flat-name",
        "/deploy/prod/db_password:3",
        "/deploy/prod/db_password:live",
        "/deploy/prod/db_password:release-2026.11_a",
        "flat.name:12",
    ],
)
def test_secrets_by_arn_version_or_label_are_accepted(parameter: str) -> None:
    assert load({"SECRETS": f"DB={parameter}"}).secrets == [SecretRef("DB", parameter)]


@pytest.mark.parametrize(
    "parameter",
    [
        "/deploy/db:",
        "/deploy/db:1a",  # a label cannot start with a digit: neither version nor label
        "/deploy/db:aws-live",  # nor with aws or ssm
        "/deploy/db:SSMx",
        "/deploy/db:3:4",
        "/deploy/db:" + "l" * 101,
        "arn:aws:ssm:eu-west-1:12345:parameter/db",
        "arn:aws:s3:::bucket/db",
        "arn:aws:ssm:eu-west-1:210987654321:document/db",
    ],
)
def test_malformed_parameter_references_are_refused(parameter: str) -> None:
    problems = problems_of({"SECRETS": f"DB={parameter}"})
    assert "not a Parameter Store name" in problems["SECRETS"][0]


@pytest.mark.parametrize("name", ["COMMANDS", "HEALTHCHECK_COMMANDS", "ROLLBACK_COMMANDS"])
@pytest.mark.parametrize("control", ["\x0c", "\x0b"])
def test_form_feed_and_vertical_tab_are_accepted_in_shell_scripts(name: str, control: str) -> None:
    script = f"echo a\n{control}\necho b{control}c"
    settings = load({name: script})
    assert getattr(settings, name.lower()) == script


def test_form_feed_is_still_refused_outside_scripts() -> None:
    assert "control character" in problems_of({"ENVIRONMENT": "prod\x0c"})["ENVIRONMENT"][0]


@pytest.mark.parametrize("key", ["环境", "Café", "Ümgebung", "Name tag", "a_b.c:d/e-f@g", "Ωmega2"])
def test_unicode_tag_keys_are_accepted(key: str) -> None:
    assert load({"INSTANCE_IDS": None, "TARGETS": f"tag:{key}=x"}).targets == [Target(f"tag:{key}", ("x",))]


@pytest.mark.parametrize(("key", "reason"), [("a+b", "'+'"), ("a#b", "'#'"), ("k" * 129, "1 to 128")])
def test_tag_keys_ssm_cannot_target_are_refused_with_the_reason(key: str, reason: str) -> None:
    problems = problems_of({"INSTANCE_IDS": None, "TARGETS": f"tag:{key}=x"})
    assert reason in problems["TARGETS"][0]


def test_semicolon_separated_instance_ids_are_accepted() -> None:
    assert load({"INSTANCE_IDS": f"{ID_A};{ID_B}; {ID_SHORT}"}).instance_ids == [ID_A, ID_B, ID_SHORT]


def test_hybrid_nodes_in_targets_are_accepted() -> None:
    hybrid = "mi-0123456789abcdef0"
    targets = load({"INSTANCE_IDS": None, "TARGETS": f"InstanceIds={hybrid},{ID_A}"}).targets
    assert targets == [Target("InstanceIds", (hybrid, ID_A))]


def test_a_value_equal_to_its_declared_default_counts_as_unset() -> None:
    """Bitbucket may pass pipe.yml's defaults for variables the step does not set."""
    settings = load({"HEALTHCHECK_RETRIES": "3", "HEALTHCHECK_INTERVAL": "5", "HEALTHCHECK_TIMEOUT": "300"})
    assert settings.healthcheck_retries == 3
    assert "HEALTHCHECK_RETRIES" in problems_of({"HEALTHCHECK_RETRIES": "4"})


# --- YAML lists: NAME_COUNT / NAME_0..n (issue 9, item 15) ---------------------------------------


def as_list(name: str, items: list[str]) -> dict[str, str]:
    return {f"{name}_COUNT": str(len(items)), **{f"{name}_{i}": item for i, item in enumerate(items)}}


def test_every_list_form_the_table_declares_is_read() -> None:
    read: dict[str, tuple[dict[str, str | None], dict[str, str], Callable[[DeploySettings], object], object]] = {
        "INSTANCE_IDS": ({"INSTANCE_IDS": None}, as_list("INSTANCE_IDS", [ID_A, f" {ID_B} "]), _ids, [ID_A, ID_B]),
        "TARGETS": (
            {"INSTANCE_IDS": None},
            as_list("TARGETS", ["tag:Service=api", "tag:Env=prod,stg"]),
            _target_pairs,
            [("tag:Service", ("api",)), ("tag:Env", ("prod", "stg"))],
        ),
        "COMMANDS": (
            {"COMMANDS": None},
            as_list("COMMANDS", ["cd /srv", "./deploy.sh"]),
            _commands,
            "cd /srv\n./deploy.sh",
        ),
        "SECRETS": (
            {},
            as_list("SECRETS", ["DB=/deploy/db", "API=/deploy/api:2"]),
            _secrets,
            [
                SecretRef("DB", "/deploy/db"),
                SecretRef("API", "/deploy/api:2"),
            ],
        ),
        "VARIABLES": (
            {},
            as_list("VARIABLES", ["JDBC=jdbc:sqlserver://db:1433;databaseName=app", "# note", "B=x=y"]),
            _variables,
            [
                ("JDBC", "jdbc:sqlserver://db:1433;databaseName=app"),
                ("B", "x=y"),
            ],
        ),
        "HEALTHCHECK_COMMANDS": (
            {},
            as_list("HEALTHCHECK_COMMANDS", ["curl -f localhost", "exit 3"]),
            _healthcheck,
            "curl -f localhost\nexit 3",
        ),
        "ROLLBACK_COMMANDS": ({}, as_list("ROLLBACK_COMMANDS", ["./rollback.sh"]), _rollback, "./rollback.sh"),
        "TARGET_GROUPS": (
            {},
            as_list("TARGET_GROUPS", ["web-a", " web-b "]),
            lambda s: s.rollout.target_groups,
            TargetGroupChoice(refs=("web-a", "web-b")),
        ),
        "AUTO_SCALING_GROUPS": (
            {},
            as_list("AUTO_SCALING_GROUPS", ["web a", " web-b "]),
            lambda s: s.rollout.auto_scaling_groups,
            AutoScalingChoice(names=("web a", "web-b")),
        ),
        "ALARMS": (
            {},
            as_list("ALARMS", ["web 5xx rate", "p99"]),
            lambda s: s.rollout.alarms,
            ("web 5xx rate", "p99"),
        ),
        "SHARED_PATHS": (
            RELEASE_MODE,
            as_list("SHARED_PATHS", [".env", "logs/"]),
            lambda s: _release(s).shared_paths,
            (".env", "logs/"),
        ),
        "ACTIVATE_COMMANDS": (
            RELEASE_MODE,
            as_list("ACTIVATE_COMMANDS", ["pm2 reload app", "pm2 save"]),
            lambda s: _release(s).activate_commands,
            "pm2 reload app\npm2 save",
        ),
    }
    assert set(read) == set(LIST_FORMS)
    for name, (overrides, env, value, expected) in read.items():
        assert value(load(overrides, {**BITBUCKET_ENV, **env})) == expected, name


def test_a_failing_health_check_given_as_a_list_is_not_dropped() -> None:
    """It once never ran, and the step was green."""
    settings = load({}, {**BITBUCKET_ENV, **as_list("HEALTHCHECK_COMMANDS", ["curl -fsS localhost/health"])})
    assert settings.healthcheck_commands == "curl -fsS localhost/health"


def test_list_items_expand_the_environment() -> None:
    env = {**BITBUCKET_ENV, **as_list("SECRETS", ["DB=/deploy/{environment}/db"])}
    assert load({}, env).secrets == [SecretRef("DB", "/deploy/production/db")]


@pytest.mark.parametrize("name", sorted(set(VARIABLE_NAMES) - set(LIST_FORMS)))
def test_a_list_where_one_value_is_expected_is_refused_by_name(name: str) -> None:
    problems = problems_of({}, {**BITBUCKET_ENV, **as_list(name, ["x", "y"])})
    assert name in problems
    assert any(f"{name}_COUNT" in reason and "not a list" in reason for reason in problems[name])


def test_a_list_given_with_instance_ids_is_both() -> None:
    env = {**BITBUCKET_ENV, **as_list("TARGETS", ["tag:Service=api"])}
    assert "not both" in problems_of({}, env)["TARGETS"][0]


def test_broken_lists_and_bad_items_are_named() -> None:
    assert (
        "COMMANDS_1 is missing"
        in problems_of({}, {**BITBUCKET_ENV, "COMMANDS_COUNT": "2", "COMMANDS_0": "x"})["COMMANDS"][0]
    )
    unprintable = problems_of({}, {**BITBUCKET_ENV, **as_list("VARIABLES", ["A=1", "B=\x01"])})["VARIABLES"][0]
    assert unprintable.startswith("VARIABLES_1 contains the control character")
    assert "has no '='" in problems_of({}, {**BITBUCKET_ENV, **as_list("SECRETS", ["DB /x"])})["SECRETS"][0]


# --- no input gives a traceback (issue 9, item 16) -----------------------------------------------


def test_deeply_nested_document_parameters_are_refused_by_name() -> None:
    nested = '{"a": ' * 2000 + '"x"' + "}" * 2000
    problems = problems_of({"DOCUMENT_NAME": "Custom-Deploy", "COMMANDS": None, "DOCUMENT_PARAMETERS": nested})
    assert set(problems) == {"DOCUMENT_PARAMETERS"}
    assert "nests too deeply" in problems["DOCUMENT_PARAMETERS"][0]


def test_a_script_that_is_a_symlink_loop_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "a.sh").symlink_to(tmp_path / "b.sh")
    (tmp_path / "b.sh").symlink_to(tmp_path / "a.sh")
    problems = problems_of(
        {"COMMANDS": None, "SCRIPT": "a.sh"}, {**BITBUCKET_ENV, "BITBUCKET_CLONE_DIR": str(tmp_path)}
    )
    assert set(problems) == {"SCRIPT"}
    assert "symlink loop" in problems["SCRIPT"][0]


@pytest.mark.parametrize("name", ["s" * 256 + ".sh", "dir/" + "d" * 300 + "/x.sh"])
def test_a_script_name_too_long_is_refused_by_name(tmp_path: Path, name: str) -> None:
    problems = problems_of({"COMMANDS": None, "SCRIPT": name}, {**BITBUCKET_ENV, "BITBUCKET_CLONE_DIR": str(tmp_path)})
    assert set(problems) == {"SCRIPT"}
    assert "cannot be read" in problems["SCRIPT"][0] or "not a file" in problems["SCRIPT"][0]


# --- messages quote values cut (issue 9, item 23) -------------------------------------------------


def test_a_huge_value_is_quoted_cut_with_its_length() -> None:
    reason = problems_of({"AWS_DEFAULT_REGION": "x" * 120_000})["AWS_DEFAULT_REGION"][0]
    assert len(reason) < 300
    assert "…" in reason and "120,000 characters" in reason


def test_thousands_of_bad_ids_are_listed_a_few_at_a_time() -> None:
    reason = problems_of({"INSTANCE_IDS": " ".join(f"i-bad{n}" for n in range(6000))})["INSTANCE_IDS"][0]
    assert reason.count("'i-bad") == SHOWN_ITEMS
    assert "and 5,990 more" in reason
    assert len(reason) < 500


@pytest.mark.parametrize(
    "overrides",
    [
        {"SECRETS": "DB=/" + "a" * 50_000},
        {"INSTANCE_IDS": None, "TARGETS": "tag:K=v;" * 3 + "bad" * 40_000},
        {"DOCUMENT_NAME": "d" * 50_000},
        {"CLOUDWATCH_LOG_GROUP": "bad group " * 10_000},
        {"EXECUTION_TIMEOUT": "x" * 50_000},
        {"VARIABLES": "x" * 50_000},
    ],
)
def test_no_reason_quotes_a_value_in_full(overrides: dict[str, str | None]) -> None:
    for reasons in problems_of(overrides).values():
        assert all(len(reason) <= 600 for reason in reasons), reasons


# --- dependencies point one way ----------------------------------------------------------------------


def test_validation_imports_neither_step_nor_the_reports() -> None:
    """config/ is pure: the script-size check is passed in, not imported (once settings <-> script)."""
    config = Path(__file__).resolve().parents[3] / "pipe" / "config"
    for path in config.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(
                    ("pipe.plan", "pipe.apply", "pipe.report", "pipe.deploy", "pipe.aws")
                ), f"{path.name} imports {node.module}"


def test_a_bad_environment_is_not_replaced_by_the_deployments() -> None:
    problems = problems_of({"ENVIRONMENT": ":", "COMMENT": "release {environment}"})
    assert set(problems) == {"ENVIRONMENT", "COMMENT"}
    assert "no environment is known" in problems["COMMENT"][0]


def test_verify_processes_is_on_by_default_and_false_turns_it_off() -> None:
    assert _release(load(RELEASE_MODE)).verify_processes is True
    assert _release(load({**RELEASE_MODE, "VERIFY_PROCESSES": "false"})).verify_processes is False
    assert "VERIFY_PROCESSES" in problems_of({**RELEASE_MODE, "VERIFY_PROCESSES": "sometimes"})


def test_verify_processes_outside_release_mode_is_refused() -> None:
    assert problems_of({"VERIFY_PROCESSES": "false"})["VERIFY_PROCESSES"] == [
        "is only used in release mode: set ARTIFACT (or RELEASE) too, or remove this"
    ]


# --- ACTION: status ------------------------------------------------------------------------------------

STATUS = {"ACTION": "status", "APP_DIR": "/srv/web-api", "COMMANDS": None}


def test_status_needs_no_commands_and_reads_the_app_dir_the_bucket_and_the_service() -> None:
    settings = load({**STATUS, "ARTIFACT_BUCKET": "acme-artifacts", "SERVICE": "web-api"})

    assert (settings.action, settings.environment, settings.service) == ("status", "production", "web-api")
    assert settings.status is not None
    assert (settings.status.app_dir, settings.status.bucket, settings.status.prefix) == (
        "/srv/web-api",
        "acme-artifacts",
        "app/",
    )
    assert settings.ignored == ()
    assert load().action == "deploy" and load().status is None


def test_status_ignores_what_only_a_deploy_uses_and_names_it() -> None:
    deploy_only = {
        "COMMANDS": "./deploy.sh",
        "SCRIPT": "missing.sh",  # neither read nor refused: status sends no script
        "ARTIFACT": "web-api.tgz",
        "RELEASE": "not a release id",
        "TARGET_GROUPS": "auto",
        "LOCK": "true",
        "DRY_RUN": "true",
        "WAIT": "false",
        "DOCUMENT_NAME": "Acme-Deploy",
    }
    settings = load({**STATUS, **deploy_only})

    assert set(settings.ignored) == set(deploy_only)
    assert (settings.commands, settings.dry_run, settings.wait, settings.release) == ("", False, True, None)
    assert (settings.rollout.lock, settings.rollout.target_groups, settings.document_name) == (
        False,
        None,
        "AWS-RunShellScript",
    )


def test_status_needs_the_app_dir_the_environment_and_the_instances() -> None:
    problems = problems_of({**STATUS, "APP_DIR": None, "INSTANCE_IDS": None}, env={})

    assert "is required with ACTION: status" in problems["APP_DIR"][0]
    assert "is needed with ACTION: status" in problems["ENVIRONMENT"][0]
    assert "is required" in problems["INSTANCE_IDS"][0]
    assert "COMMANDS" not in problems


def test_an_unknown_action_is_refused_naming_the_ones_there_are() -> None:
    assert problems_of({"ACTION": "rollback"})["ACTION"] == ["must be one of deploy, status, got 'rollback'"]


def test_stage_first_is_on_by_default_and_false_turns_staging_off() -> None:
    assert _release(load(RELEASE_MODE)).stage_first is True
    assert _release(load({**RELEASE_MODE, "STAGE_FIRST": "false"})).stage_first is False
    assert "is only used in release mode" in problems_of({"STAGE_FIRST": "false"})["STAGE_FIRST"][0]


def test_rollback_batch_size_takes_max_a_count_or_a_percentage_in_a_rollout_the_pipe_drives() -> None:
    driven = {"BATCH_SIZE": "25%"}
    assert load(driven).rollout.rollback_batch_size is None
    assert load({**driven, "ROLLBACK_BATCH_SIZE": "MAX"}).rollout.rollback_batch_size == "max"
    assert load({**driven, "ROLLBACK_BATCH_SIZE": "50%"}).rollout.rollback_batch_size == "50%"
    assert load({**driven, "ROLLBACK_BATCH_SIZE": "3"}).rollout.rollback_batch_size == "3"
    assert "must be" in problems_of({**driven, "ROLLBACK_BATCH_SIZE": "all"})["ROLLBACK_BATCH_SIZE"][0]
    (alone,) = problems_of({"ROLLBACK_BATCH_SIZE": "max"})["ROLLBACK_BATCH_SIZE"]
    assert "when the pipe rolls out batch by batch" in alone and "TARGET_GROUPS" in alone
