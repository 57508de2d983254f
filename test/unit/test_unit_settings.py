"""pipe.settings.load_settings: valid variables become DeploySettings, every problem is named."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from pipe.config.settings import (
    DEFAULT_DELIVERY_TIMEOUT,
    DEFAULT_EXECUTION_TIMEOUT,
    DEFAULT_LOG_GROUP,
    DeploySettings,
    SecretRef,
    StaticKeys,
    load_settings,
)
from pipe.errors import ValidationFailed

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
    return load_settings({**MINIMAL, **(overrides or {})}, env)


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
    assert settings.execution_timeout == DEFAULT_EXECUTION_TIMEOUT == 3600
    assert settings.delivery_timeout == DEFAULT_DELIVERY_TIMEOUT == 600
    assert settings.working_directory is None
    assert settings.secrets == []
    assert settings.variables == []
    assert settings.debug is False
    assert settings.stream_output is True
    assert settings.log_group == DEFAULT_LOG_GROUP == "/aws/ssm/ssm-deploy"
    assert settings.comment == "ssm-deploy local#0"


def test_default_comment_from_build() -> None:
    assert load().comment == "ssm-deploy team/app#42 0123456"


def test_long_comment_is_cut_to_the_sendcommand_limit() -> None:
    comment = load({"COMMENT": "x" * 300}).comment
    assert len(comment) == 100
    assert comment.endswith("…")


def test_blank_optional_variables_count_as_unset() -> None:
    settings = load({"ROLE_ARN": "  ", "EXECUTION_TIMEOUT": "", "DEBUG": " ", "SECRETS": "\n"})
    assert settings.role_arn is None
    assert settings.execution_timeout == DEFAULT_EXECUTION_TIMEOUT
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
    ({"VARIABLES": "TARGET={stage}"}, "VARIABLES", ["unknown placeholder {stage}"]),
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
    ({"COMMENT": "deploy {branch}"}, "COMMENT", ["unknown placeholder {branch}"]),
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
