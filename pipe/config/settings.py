"""Turn validated pipe variables into DeploySettings, collecting every problem by variable name."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pipe.config.build_context import COMMENT_LIMIT, BuildContext, cut
from pipe.config.documents import (
    DOCUMENT_NAME,
    DOCUMENT_VERSION,
    POWERSHELL,
    RESERVED_PARAMETERS,
    SCRIPT_DOCUMENTS,
    SHELL,
    parse_document_parameters,
)
from pipe.config.parsers import (
    expand_environment,
    parse_bool,
    parse_int,
    split_pairs,
    split_words,
    yaml_list,
)
from pipe.config.script_file import read_script
from pipe.config.targets import Target, parse_rate, parse_targets
from pipe.errors import ValidationFailed
from pipe.stages.script import script_size_problem

REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$", re.ASCII)
ENVIRONMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$", re.ASCII)
EXTERNAL_ID = re.compile(r"^[\w+=,.@:/-]{2,1224}$", re.ASCII)
ACCESS_KEY_ID = re.compile(r"[A-Z0-9]{16,128}")
SECRET_ACCESS_KEY = re.compile(r"[A-Za-z0-9/+=]{16,128}")
INSTANCE_ID = re.compile(r"^(i-[0-9a-f]{8}|i-[0-9a-f]{17}|mi-[0-9a-f]{17})$")
PARAMETER_NAME = re.compile(r"(/[A-Za-z0-9_.\-]+){1,15}|[A-Za-z0-9_.\-]+")  # AWS allows 15 levels

# C0 controls and DEL; ESC stays allowed (colour codes in echo), and so do C1 characters, which
# are printable text in some encodings' round trips
FORBIDDEN_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]")
EXECUTION_TIMEOUT_RANGE = (1, 172800)  # AWS-RunShellScript executionTimeout
DELIVERY_TIMEOUT_RANGE = (30, 2592000)  # SendCommand TimeoutSeconds
DEFAULT_EXECUTION_TIMEOUT = 3600
DEFAULT_DELIVERY_TIMEOUT = 600
DEFAULT_LOG_GROUP = "/aws/ssm/ssm-deploy"
DEFAULT_AGENT_LOST_TIMEOUT = 120
AGENT_LOST_TIMEOUT_RANGE = (1, 86400)
S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
LOG_GROUP = re.compile(r"^[\w./#-]{1,512}$", re.ASCII)

T = TypeVar("T")


@dataclass(frozen=True)
class SecretRef:
    """An environment variable on the instance whose value comes from a Parameter Store parameter."""

    env_name: str
    parameter: str


@dataclass(frozen=True)
class StaticKeys:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # never show the secret key, not even in a debugger dump
        return f"StaticKeys(access_key_id={self.access_key_id!r}, secret_access_key='****')"


@dataclass(frozen=True)
class DeploySettings:
    region: str
    environment: str | None
    static_keys: StaticKeys | None
    oidc_role_arn: str | None
    role_arn: str | None
    external_id: str | None
    instance_ids: list[str]
    commands: str
    working_directory: str | None
    execution_timeout: int
    delivery_timeout: int
    comment: str
    secrets: list[SecretRef]
    variables: list[tuple[str, str]]
    debug: bool
    build: BuildContext
    stream_output: bool = True
    log_group: str = DEFAULT_LOG_GROUP
    agent_lost_timeout: int = DEFAULT_AGENT_LOST_TIMEOUT
    dry_run: bool = False
    wait: bool = True
    healthcheck_commands: str = ""
    healthcheck_retries: int = 3
    healthcheck_interval: int = 5
    healthcheck_timeout: int = 300
    rollback_commands: str = ""
    parameters_path: str | None = None
    document_name: str = SHELL
    document_version: str | None = None
    document_parameters: dict[str, list[str]] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    max_concurrency: str = "50"
    max_errors: str = "0"
    result_file: str = ""
    output_s3_bucket: str | None = None
    output_s3_prefix: str = ""


class _Collector:
    """Runs each check and records its ValueError under the variable's name."""

    def __init__(self) -> None:
        self.problems: dict[str, list[str]] = {}

    def add(self, name: str, reason: str) -> None:
        self.problems.setdefault(name, []).append(reason)

    def check(self, name: str, parse: Callable[[], T], fallback: T) -> T:
        try:
            return parse()
        except ValueError as error:
            self.add(name, str(error))
            return fallback


