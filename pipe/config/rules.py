"""Rules between variables, checked after each variable's own parser: each names the variable to fix."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pipe.config.actions import STATUS
from pipe.config.documents import POWERSHELL, RESERVED_PARAMETERS, SCRIPT_DOCUMENTS, SHELL
from pipe.config.parsers import listed
from pipe.config.variables import (
    ACCESS_KEY_ID,
    ACTION,
    ACTIVATE_COMMANDS,
    ALARMS,
    APP_DIR,
    ARTIFACT,
    ARTIFACT_BUCKET,
    ARTIFACT_PREFIX,
    AUTO_SCALING_GROUPS,
    BAKE_TIME,
    BATCH_SIZE,
    CANARY,
    COMMANDS,
    DOCUMENT_NAME,
    DOCUMENT_PARAMETERS,
    DRAIN_TIMEOUT,
    ENVIRONMENT,
    EXTERNAL_ID,
    HEALTHCHECK_COMMANDS,
    HEALTHCHECK_INTERVAL,
    HEALTHCHECK_RETRIES,
    HEALTHCHECK_TIMEOUT,
    HEALTHY_TIMEOUT,
    INSTANCE_IDS,
    KEEP_RELEASES,
    LOCK,
    MIN_HEALTHY,
    OUTPUT_S3_BUCKET,
    OUTPUT_S3_PREFIX,
    PARAMETERS_PATH,
    RELEASE,
    ROLE_ARN,
    ROLLBACK_BATCH_SIZE,
    ROLLBACK_COMMANDS,
    RUN_AS,
    SCRIPT,
    SECRET_ACCESS_KEY,
    SECRETS,
    SERVICE,
    SHARED_PATHS,
    STAGE_FIRST,
    TABLE,
    TARGET_GROUPS,
    TARGETS,
    VARIABLES,
    VERIFY_PROCESSES,
    WAIT,
    WORKING_DIRECTORY,
    Values,
    Variable,
)

Problem = tuple[str, str]  # (variable name, reason)
Rule = Callable[[Values], Iterator[Problem]]
# what only the two script documents take: another document gets DOCUMENT_PARAMETERS only
SCRIPT_ONLY: tuple[Variable[Any], ...] = (
    COMMANDS,
    SCRIPT,
    SECRETS,
    VARIABLES,
    PARAMETERS_PATH,
    WORKING_DIRECTORY,
    HEALTHCHECK_COMMANDS,
    ROLLBACK_COMMANDS,
)


def check(values: Values) -> list[Problem]:
    return [problem for rule in RULES for problem in rule(values)]


def status_action(values: Values) -> bool:
    return values[ACTION] == STATUS


def not_for_status(values: Values) -> tuple[str, ...]:
    """The variables given that ACTION: status does not use: ignored (one step definition serves the
    deploy and a scheduled status), and a line names them."""
    if not status_action(values):
        return ()
    return tuple(variable.name for variable in TABLE if not variable.status and values.is_set(variable))


def static_keys_go_together(values: Values) -> Iterator[Problem]:
    if values.is_set(ACCESS_KEY_ID) and not values.is_set(SECRET_ACCESS_KEY):
        yield SECRET_ACCESS_KEY.name, f"is missing: it goes with {ACCESS_KEY_ID.name}"
    if values.is_set(SECRET_ACCESS_KEY) and not values.is_set(ACCESS_KEY_ID):
        yield ACCESS_KEY_ID.name, f"is missing: it goes with {SECRET_ACCESS_KEY.name}"


def external_id_needs_a_role(values: Values) -> Iterator[Problem]:
    if values.is_set(EXTERNAL_ID) and not values.is_set(ROLE_ARN):
        yield EXTERNAL_ID.name, "is only used with ROLE_ARN: set ROLE_ARN too or remove EXTERNAL_ID"


def one_way_of_choosing_instances(values: Values) -> Iterator[Problem]:
    if values.is_set(TARGETS):
        if values.is_set(INSTANCE_IDS):
            yield TARGETS.name, "give INSTANCE_IDS or TARGETS, not both"
    elif values.ok(INSTANCE_IDS) and not values[INSTANCE_IDS]:
        yield (
            INSTANCE_IDS.name,
            "is required: give one or more instance ids separated by spaces, commas, semicolons or newlines "
            "(or TARGETS, e.g. tag:Service=api)",
        )


def document_takes_these_variables(values: Values) -> Iterator[Problem]:
    document = values[DOCUMENT_NAME]  # SHELL when DOCUMENT_NAME itself is refused
    if document in SCRIPT_DOCUMENTS:
        for reserved in RESERVED_PARAMETERS:
            if reserved in values[DOCUMENT_PARAMETERS]:
                yield (
                    DOCUMENT_PARAMETERS.name,
                    f"{reserved!r} is set by the pipe (COMMANDS/SCRIPT, EXECUTION_TIMEOUT): remove it",
                )
    else:
        for variable in SCRIPT_ONLY:
            if values.is_set(variable):
                yield (
                    variable.name,
                    f"works only with DOCUMENT_NAME {SHELL} or {POWERSHELL}: with {document}, "
                    "pass the document's own parameters in DOCUMENT_PARAMETERS",
                )
    if document == POWERSHELL and values.is_set(HEALTHCHECK_COMMANDS):
        yield HEALTHCHECK_COMMANDS.name, f"is not supported with {POWERSHELL} yet: check health in COMMANDS"


def something_to_run(values: Values) -> Iterator[Problem]:
    if values.is_set(SCRIPT):
        if values.is_set(COMMANDS):
            yield SCRIPT.name, "give COMMANDS or SCRIPT, not both"
    elif (
        not status_action(values)  # status runs no commands of its own
        and values[DOCUMENT_NAME] in SCRIPT_DOCUMENTS
        and not values[COMMANDS].strip()
        and values.ok(COMMANDS)
        and not release_mode(values)  # a release may need no COMMANDS before it goes live
    ):
        yield COMMANDS.name, "is empty: give the shell commands to run on the instances (or SCRIPT)"


def each_name_once(values: Values) -> Iterator[Problem]:
    clash = sorted({ref.env_name for ref in values[SECRETS]} & {name for name, _ in values[VARIABLES]})
    if clash:
        yield VARIABLES.name, f"{listed(clash, quote=False)} also set by SECRETS: give each name once"


def settings_need_their_variable(values: Values) -> Iterator[Problem]:
    if not values[HEALTHCHECK_COMMANDS].strip():
        for variable in (HEALTHCHECK_RETRIES, HEALTHCHECK_INTERVAL, HEALTHCHECK_TIMEOUT):
            if values.is_set(variable):
                yield variable.name, "is only used with HEALTHCHECK_COMMANDS: set it too or remove this"
    if values.is_set(OUTPUT_S3_PREFIX) and not values.is_set(OUTPUT_S3_BUCKET):
        yield OUTPUT_S3_PREFIX.name, "is only used with OUTPUT_S3_BUCKET: set the bucket too"


def later_phases_need_waiting(values: Values) -> Iterator[Problem]:
    """WAIT: 'false' ends the step once the command is sent: a health check or rollback would never run."""
    if values.ok(WAIT) and not values[WAIT]:
        unused = [variable.name for variable in (HEALTHCHECK_COMMANDS, ROLLBACK_COMMANDS) if values.is_set(variable)]
        if unused:
            yield (
                WAIT.name,
                f"'false' ends the step as soon as the command is sent, so {' and '.join(unused)} would never run: "
                f"remove {' and '.join(unused)} or WAIT",
            )


def release_mode(values: Values) -> bool:
    """ARTIFACT or RELEASE given (and not refused: a bad RELEASE is named alone, not with what
    release mode would need)."""
    return any(values.is_set(variable) and values.ok(variable) for variable in (ARTIFACT, RELEASE))


RELEASE_ONLY: tuple[Variable[Any], ...] = (
    ARTIFACT_BUCKET,
    ARTIFACT_PREFIX,
    APP_DIR,
    RUN_AS,
    SHARED_PATHS,
    ACTIVATE_COMMANDS,
    KEEP_RELEASES,
    STAGE_FIRST,
    VERIFY_PROCESSES,
)
# what only a rollout behind a load balancer uses; and what makes the pipe roll out batch by batch itself
LOAD_BALANCER_ONLY: tuple[Variable[Any], ...] = (MIN_HEALTHY, DRAIN_TIMEOUT, HEALTHY_TIMEOUT)
PIPE_DRIVEN: tuple[Variable[Any], ...] = (TARGET_GROUPS, AUTO_SCALING_GROUPS, BATCH_SIZE, CANARY, BAKE_TIME, ALARMS)


def releases_have_what_they_need(values: Values) -> Iterator[Problem]:
    """Release mode: an artifact or a release, a bucket, an app directory, an environment for the
    ledger; it rolls back by switching back, so ROLLBACK_COMMANDS and WAIT: 'false' do not fit."""
    if status_action(values):
        yield from _status_has_what_it_needs(values)
        return
    if not release_mode(values):
        for variable in RELEASE_ONLY:
            if values.is_set(variable):
                yield variable.name, "is only used in release mode: set ARTIFACT (or RELEASE) too, or remove this"
        return
    if values.is_set(ARTIFACT) and values.is_set(RELEASE):
        yield RELEASE.name, "give ARTIFACT (a new build) or RELEASE (one the ledger knows), not both"
    for variable, example in ((ARTIFACT_BUCKET, "acme-deploy-artifacts"), (APP_DIR, "/srv/web-api")):
        if not values.is_set(variable) and values.ok(variable):
            yield variable.name, f"is required in release mode (ARTIFACT or RELEASE), e.g. {example}"
    if values.is_set(ROLLBACK_COMMANDS):
        yield (
            ROLLBACK_COMMANDS.name,
            "is not used in release mode: a failed release is rolled back by switching current back to the "
            "release that was live before (and running ACTIVATE_COMMANDS there); remove ROLLBACK_COMMANDS",
        )
    if values[DOCUMENT_NAME] != SHELL:
        yield DOCUMENT_NAME.name, f"release mode runs on Linux with {SHELL}: remove DOCUMENT_NAME"
    if values.ok(WAIT) and not values[WAIT]:
        yield WAIT.name, "'false' is refused in release mode: the pipe must see each instance switch to record it"
    if _blank_in_app_dir(values) and values.ok(VERIFY_PROCESSES) and values[VERIFY_PROCESSES]:
        yield APP_DIR.name, f"{_BLANK_IN_APP_DIR}, or set VERIFY_PROCESSES: 'false' (giving up that proof)"
    yield from _environment_needed(values, "in release mode")


def _environment_needed(values: Values, where: str) -> Iterator[Problem]:
    if values.ok(ENVIRONMENT) and not values[ENVIRONMENT]:
        yield (
            ENVIRONMENT.name,
            f"is needed {where} (the release ledger is kept per environment): set ENVIRONMENT or run the pipe in "
            "a deployment step",
        )


def _status_has_what_it_needs(values: Values) -> Iterator[Problem]:
    """ACTION: status reads the ledger of SERVICE in ENVIRONMENT and APP_DIR/current on each instance."""
    if not values.is_set(APP_DIR) and values.ok(APP_DIR):
        yield APP_DIR.name, "is required with ACTION: status (it reads APP_DIR/current), e.g. /srv/web-api"
    if _blank_in_app_dir(values):
        yield (
            APP_DIR.name,
            f"{_BLANK_IN_APP_DIR} with ACTION: status: it lists the processes of each release the same way",
        )
    yield from _environment_needed(values, "with ACTION: status")


# the process check (VERIFY_PROCESSES, and ACTION: status's list of processes) reads a command line as words
# split at blanks: a path with a space in it names nothing under APP_DIR there (attack 44)
_BLANK_IN_APP_DIR = (
    "must not contain a space while the process check is on (VERIFY_PROCESSES): it reads a process's command "
    "line as words split at blanks and could not find a process of a release there; choose a path without "
    "spaces, e.g. /srv/web-api"
)


def _blank_in_app_dir(values: Values) -> bool:
    return values.ok(APP_DIR) and " " in (values[APP_DIR] or "")


def lock_is_on(values: Values) -> bool:
    """LOCK: ``auto`` (None) means on wherever two deploys at once could leave the fleet or its record
    wrong: in release mode (the ledger and the rollback's "live before" assume one deploy at a time), with
    TARGET_GROUPS or with AUTO_SCALING_GROUPS (what one deploy takes out of service, the other counts)."""
    lock = values[LOCK]
    if lock is not None:
        return bool(lock)
    return release_mode(values) or values.is_set(TARGET_GROUPS) or values.is_set(AUTO_SCALING_GROUPS)


def ignored_without_a_load_balancer(values: Values) -> tuple[str, ...]:
    """The load balancer's bounds given without TARGET_GROUPS: accepted (one step definition serves an
    environment with a load balancer and one without) and ignored, with a line that says so."""
    if values.is_set(TARGET_GROUPS):
        return ()
    # MIN_HEALTHY also bounds how many instances of an Auto Scaling group may go during the deploy
    kept = (MIN_HEALTHY,) if values.is_set(AUTO_SCALING_GROUPS) else ()
    return tuple(variable.name for variable in LOAD_BALANCER_ONLY if values.is_set(variable) and variable not in kept)


def rollouts_have_what_they_need(values: Values) -> Iterator[Problem]:
    """Batches the pipe sends itself need it to wait."""
    driving = [variable.name for variable in PIPE_DRIVEN if values.is_set(variable)]
    if values.is_set(ROLLBACK_BATCH_SIZE) and not driving:
        yield (
            ROLLBACK_BATCH_SIZE.name,
            "sizes the batches going back when the pipe rolls out batch by batch, which it does with "
            f"{listed((variable.name for variable in PIPE_DRIVEN), quote=False)}: set one of them, or remove this",
        )
    if driving and values.ok(WAIT) and not values[WAIT]:
        yield (
            WAIT.name,
            f"'false' ends the step once a command is sent, but {', '.join(driving)} make the pipe roll out batch "
            f"by batch and gate each one: remove WAIT or {', '.join(driving)}",
        )
    if values.is_set(SERVICE) and not (release_mode(values) or lock_is_on(values) or status_action(values)):
        yield (
            SERVICE.name,
            "names the service in the release ledger and the deploy lock: set ARTIFACT (or RELEASE) or LOCK, "
            "or remove this",
        )


RULES: tuple[Rule, ...] = (
    static_keys_go_together,
    external_id_needs_a_role,
    one_way_of_choosing_instances,
    document_takes_these_variables,
    something_to_run,
    each_name_once,
    settings_need_their_variable,
    later_phases_need_waiting,
    releases_have_what_they_need,
    rollouts_have_what_they_need,
)
