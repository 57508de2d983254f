"""Turn the pipe's variables into DeploySettings, collecting every problem by variable name.

Three stages, as the table in ``variables.py`` declares them: every value's encoding and control
characters (a refusal there stops here), then each variable's own parser, then the ``rules``
between variables. Every problem of a stage is reported at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipe.config import rules
from pipe.config.actions import DEPLOY, STATUS
from pipe.config.build_context import BuildContext, clone_dir
from pipe.config.documents import SHELL
from pipe.config.parsers import expand_environment, parse_bool, yaml_list
from pipe.config.release import default_name
from pipe.config.rollout import RolloutSettings
from pipe.config.variables import (
    ACCESS_KEY_ID,
    ACTION,
    ACTIVATE_COMMANDS,
    AGENT_LOST_TIMEOUT,
    ALARMS,
    APP_DIR,
    ARTIFACT,
    ARTIFACT_BUCKET,
    ARTIFACT_PREFIX,
    AUTO_SCALING_GROUPS,
    BAKE_TIME,
    BATCH_SIZE,
    CANARY,
    CLOUDWATCH_LOG_GROUP,
    CODE_INSIGHTS,
    COMMANDS,
    COMMENT,
    DEBUG,
    DELIVERY_TIMEOUT,
    DOCUMENT_NAME,
    DOCUMENT_PARAMETERS,
    DOCUMENT_VERSION,
    DRAIN_TIMEOUT,
    DRY_RUN,
    ENVIRONMENT,
    EXECUTION_TIMEOUT,
    EXTERNAL_ID,
    HEALTHCHECK_COMMANDS,
    HEALTHCHECK_INTERVAL,
    HEALTHCHECK_RETRIES,
    HEALTHCHECK_TIMEOUT,
    HEALTHY_TIMEOUT,
    INSTANCE_IDS,
    KEEP_RELEASES,
    MAX_CONCURRENCY,
    MAX_ERRORS,
    MIN_HEALTHY,
    OIDC_ROLE_ARN,
    OUTPUT_S3_BUCKET,
    OUTPUT_S3_PREFIX,
    PARAMETERS_PATH,
    REGION,
    RELEASE,
    RESULT_FILE,
    ROLE_ARN,
    ROLLBACK_BATCH_SIZE,
    ROLLBACK_COMMANDS,
    RUN_AS,
    SCRIPT,
    SECRET_ACCESS_KEY,
    SECRETS,
    SERVICE,
    SESSION_TOKEN,
    SHARED_PATHS,
    SKIP_STOPPED,
    STAGE_FIRST,
    STREAM_OUTPUT,
    TABLE,
    TARGET_GROUPS,
    TARGETS,
    VARIABLES,
    VERIFY_PROCESSES,
    WAIT,
    WORKING_DIRECTORY,
    Context,
    Expand,
    Given,
    Values,
    Variable,
)
from pipe.errors import ValidationFailed
from pipe.model import SecretRef, Target

MAX_REASON = 600  # characters of one reason: a value quoted by a message we did not cut stays readable

ScriptSize = Callable[["DeploySettings"], str | None]  # why the script made of the settings is too big


@dataclass(frozen=True)
class StaticKeys:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # never show the secret key, not even in a debugger dump
        return f"StaticKeys(access_key_id={self.access_key_id!r}, secret_access_key='****')"


@dataclass(frozen=True)
class ReleaseSettings:
    """Release mode: ship ARTIFACT (or go back to RELEASE) into APP_DIR/releases and switch current."""

    bucket: str
    prefix: str
    app_dir: str
    artifact: str | None = None  # the build to ship, or
    release: str | None = None  # "previous" or a release id from the ledger
    run_as: str | None = None
    shared_paths: tuple[str, ...] = ()
    activate_commands: str = ""
    keep_releases: int = int(KEEP_RELEASES.default)
    verify_processes: bool = True
    stage_first: bool = True  # STAGE_FIRST: staged on every instance before the first batch (a rollout the pipe drives)


@dataclass(frozen=True)
class StatusSettings:
    """ACTION: status: where ``current`` is read, and the release bucket whose archive holds the
    ledger's versions past Parameter Store's 100 (None: Parameter Store's only)."""

    app_dir: str
    bucket: str | None = None
    prefix: str = ""


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
    # the defaults are the table's (variables.py), for settings built without load_settings
    stream_output: bool = parse_bool(STREAM_OUTPUT.default)
    log_group: str = CLOUDWATCH_LOG_GROUP.default
    agent_lost_timeout: int = int(AGENT_LOST_TIMEOUT.default)
    dry_run: bool = parse_bool(DRY_RUN.default)
    skip_stopped: bool = parse_bool(SKIP_STOPPED.default)  # TARGETS: deploy to the running ones, name the stopped
    code_insights: bool = parse_bool(CODE_INSIGHTS.default)  # a Code Insights report on the commit at the end
    wait: bool = parse_bool(WAIT.default)
    healthcheck_commands: str = ""
    healthcheck_retries: int = int(HEALTHCHECK_RETRIES.default)
    healthcheck_interval: int = int(HEALTHCHECK_INTERVAL.default)
    healthcheck_timeout: int = int(HEALTHCHECK_TIMEOUT.default)
    rollback_commands: str = ""
    parameters_path: str | None = None
    document_name: str = SHELL
    document_version: str | None = None
    document_parameters: dict[str, list[str]] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    max_concurrency: str = MAX_CONCURRENCY.default
    max_errors: str = MAX_ERRORS.default
    result_file: str = ""
    output_s3_bucket: str | None = None
    output_s3_prefix: str = ""
    release: ReleaseSettings | None = None  # set in release mode (ARTIFACT or RELEASE)
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    service: str = "app"  # the release ledger's and the deploy lock's name for it (SERVICE, or the repository's slug)
    action: str = DEPLOY  # ACTION: which entry point runs (pipe/actions)
    status: StatusSettings | None = None  # set with ACTION: status
    ignored: tuple[str, ...] = ()  # variables given that the action does not use (status: the deploy's)


class Problems:
    """Reasons by variable name, in the order found."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[str]] = {}

    def add(self, name: str, reason: str) -> None:
        if len(reason) > MAX_REASON:
            reason = reason[: MAX_REASON - 200] + " … " + reason[-150:]
        self.by_name.setdefault(name, []).append(reason)

    def raise_any(self) -> None:
        if self.by_name:
            raise ValidationFailed(self.by_name)


def load_settings(
    variables: Mapping[str, str | None], env: Mapping[str, str], script_size: ScriptSize | None = None
) -> DeploySettings:
    """Settings from toolkit-validated ``variables``; ``env`` is the raw process environment (YAML lists,
    Bitbucket's build variables). ``script_size`` judges the script the settings make (the renderer
    lives in pipe.plan.script: validation does not import it), reported with every other problem."""
    problems = Problems()
    given = read_given(variables, env)
    for name, reason in unprintable(given):
        problems.add(name, reason)
    problems.raise_any()

    context = Context(BuildContext.from_env(env), clone_dir(env))
    values = parse_all(given, context, problems)
    for name, reason in rules.check(values):
        problems.add(name, reason)
    settings = build_settings(values, context)
    too_big = script_size(settings) if script_size else None
    if too_big:  # judged with the rest, so a script too big is reported together with any other problem
        problems.add(SCRIPT.name if values.is_set(SCRIPT) else COMMANDS.name, too_big)
    problems.raise_any()
    return settings


def read_given(variables: Mapping[str, str | None], env: Mapping[str, str]) -> dict[str, Given]:
    given: dict[str, Given] = {}
    for variable in TABLE:
        text = variables.get(variable.name)
        items: list[str] | None = None
        error = ""
        try:
            items = yaml_list(env, variable.name)
        except ValueError as broken:
            error = str(broken)
        given[variable.name] = Given(text, items, error)
    return given


def unprintable(given: Mapping[str, Given]) -> list[tuple[str, str]]:
    """Values that are not UTF-8 text or hold a control character the variable does not allow."""
    found: list[tuple[str, str]] = []
    for variable in TABLE:
        value = given[variable.name]
        parts = [("", value.text)] + [(f"{variable.name}_{i} ", item) for i, item in enumerate(value.items or [])]
        for label, text in parts:
            reason = _unprintable(text, variable) if text is not None else None
            if reason:
                found.append((variable.name, label + reason))
    return found


def _unprintable(value: str, variable: Variable[Any]) -> str | None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8: check the variable's encoding"
    control = variable.forbidden_controls.search(value)
    if control:
        return f"contains the control character {control.group()!r} at position {control.start()}: remove it"
    return None


def parse_all(given: Mapping[str, Given], context: Context, problems: Problems) -> Values:
    """Each variable's parser; a refused one gets its fallback. ENVIRONMENT first: the others use it;
    then ACTION: what the action does not use is ignored, neither parsed nor checked."""
    values = Values(dict(given))
    environment = _parse_one(values, ENVIRONMENT, None, context, problems)
    if not values.ok(ENVIRONMENT):  # not the deployment's instead: what uses {environment} is refused too
        environment = None
        values.set(ENVIRONMENT, None)
    _parse_one(values, ACTION, environment, context, problems)
    values.ignore(rules.not_for_status(values))
    for variable in TABLE:
        if variable not in (ENVIRONMENT, ACTION):
            _parse_one(values, variable, environment, context, problems)
    return values


def _parse_one(
    values: Values, variable: Variable[Any], environment: str | None, context: Context, problems: Problems
) -> Any:
    try:
        value = _parsed(variable, values.given[variable.name], environment, context)
    except ValueError as error:
        problems.add(variable.name, str(error))
        values.refused.add(variable.name)
        value = _fallback(variable, context)
    values.set(variable, value)
    return value


def _parsed(variable: Variable[Any], given: Given, environment: str | None, context: Context) -> Any:
    if given.as_list:
        if variable.parse_items is None:
            name = variable.name
            raise ValueError(f"is given as a YAML list ({name}_COUNT, {name}_0, ...): give it one value, not a list")
        if given.list_error:
            raise ValueError(given.list_error)
        items = [_expanded(variable, item, environment) for item in given.items or []]
        return variable.parse_items(items, context)
    text = given.text or ""
    text = (text.strip("\n") if variable.script else text.strip()) if text.strip() else ""
    return variable.parse(_expanded(variable, text or variable.default, environment), context)


def _expanded(variable: Variable[Any], text: str, environment: str | None) -> str:
    if variable.expand is Expand.NO:
        return text
    others = "refuse" if variable.expand is Expand.STRICT else "keep"
    return expand_environment(text, environment, others=others)


def _fallback(variable: Variable[Any], context: Context) -> Any:
    try:
        return variable.parse(variable.default, context)
    except ValueError:
        return variable.fallback


def build_settings(values: Values, context: Context) -> DeploySettings:
    return DeploySettings(
        region=values[REGION],
        environment=values[ENVIRONMENT],
        static_keys=_static_keys(values),
        oidc_role_arn=values[OIDC_ROLE_ARN],
        role_arn=values[ROLE_ARN],
        external_id=values[EXTERNAL_ID],
        instance_ids=[] if values.is_set(TARGETS) else values[INSTANCE_IDS],
        commands=(values[SCRIPT] or "") if values.is_set(SCRIPT) else values[COMMANDS],
        working_directory=values[WORKING_DIRECTORY],
        execution_timeout=values[EXECUTION_TIMEOUT],
        delivery_timeout=values[DELIVERY_TIMEOUT],
        comment=values[COMMENT],
        secrets=values[SECRETS],
        variables=values[VARIABLES],
        debug=values[DEBUG],
        build=context.build,
        stream_output=values[STREAM_OUTPUT],
        log_group=values[CLOUDWATCH_LOG_GROUP],
        agent_lost_timeout=values[AGENT_LOST_TIMEOUT],
        dry_run=values[DRY_RUN],
        skip_stopped=values[SKIP_STOPPED],
        code_insights=values[CODE_INSIGHTS],
        wait=values[WAIT],
        healthcheck_commands=values[HEALTHCHECK_COMMANDS],
        healthcheck_retries=values[HEALTHCHECK_RETRIES],
        healthcheck_interval=values[HEALTHCHECK_INTERVAL],
        healthcheck_timeout=values[HEALTHCHECK_TIMEOUT],
        rollback_commands=values[ROLLBACK_COMMANDS],
        parameters_path=values[PARAMETERS_PATH],
        document_name=values[DOCUMENT_NAME],
        document_version=values[DOCUMENT_VERSION],
        document_parameters=values[DOCUMENT_PARAMETERS],
        targets=values[TARGETS],
        max_concurrency=values[MAX_CONCURRENCY],
        max_errors=values[MAX_ERRORS],
        result_file=values[RESULT_FILE],
        output_s3_bucket=values[OUTPUT_S3_BUCKET],
        output_s3_prefix=values[OUTPUT_S3_PREFIX],
        release=_release(values, context.build),
        rollout=_rollout(values),
        service=values[SERVICE] or default_name(context.build.repo),
        action=values[ACTION],
        status=_status(values, context.build),
        ignored=values.ignored,
    )


def _status(values: Values, build: BuildContext) -> StatusSettings | None:
    if values[ACTION] != STATUS:
        return None
    return StatusSettings(
        app_dir=values[APP_DIR] or "",
        bucket=values[ARTIFACT_BUCKET],
        prefix=values[ARTIFACT_PREFIX] or default_name(build.repo) + "/",
    )


def _rollout(values: Values) -> RolloutSettings:
    return RolloutSettings(
        target_groups=values[TARGET_GROUPS],
        auto_scaling_groups=values[AUTO_SCALING_GROUPS],
        batch_size=values[BATCH_SIZE],
        rollback_batch_size=values[ROLLBACK_BATCH_SIZE],
        canary=values[CANARY],
        min_healthy=values[MIN_HEALTHY],
        drain_timeout=values[DRAIN_TIMEOUT],
        healthy_timeout=values[HEALTHY_TIMEOUT],
        bake_time=values[BAKE_TIME],
        alarms=values[ALARMS],
        lock=rules.lock_is_on(values),
        ignored=rules.ignored_without_a_load_balancer(values),
    )


def _release(values: Values, build: BuildContext) -> ReleaseSettings | None:
    if not (values.is_set(ARTIFACT) or values.is_set(RELEASE)):
        return None
    return ReleaseSettings(
        bucket=values[ARTIFACT_BUCKET] or "",
        prefix=values[ARTIFACT_PREFIX] or default_name(build.repo) + "/",
        app_dir=values[APP_DIR] or "",
        artifact=values[ARTIFACT],
        release=values[RELEASE],
        run_as=values[RUN_AS],
        shared_paths=values[SHARED_PATHS],
        activate_commands=values[ACTIVATE_COMMANDS],
        keep_releases=values[KEEP_RELEASES],
        verify_processes=values[VERIFY_PROCESSES],
        stage_first=values[STAGE_FIRST],
    )


def _static_keys(values: Values) -> StaticKeys | None:
    key_id, secret = values[ACCESS_KEY_ID], values[SECRET_ACCESS_KEY]
    if key_id and secret and values.ok(ACCESS_KEY_ID) and values.ok(SECRET_ACCESS_KEY):
        return StaticKeys(key_id, secret, values[SESSION_TOKEN])
    return None