def load_settings(variables: Mapping[str, str | None], env: Mapping[str, str]) -> DeploySettings:
    """Build settings from toolkit-validated ``variables``; ``env`` is the raw process environment."""
    problems = _Collector()

    def text(name: str) -> str | None:
        value = variables.get(name)
        if value is None:
            return None
        stripped = value.strip()
        return stripped or None

    for name, value in variables.items():
        if value is None:
            continue
        reason = _unprintable(value)
        if reason:
            problems.add(name, reason)
    if problems.problems:
        raise ValidationFailed(problems.problems)

    build = BuildContext.from_env(env)
    region = text("AWS_DEFAULT_REGION") or ""
    if not REGION.fullmatch(region):
        problems.add("AWS_DEFAULT_REGION", f"must be an AWS region such as eu-west-1, got {region!r}")

    environment = text("ENVIRONMENT") or build.deployment_environment or None
    if environment is not None and not ENVIRONMENT.fullmatch(environment):
        problems.add(
            "ENVIRONMENT",
            f"must be letters, digits, '.', '_' or '-' (at most 63), got {environment!r}",
        )
        environment = None

    def expanded(name: str) -> str | None:
        value = text(name)
        if value is None:
            return None
        return problems.check(name, lambda: expand_environment(value, environment), None)

    static_keys = _static_keys(text, problems)
    oidc_role_arn = _arn(problems, "AWS_OIDC_ROLE_ARN", expanded("AWS_OIDC_ROLE_ARN"))
    role_arn = _arn(problems, "ROLE_ARN", expanded("ROLE_ARN"))
    external_id = text("EXTERNAL_ID")
    if external_id is not None and not EXTERNAL_ID.fullmatch(external_id):
        problems.add("EXTERNAL_ID", "must be 2 to 1224 of the characters A-Z a-z 0-9 + = , . @ : / _ -")
    if external_id is not None and text("ROLE_ARN") is None:
        problems.add("EXTERNAL_ID", "is only used with ROLE_ARN: set ROLE_ARN too or remove EXTERNAL_ID")

    instance_ids: list[str] = []
    targets: list[Target] = []
    targets_text = expanded("TARGETS")
    if targets_text is not None:
        if (variables.get("INSTANCE_IDS") or "").strip() or "INSTANCE_IDS_COUNT" in env:
            problems.add("TARGETS", "give INSTANCE_IDS or TARGETS, not both")
        targets = problems.check("TARGETS", lambda: parse_targets(targets_text), [])
    elif text("TARGETS") is None:
        instance_ids = problems.check("INSTANCE_IDS", lambda: _instance_ids(variables, env), [])
    max_concurrency = problems.check(
        "MAX_CONCURRENCY", lambda: parse_rate(text("MAX_CONCURRENCY"), minimum=1, default="50"), "50"
    )
    max_errors = problems.check("MAX_ERRORS", lambda: parse_rate(text("MAX_ERRORS"), minimum=0, default="0"), "0")
    document_name = text("DOCUMENT_NAME") or SHELL
    if not DOCUMENT_NAME.fullmatch(document_name):
        problems.add("DOCUMENT_NAME", f"must be an SSM document name or ARN, got {document_name!r}")
        document_name = SHELL  # judge the other variables as for the default document
    document_version = text("DOCUMENT_VERSION")
    if document_version is not None and not DOCUMENT_VERSION.fullmatch(document_version):
        problems.add("DOCUMENT_VERSION", f"must be $DEFAULT, $LATEST or a version number, got {document_version!r}")
    parameters_text = text("DOCUMENT_PARAMETERS")
    document_parameters: dict[str, list[str]] = {}
    if parameters_text is not None:
        document_parameters = problems.check(
            "DOCUMENT_PARAMETERS", lambda: parse_document_parameters(parameters_text), {}
        )
    script_document = document_name in SCRIPT_DOCUMENTS
    for reserved in RESERVED_PARAMETERS:
        if script_document and reserved in document_parameters:
            problems.add(
                "DOCUMENT_PARAMETERS",
                f"{reserved!r} is set by the pipe (COMMANDS/SCRIPT, EXECUTION_TIMEOUT): remove it",
            )
    if not script_document:
        for name in (
            "COMMANDS",
            "SCRIPT",
            "SECRETS",
            "VARIABLES",
            "PARAMETERS_PATH",
            "WORKING_DIRECTORY",
            "HEALTHCHECK_COMMANDS",
            "ROLLBACK_COMMANDS",
        ):
            if text(name) is not None:
                problems.add(
                    name,
                    f"works only with DOCUMENT_NAME {SHELL} or {POWERSHELL}: with {document_name}, "
                    "pass the document's own parameters in DOCUMENT_PARAMETERS",
                )
    if document_name == POWERSHELL and text("HEALTHCHECK_COMMANDS") is not None:
        problems.add("HEALTHCHECK_COMMANDS", f"is not supported with {POWERSHELL} yet: check health in COMMANDS")
    commands = (variables.get("COMMANDS") or "").strip("\n")
    script_path = text("SCRIPT")
    if script_path is not None:
        if commands.strip():
            problems.add("SCRIPT", "give COMMANDS or SCRIPT, not both")
        clone_dir = env.get("BITBUCKET_CLONE_DIR") or "."
        commands = problems.check("SCRIPT", lambda: read_script(script_path, clone_dir), "").strip("\n")
    elif not commands.strip() and script_document:
        problems.add("COMMANDS", "is empty: give the shell commands to run on the instances (or SCRIPT)")

    execution_timeout = problems.check(
        "EXECUTION_TIMEOUT",
        lambda: parse_int(text("EXECUTION_TIMEOUT"), DEFAULT_EXECUTION_TIMEOUT, *EXECUTION_TIMEOUT_RANGE),
        DEFAULT_EXECUTION_TIMEOUT,
    )
    delivery_timeout = problems.check(
        "DELIVERY_TIMEOUT",
        lambda: parse_int(text("DELIVERY_TIMEOUT"), DEFAULT_DELIVERY_TIMEOUT, *DELIVERY_TIMEOUT_RANGE),
        DEFAULT_DELIVERY_TIMEOUT,
    )
    comment = cut(expanded("COMMENT") or build.default_comment(), COMMENT_LIMIT)
    secrets: list[SecretRef] = problems.check("SECRETS", lambda: _secrets(text("SECRETS"), environment), [])
    plain: list[tuple[str, str]] = problems.check("VARIABLES", lambda: _variables(text("VARIABLES"), environment), [])
    clash = sorted({ref.env_name for ref in secrets} & {name for name, _ in plain})
    if clash:
        problems.add("VARIABLES", f"{', '.join(clash)} also set by SECRETS: give each name once")
    debug = problems.check("DEBUG", lambda: parse_bool(text("DEBUG"), False), False)
    stream_output = problems.check("STREAM_OUTPUT", lambda: parse_bool(text("STREAM_OUTPUT"), True), True)
    dry_run = problems.check("DRY_RUN", lambda: parse_bool(text("DRY_RUN"), False), False)
    parameters_path = expanded("PARAMETERS_PATH")
    if parameters_path is not None:
        parameters_path = "/" + parameters_path.strip("/") + "/"
        if not PARAMETER_NAME.fullmatch(parameters_path.rstrip("/")):
            problems.add(
                "PARAMETERS_PATH", f"must be a Parameter Store path like /deploy/prod/, got {parameters_path!r}"
            )
    healthcheck = (variables.get("HEALTHCHECK_COMMANDS") or "").strip("\n")
    rollback = (variables.get("ROLLBACK_COMMANDS") or "").strip("\n")
    retries = problems.check("HEALTHCHECK_RETRIES", lambda: _count(text("HEALTHCHECK_RETRIES"), 3, 1, 100), 3)
    interval = problems.check("HEALTHCHECK_INTERVAL", lambda: parse_int(text("HEALTHCHECK_INTERVAL"), 5, 0, 3600), 5)
    healthcheck_timeout = problems.check(
        "HEALTHCHECK_TIMEOUT", lambda: parse_int(text("HEALTHCHECK_TIMEOUT"), 300, *EXECUTION_TIMEOUT_RANGE), 300
    )
    for name in ("HEALTHCHECK_RETRIES", "HEALTHCHECK_INTERVAL", "HEALTHCHECK_TIMEOUT"):
        if text(name) is not None and not healthcheck.strip():
            problems.add(name, "is only used with HEALTHCHECK_COMMANDS: set it too or remove this")
    wait = problems.check("WAIT", lambda: parse_bool(text("WAIT"), True), True)
    agent_lost_timeout = problems.check(
        "AGENT_LOST_TIMEOUT",
        lambda: parse_int(text("AGENT_LOST_TIMEOUT"), DEFAULT_AGENT_LOST_TIMEOUT, *AGENT_LOST_TIMEOUT_RANGE),
        DEFAULT_AGENT_LOST_TIMEOUT,
    )
    output_s3_bucket = text("OUTPUT_S3_BUCKET")
    if output_s3_bucket is not None and not S3_BUCKET.fullmatch(output_s3_bucket):
        problems.add("OUTPUT_S3_BUCKET", f"must be an S3 bucket name (3-63 of a-z 0-9 . -), got {output_s3_bucket!r}")
    output_s3_prefix = expanded("OUTPUT_S3_PREFIX") or ""
    if text("OUTPUT_S3_PREFIX") is not None and output_s3_bucket is None:
        problems.add("OUTPUT_S3_PREFIX", "is only used with OUTPUT_S3_BUCKET: set the bucket too")
    log_group = expanded("CLOUDWATCH_LOG_GROUP") or DEFAULT_LOG_GROUP
    if not LOG_GROUP.fullmatch(log_group):
        problems.add(
            "CLOUDWATCH_LOG_GROUP",
            f"must be a log group name (letters, digits, _ - / . #), got {log_group!r}",
        )

    settings = DeploySettings(
        region=region,
        environment=environment,
        static_keys=static_keys,
        oidc_role_arn=oidc_role_arn,
        role_arn=role_arn,
        external_id=external_id,
        instance_ids=instance_ids,
        commands=commands,
        working_directory=text("WORKING_DIRECTORY"),
        execution_timeout=execution_timeout,
        delivery_timeout=delivery_timeout,
        comment=comment,
        secrets=secrets,
        variables=plain,
        debug=debug,
        build=build,
        stream_output=stream_output,
        log_group=log_group,
        agent_lost_timeout=agent_lost_timeout,
        dry_run=dry_run,
        wait=wait,
        healthcheck_commands=healthcheck,
        healthcheck_retries=retries,
        healthcheck_interval=interval,
        healthcheck_timeout=healthcheck_timeout,
        rollback_commands=rollback,
        parameters_path=parameters_path,
        document_name=document_name,
        document_version=document_version,
        document_parameters=document_parameters,
        targets=targets,
        max_concurrency=max_concurrency,
        max_errors=max_errors,
        result_file=text("RESULT_FILE") or default_result_file(env),
        output_s3_bucket=output_s3_bucket,
        output_s3_prefix=output_s3_prefix,
    )
    # judged with the rest, so a script too big is reported together with any other problem
    too_big = script_size_problem(settings)
    if too_big:
        problems.add("SCRIPT" if script_path else "COMMANDS", too_big)
    if problems.problems:
        raise ValidationFailed(problems.problems)
    return settings


def _count(text: str | None, default: int, minimum: int, maximum: int) -> int:
    """Like parse_int, for a count rather than seconds."""
    try:
        return parse_int(text, default, minimum, maximum)
    except ValueError:
        raise ValueError(f"must be a whole number from {minimum} to {maximum}, got {text!r}") from None


def default_result_file(env: Mapping[str, str]) -> str:
    """``ssm-deploy-result.json`` in the clone directory, where later steps can pick it up."""
    return str(Path(env.get("BITBUCKET_CLONE_DIR") or ".") / "ssm-deploy-result.json")


def _unprintable(value: str) -> str | None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8: check the variable's encoding"
    control = FORBIDDEN_CONTROLS.search(value)
    if control:
        return f"contains the control character {control.group()!r} at position {control.start()}: remove it"
    return None


def _static_keys(text: Callable[[str], str | None], problems: _Collector) -> StaticKeys | None:
    key_id, secret = text("AWS_ACCESS_KEY_ID"), text("AWS_SECRET_ACCESS_KEY")
    if key_id and not secret:
        problems.add("AWS_SECRET_ACCESS_KEY", "is missing: it goes with AWS_ACCESS_KEY_ID")
    if secret and not key_id:
        problems.add("AWS_ACCESS_KEY_ID", "is missing: it goes with AWS_SECRET_ACCESS_KEY")
    malformed = False
    if key_id and not ACCESS_KEY_ID.fullmatch(key_id):
        problems.add("AWS_ACCESS_KEY_ID", "must be 16 to 128 capital letters and digits (AKIA...): check for spaces")
        malformed = True
    if secret and not SECRET_ACCESS_KEY.fullmatch(secret):
        # never quote the value: it is a secret
        problems.add("AWS_SECRET_ACCESS_KEY", "must be letters, digits and / + = only: check for spaces or quotes")
        malformed = True
    if key_id and secret and not malformed:
        return StaticKeys(key_id, secret, text("AWS_SESSION_TOKEN"))
    return None


def _arn(problems: _Collector, name: str, value: str | None) -> str | None:
    if value is not None and not ROLE_ARN.fullmatch(value):
        problems.add(name, f"must be an IAM role ARN like arn:aws:iam::123456789012:role/deploy, got {value!r}")
        return None
    return value


def _instance_ids(variables: Mapping[str, str | None], env: Mapping[str, str]) -> list[str]:
    listed = yaml_list(env, "INSTANCE_IDS")
    raw = listed if listed is not None else split_words(variables.get("INSTANCE_IDS") or "")
    ids = [word for item in raw for word in split_words(item)]
    if not ids:
        raise ValueError(
            "is required: give one or more instance ids separated by spaces, commas or newlines "
            "(or TARGETS, e.g. tag:Service=api)"
        )
    bad = [i for i in ids if not INSTANCE_ID.fullmatch(i)]
    if bad:
        raise ValueError(
            f"{', '.join(repr(b) for b in bad)} {'is not an instance id' if len(bad) == 1 else 'are not instance ids'}"
            " (expected i- followed by 8 or 17 hex digits, or mi- and 17 for hybrid nodes)"
        )
    return list(dict.fromkeys(ids))


def _secrets(value: str | None, environment: str | None) -> list[SecretRef]:
    if value is None:
        return []
    refs: list[SecretRef] = []
    for name, parameter in split_pairs(value):
        parameter = expand_environment(parameter, environment)
        if len(parameter) > 2048 or not PARAMETER_NAME.fullmatch(parameter):
            raise ValueError(
                f"{name}: {parameter!r} is not a Parameter Store name (letters, digits and . _ -, in "
                "/-separated levels, e.g. /deploy/prod/db_password)"
            )
        if any(ref.env_name == name for ref in refs):
            raise ValueError(f"{name} is given twice")
        refs.append(SecretRef(name, parameter))
    return refs


def _variables(value: str | None, environment: str | None) -> list[tuple[str, str]]:
    if value is None:
        return []
    pairs = [(name, expand_environment(raw, environment)) for name, raw in split_pairs(value)]
    names = [name for name, _ in pairs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)} given twice")
    return pairs
