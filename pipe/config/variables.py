"""Every pipe variable, declared once: name, parser, default, `{environment}`, YAML-list form, usage.

The toolkit's schema (``SCHEMA``), ``pipe.yml``'s variables and the README's "YAML Definition"
and "Variables" sections are generated from ``TABLE`` (``scripts/variable_docs.py``;
``test/test_docs_contract.py`` fails when they differ). ``settings.load_settings`` runs each
declared parser, then the cross-variable ``rules``.

Every variable is a string to the toolkit: it parses non-string types with ``yaml.safe_load``,
which turns some typos into tracebacks and "false" into a truthy string. The parsers here read
the text themselves and their messages name the variable.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Generic, TypeVar

from pipe.config.actions import ACTION_NAMES, DEPLOY
from pipe.config.build_context import BuildContext, cut
from pipe.config.documents import DOCUMENT_NAME as DOCUMENT_NAME_PATTERN
from pipe.config.documents import DOCUMENT_VERSION as DOCUMENT_VERSION_PATTERN
from pipe.config.documents import SHELL, parse_document_parameters
from pipe.config.lock import LOCK_EXPIRY_SECONDS, LOCK_RENEW_SECONDS
from pipe.config.parsers import (
    list_pairs,
    parse_bool,
    parse_instance_ids,
    parse_int,
    parse_rate,
    parse_secret_refs,
    parse_targets,
    shown,
    split_pairs,
    split_words,
    unique_pairs,
)
from pipe.config.release import (
    ARN_ALLOWANCE,
    DEFAULT_KEEP_RELEASES,
    MAX_KEEP_RELEASES,
    MIN_KEEP_RELEASES,
    PREVIOUS,
    app_dir_problem,
    check_artifact_prefix,
    check_ledger_name,
    release_id_problem,
    run_as_problem,
    shared_path_problem,
)
from pipe.config.rollout import (
    AUTO,
    BAKE_TIME_RANGE,
    CANARY_RANGE,
    DEFAULT_HEALTHY_TIMEOUT,
    DEFAULT_MIN_HEALTHY,
    DRAIN_MARGIN_SECONDS,
    DRAIN_TIMEOUT_RANGE,
    HEALTHY_TIMEOUT_RANGE,
    LARGEST,
    AutoScalingChoice,
    TargetGroupChoice,
    parse_alarm_names,
    parse_auto_scaling_groups,
    parse_rollback_batch_size,
    parse_target_groups,
)
from pipe.config.script_file import read_script
from pipe.limits import ACCESS_KEY_ID_MAX, COMMENT_LIMIT, FILE_NAME_MAX_BYTES, PARAMETER_NAME_MAX
from pipe.model import SecretRef, Target

T = TypeVar("T")

EXECUTION_TIMEOUT_RANGE = (1, 172800)  # AWS-RunShellScript executionTimeout
DELIVERY_TIMEOUT_RANGE = (30, 2592000)  # SendCommand TimeoutSeconds
AGENT_LOST_TIMEOUT_RANGE = (1, 86400)
HEALTHCHECK_RETRIES_RANGE = (1, 100)
HEALTHCHECK_INTERVAL_RANGE = (0, 3600)
RESULT_FILE_NAME = "ssm-deploy-result.json"
ENV_SUFFIX = ".env"  # added to RESULT_FILE's name, never replacing its suffix: config.json must not hit config.env

# C0 controls and DEL; ESC stays allowed (colour codes in echo), and so do C1 characters, which
# are printable text in some encodings' round trips
FORBIDDEN_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]")
# a shell script may also hold the other whitespace controls: vertical tab and form feed
FORBIDDEN_IN_SCRIPTS = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")


class Expand(Enum):
    """Whether ``{environment}`` is replaced in a variable's value (``{{environment}}`` stays literal)."""

    NO = "no"
    STRICT = "strict"  # any other {name} is refused: a misspelt placeholder, in a value that cannot hold braces
    KEEP_OTHER_BRACES = "keep"  # free text: other braces are left as they are


class Group(Enum):
    """What a variable is for: the README's variables come in one table per group, in this order."""

    REQUIRED = "Required: region, credentials and environment"
    TARGETS = "Targets: which instances"
    COMMANDS = "Commands: what runs on the instances"
    RELEASE = "Release mode: ship a build and switch to it"
    ROLLOUT = "Rollout: batches, load balancer, gates"
    OUTPUT = "Output: the build log, the result file, the report"
    ADVANCED = "Advanced"


@dataclass(frozen=True)
class Context:
    """What a parser may read besides its own text."""

    build: BuildContext
    clone_dir: str


@dataclass(frozen=True)
class Variable(Generic[T]):
    name: str
    usage: str  # the README's Usage cell; "Default: `...`." is added from ``default``
    parse: Callable[[str, Context], T]  # the text, stripped, ``default`` when blank, ``{environment}`` replaced
    default: str = ""  # as pipe.yml declares it; "" = unset
    required: bool = False
    expand: Expand = Expand.NO
    parse_items: Callable[[list[str], Context], T] | None = None  # the YAML-list form; None: refused
    script: bool = False  # a shell script body: inner whitespace kept, vertical tab and form feed allowed
    kind: str = "string"  # in the README's YAML definition: '<string>', '<integer>', '<boolean>'
    snippet: str = "# Optional"  # its comment there; "" = an uncommented line
    fallback: Any = None  # the value when it is refused and ``default`` does not parse either
    group: Group = field(kw_only=True)  # the README's table it is listed in
    status: bool = field(default=False, kw_only=True)  # ACTION: status reads it too; it ignores the others

    @property
    def forbidden_controls(self) -> re.Pattern[str]:
        return FORBIDDEN_IN_SCRIPTS if self.script else FORBIDDEN_CONTROLS


def plain(parse: Callable[[str], T]) -> Callable[[str, Context], T]:
    """A parser that needs only the text."""
    return lambda text, _context: parse(text)


def each(parse: Callable[[list[str]], T]) -> Callable[[list[str], Context], T]:
    return lambda items, _context: parse(items)


def optional(text: str) -> str | None:
    return text or None


def matching(pattern: str, what: str) -> Callable[[str, Context], str | None]:
    """The text when it fully matches ``pattern``; None when unset."""
    compiled = re.compile(pattern, re.ASCII)

    def parse(text: str) -> str | None:
        if text and not compiled.fullmatch(text):
            raise ValueError(f"must be {what}, got {shown(text)}")
        return text or None

    return plain(parse)


def seconds(limits: tuple[int, int]) -> Callable[[str, Context], int]:
    return plain(lambda text: parse_int(text, *limits))


def lines(text: str) -> str:
    return text


def joined_lines(items: list[str]) -> str:
    return "\n".join(items).strip("\n")


def _environment(text: str, context: Context) -> str | None:
    environment = text or context.build.deployment_environment
    if environment and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", environment):
        raise ValueError(f"must be letters, digits, '.', '_' or '-' (at most 63), got {shown(environment)}")
    return environment or None


def _header_value(what: str) -> Callable[[str], str | None]:
    """Key id and session token travel in HTTP headers: printable ASCII. Their format is AWS's to
    judge (an emulator takes ``test``); only a copy-paste slip is refused, and never quoted."""

    def parse(text: str) -> str | None:
        if text and not re.fullmatch(r"[!#-&(-~]+", text):  # printable ASCII but space, " and '
            raise ValueError(f"must be {what} without spaces, quotes or non-ASCII characters: check the pasted value")
        return text or None

    return parse


def _access_key_id(text: str) -> str | None:
    """AWS's AccessKeyId is word characters, at most 128 (an emulator's ``test`` is one too): a secret key
    pasted here instead (``/`` and ``+`` are not word characters) never reaches a request, nor the log."""
    if text and not re.fullmatch(rf"\w{{1,{ACCESS_KEY_ID_MAX}}}", text, re.ASCII):
        raise ValueError(
            f"must be an access key id: at most {ACCESS_KEY_ID_MAX} letters, digits or _ (AWS's format). "
            "Check the pasted value: is the secret key in AWS_ACCESS_KEY_ID?"
        )  # never quoted: it may be the secret key
    return text or None


def _secret_key(text: str) -> str | None:
    """Printable ASCII: an invisible character copied with the key (a zero-width space, a direction mark, a
    soft hyphen) would only make every signature wrong, an AWS answer that names no variable."""
    if text and not re.fullmatch(r"[!#-&(-_a-~]+", text):  # printable ASCII but space, " ' and `
        raise ValueError(  # never quote it: it is a secret
            "must have no spaces, quotes, invisible or non-ASCII characters: check the pasted value"
        )
    return text or None


def _script(text: str, context: Context) -> str | None:
    return read_script(text, context.clone_dir).strip("\n") if text else None


def _comment(text: str, context: Context) -> str:
    return cut(text or context.build.default_comment(), COMMENT_LIMIT)


def _result_file(text: str, context: Context) -> str:
    if text:
        problem = _unwritable(text)
        if problem:
            raise ValueError(f"{problem}: name a file, e.g. {RESULT_FILE_NAME} or reports/{RESULT_FILE_NAME}")
    return text or str(Path(context.clone_dir) / RESULT_FILE_NAME)


def _unwritable(text: str) -> str | None:
    """Why RESULT_FILE can never be written, found before the deploy rather than warned about after it: a
    folder, a path under a file, or a name longer than Linux takes (what the writer's mkdir and open meet)."""
    path = Path(text)
    too_long = [part for part in path.parts if len(part.encode()) > FILE_NAME_MAX_BYTES]
    if too_long:
        return f"has a name of {len(too_long[0].encode()):,} bytes; a file name is at most {FILE_NAME_MAX_BYTES}"
    if len((path.name + ENV_SUFFIX).encode()) > FILE_NAME_MAX_BYTES:  # its twin, written beside it
        return (
            f"has a name of {len(path.name.encode()):,} bytes; the {ENV_SUFFIX} file written beside it needs "
            f"{len(ENV_SUFFIX)} more, and a file name is at most {FILE_NAME_MAX_BYTES}"
        )
    try:
        if text.endswith("/") or path.is_dir():
            return f"{shown(text)} is a folder"
        above = next((parent for parent in path.parents if parent.exists()), None)
    except OSError as error:  # a path longer than PATH_MAX, or a folder we may not look into
        return f"cannot be looked at: {error.strerror}"
    if above is not None and not above.is_dir():
        return f"is inside {shown(str(above))}, which is a file"
    return None


def _region(text: str) -> str:
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d{1,2}", text, re.ASCII):
        raise ValueError(f"must be an AWS region such as eu-west-1, got {shown(text)}")
    return text


def _log_group(text: str) -> str:
    if not re.fullmatch(r"[\w./#-]{1,512}", text, re.ASCII):
        raise ValueError(f"must be a log group name (letters, digits, _ - / . #), got {shown(text)}")
    return text


def _document_name(text: str) -> str:
    if not DOCUMENT_NAME_PATTERN.fullmatch(text):
        raise ValueError(f"must be an SSM document name or ARN, got {shown(text)}")
    return text


def _parameters_path(text: str) -> str | None:
    if not text:
        return None
    path = "/" + text.strip("/") + "/"
    if not re.fullmatch(r"(/[A-Za-z0-9_.\-]+){1,15}", path.rstrip("/")):
        raise ValueError(f"must be a Parameter Store path like /deploy/prod/, got {shown(path)}")
    if len(path) + 1 + ARN_ALLOWANCE > PARAMETER_NAME_MAX:  # a parameter under it has a longer name than AWS takes
        raise ValueError(
            f"is {len(path):,} characters; a parameter under it would have a longer name than Parameter Store takes "
            f"({PARAMETER_NAME_MAX:,} characters, the {ARN_ALLOWANCE} of the ARN before the name included)"
        )
    return path


def _targets(text: str) -> list[Target]:
    return parse_targets([text]) if text else []


def _secrets(text: str) -> list[SecretRef]:
    return parse_secret_refs(split_pairs(text))


def _plain_pairs(text: str) -> list[tuple[str, str]]:
    return unique_pairs(split_pairs(text))


def _checked(problem_of: Callable[[str], str | None]) -> Callable[[str], str | None]:
    """A parser from a check that returns the problem text (or None): the text, or None when unset."""

    def parse(text: str) -> str | None:
        problem = problem_of(text) if text else None
        if problem:
            raise ValueError(problem)
        return text or None

    return parse


def _shared_paths(text: str) -> tuple[str, ...]:
    paths = tuple(split_words(text))
    problems = [problem for problem in map(shared_path_problem, paths) if problem]
    if problems:
        raise ValueError("; ".join(problems))
    return paths


def _target_groups(text: str) -> TargetGroupChoice | None:
    return parse_target_groups(split_words(text)) if text else None


def _auto_scaling_groups(text: str) -> AutoScalingChoice | None:
    return parse_auto_scaling_groups(split_words(text)) if text else None


def _lock(text: str) -> bool | None:
    """``auto`` (None: on with TARGET_GROUPS), or a boolean."""
    if text.strip().lower() == AUTO:
        return None
    try:
        return parse_bool(text)
    except ValueError:
        raise ValueError(f"must be {AUTO}, true or false, got {shown(text)}") from None


def _release(text: str) -> str | None:
    if text and text != PREVIOUS and release_id_problem(text):
        raise ValueError(f"must be '{PREVIOUS}' or a release id like 000042-0123456, got {shown(text)}")
    return text or None


def _action(text: str) -> str:
    action = text.strip().lower()
    if action not in ACTION_NAMES:
        raise ValueError(f"must be one of {', '.join(ACTION_NAMES)}, got {shown(text)}")
    return action


def _artifact_prefix(text: str) -> str:
    """ "" when unset: release mode then uses the repository's slug (``default_name``)."""
    problem = check_artifact_prefix(text) if text else None
    if problem:
        raise ValueError(problem)
    return text


def _service(text: str) -> str:
    problem = check_ledger_name(text, "environment") if text else None
    if problem:
        raise ValueError(problem.replace("the ledger's service", "the service"))
    return text


ROLE_ARN_PATTERN = r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}"
ROLE_ARN_EXAMPLE = "an IAM role ARN like arn:aws:iam::123456789012:role/deploy"

# --- the table, in pipe.yml's order (the README lists it group by group) ---------------------------

REGION = Variable(
    "AWS_DEFAULT_REGION",
    "Region of the instances, e.g. `eu-west-1`.",
    plain(_region),
    required=True,
    snippet="",
    fallback="",
    group=Group.REQUIRED,
    status=True,
)
ACCESS_KEY_ID = Variable(
    "AWS_ACCESS_KEY_ID",
    "Access key of the pipe's base identity. Needed unless you use OIDC. At most 128 letters, digits or `_`, "
    "AWS's format (an emulator's `test` works): anything else, the secret key pasted here included, is refused "
    "as a pasting slip, without showing it.",
    plain(_access_key_id),
    snippet="# Optional if using OIDC",
    group=Group.REQUIRED,
    status=True,
)
SECRET_ACCESS_KEY = Variable(
    "AWS_SECRET_ACCESS_KEY",
    "Secret key that goes with `AWS_ACCESS_KEY_ID`. Store it as a secured variable. Spaces, quotes and "
    "invisible or non-ASCII characters (a zero-width space copied with it) are refused as a pasting slip; the "
    "value is never shown.",
    plain(_secret_key),
    snippet="# Optional if using OIDC",
    group=Group.REQUIRED,
    status=True,
)
SESSION_TOKEN = Variable(
    "AWS_SESSION_TOKEN",
    "Session token, when the keys are temporary. Temporary keys cannot be renewed: see "
    "[Authentication](#authentication).",
    plain(_header_value("a session token")),
    group=Group.REQUIRED,
    status=True,
)
OIDC_ROLE_ARN = Variable(
    "AWS_OIDC_ROLE_ARN",
    "Role assumed with the step's OpenID Connect token (`oidc: true` on the step). When set, static keys are not used.",
    matching(ROLE_ARN_PATTERN, ROLE_ARN_EXAMPLE),
    expand=Expand.STRICT,
    group=Group.REQUIRED,
    status=True,
)
ENVIRONMENT = Variable(
    "ENVIRONMENT",
    "Deployment environment name (`dev`, `stg`, `prod`...). Default: the step's `deployment:` environment. "
    "Replaces `{environment}` in @EXPANDED@.",
    _environment,
    fallback=None,
    group=Group.REQUIRED,
    status=True,
)
ROLE_ARN = Variable(
    "ROLE_ARN",
    "The environment's deploy role, assumed after the base credentials, e.g. "
    "`arn:aws:iam::123456789012:role/deploy-{environment}`. The session name is "
    "`ssm-deploy-<repo>-<build number>` for CloudTrail.",
    matching(ROLE_ARN_PATTERN, ROLE_ARN_EXAMPLE),
    expand=Expand.STRICT,
    group=Group.REQUIRED,
    status=True,
)
EXTERNAL_ID = Variable(
    "EXTERNAL_ID",
    "External ID required by the deploy role's trust policy. Only with `ROLE_ARN`.",
    matching(r"[\w+=,.@:/-]{2,1224}", "2 to 1224 of the characters A-Z a-z 0-9 + = , . @ : / _ -"),
    group=Group.REQUIRED,
    status=True,
)
INSTANCE_IDS = Variable(
    "INSTANCE_IDS",
    "The instances, separated by spaces, commas, semicolons or newlines, or a YAML list. Each must be `i-` "
    "and 8 or 17 hex digits (or `mi-` and 17 for hybrid nodes). More than 50 are sent as one command per 50 "
    "(SendCommand's limit); `MAX_CONCURRENCY` and `MAX_ERRORS` still count over the whole deploy (commands "
    "are sent as others end when needed). Give `INSTANCE_IDS` or `TARGETS`.",
    plain(lambda text: parse_instance_ids([text])),
    parse_items=each(parse_instance_ids),
    snippet="# or TARGETS",
    group=Group.TARGETS,
    status=True,
)
TARGETS = Variable(
    "TARGETS",
    "Instead of `INSTANCE_IDS`: SSM targets, one per line or `;`-separated, or a YAML list with one per item, "
    "e.g. `tag:Service=api;tag:Env=prod` (keys AND'ed, comma-separated values OR'ed), `tag-key=Service`, "
    "`resource-groups:Name=web`, `InstanceIds=i-0123456789abcdef0`. At most 5. A tag key may hold letters, "
    "numbers and spaces of any script and `_ . : / - @` (SSM's target key pattern has no `+`, and `=` ends "
    "the key). The pipe "
    "resolves them before sending, EC2 instances through EC2 and hybrid (`mi-`) nodes through SSM's own "
    "inventory, to check the agents and say how many instances will run the deploy. Sent as one command "
    "(no rollout), they are resolved again by SSM as it takes it. An instance they matched before that SSM "
    "leaves out, or whose command fails, and that they no longer match when the pipe resolves them again "
    "(untagged or terminated since) has left the fleet: named as gone, not a failure, and not in the "
    "release ledger's fleet. One they still match that SSM left out, or one stopped since that they still match "
    "but for its state (it did not get the deploy, and started again it runs the release it had), fails the "
    "deploy, which goes back as any failed deploy does. One they match that is already stopped (or stopping, "
    "or pending) when the deploy is planned refuses it before anything is sent, naming it and the release it "
    "runs once started again (SSM would hold its command, `Delayed`, until it starts or the delivery timeout "
    "passes): start it, take it out of `TARGETS`, or set `SKIP_STOPPED`.",
    plain(_targets),
    expand=Expand.STRICT,
    parse_items=each(parse_targets),
    snippet="# Optional, instead of INSTANCE_IDS",
    group=Group.TARGETS,
    status=True,
)
SKIP_STOPPED = Variable(
    "SKIP_STOPPED",
    "With `TARGETS`: `true` deploys to the running instances they match and leaves out those that are stopped "
    "(or stopping, or pending) when the deploy is planned, instead of refusing the deploy. Each one left out is "
    "named in the plan, the dry run and the last line (`<id> is stopped, matched by TARGETS: it gets no deploy; "
    "started again it runs <release>`), in the result file's `skipped` (`SSM_DEPLOY_SKIPPED`) and in the release "
    "ledger's `instances` (`skipped, stopped`); the command goes to the running instances by id, so none waits "
    "for a stopped one to start. The step still succeeds and the ledger calls the release live on the instances "
    "that run it: started again, a skipped instance runs the release it had, and `ACTION: status` reports it as "
    "drift until a deploy reaches it.",
    plain(parse_bool),
    default="false",
    kind="boolean",
    group=Group.TARGETS,
)
MAX_CONCURRENCY = Variable(
    "MAX_CONCURRENCY",
    "How many instances run the deploy at once: a number (`10`) or a percentage of the targets (`10%`).",
    plain(lambda text: parse_rate(text, minimum=1)),
    default="50",
    group=Group.ROLLOUT,
)
MAX_ERRORS = Variable(
    "MAX_ERRORS",
    "How many failed instances SSM tolerates before it stops starting the deploy on more of them: a number or "
    "a percentage; `0` stops at the first failure. Instances never started are reported as skipped, and the "
    "step fails.",
    plain(lambda text: parse_rate(text, minimum=0)),
    default="0",
    group=Group.ROLLOUT,
)
COMMANDS = Variable(
    "COMMANDS",
    "Shell commands run on every instance with `AWS-RunShellScript` (multi-line allowed, or a YAML list with "
    "one line per item), e.g. `bash /home/ec2-user/deploy.sh`. The exit code of the last command is the "
    "instance's result.",
    plain(lines),
    parse_items=each(joined_lines),
    script=True,
    snippet="# or SCRIPT",
    group=Group.COMMANDS,
)
SCRIPT = Variable(
    "SCRIPT",
    "Instead of `COMMANDS`: a script in the repository (path relative to the clone directory) sent as the "
    "command body. Windows (CRLF) line endings are read as LF. Paths outside the clone directory (symlinks "
    "included), files over 64 KiB and paths that cannot be read (a symlink loop, a name too long) are refused.",
    _script,
    snippet="# Optional, instead of COMMANDS",
    group=Group.COMMANDS,
)
DOCUMENT_NAME = Variable(
    "DOCUMENT_NAME",
    "The SSM command document: `AWS-RunShellScript`, `AWS-RunPowerShellScript` for Windows targets (COMMANDS, "
    "SECRETS and VARIABLES are then written in PowerShell: `$env:NAME = '...'`, secrets read with "
    "`Get-SSMParameter`), or a document of your own, which takes its parameters from `DOCUMENT_PARAMETERS` "
    "(COMMANDS, SCRIPT, SECRETS, VARIABLES, PARAMETERS_PATH, WORKING_DIRECTORY, HEALTHCHECK_COMMANDS and "
    "ROLLBACK_COMMANDS only apply to the two script documents; HEALTHCHECK_COMMANDS only to "
    "`AWS-RunShellScript`). Allow `ssm:SendCommand` on that document's ARN.",
    plain(_document_name),
    default=SHELL,
    group=Group.ADVANCED,
)
DOCUMENT_VERSION = Variable(
    "DOCUMENT_VERSION",
    "`$DEFAULT`, `$LATEST` or a version number of the document.",
    matching(DOCUMENT_VERSION_PATTERN.pattern, "$DEFAULT, $LATEST or a version number"),
    group=Group.ADVANCED,
)
DOCUMENT_PARAMETERS = Variable(
    "DOCUMENT_PARAMETERS",
    'The document\'s parameters as JSON, e.g. `{"release": "2026.11.25"}` or, for the script documents, extras '
    'like `{"workingDirectory": "C:\\\\apps"}` (`commands` and `executionTimeout` are set by the pipe).',
    plain(lambda text: parse_document_parameters(text) if text else {}),
    group=Group.ADVANCED,
)
SECRETS = Variable(
    "SECRETS",
    "`NAME=/parameter/name` pairs, one per line (a `;` does not separate entries: see `VARIABLES`; a parameter "
    "name cannot hold one, so the 1.x form `A=/a;B=/b` is refused by name), or a YAML list with one pair per "
    "item. The names in [Reserved names](#reserved-names) are refused. "
    "A parameter is a name, an ARN (`arn:aws:ssm:<region>:<account>:parameter/<name>`, the way to read a "
    "parameter shared from another account), or either with a version (`/deploy/prod/db_password:3`) or a "
    "label (`/deploy/prod/db_password:live`). Each instance reads the SecureString with its own instance role "
    "and exports it as `NAME` before `COMMANDS`, exactly as stored (a PEM key keeps its trailing newline): "
    "the value never travels through the pipe, SendCommand or the command history. The pipe checks "
    "beforehand that every parameter exists and that the deploy role can "
    "decrypt it, and sends each as the version it read then (`/deploy/prod/db_password:7`; a label becomes the "
    "version it named): every instance of one deploy, in every batch, reads the same value, so a parameter "
    "rotated during a rolling deploy reaches the next deploy, never half the fleet.",
    plain(_secrets),
    expand=Expand.KEEP_OTHER_BRACES,
    parse_items=each(lambda items: parse_secret_refs(list_pairs(items))),
    group=Group.COMMANDS,
)
VARIABLES = Variable(
    "VARIABLES",
    "Plain `NAME=value` entries, one per line (or a YAML list with one entry per item, whose value is kept "
    "exactly, newlines included), exported before `COMMANDS`, e.g. `DEPLOY_ENV={environment}`. The value is "
    "the rest of the line after the first `=`, kept whole and never run: `;`, `=`, `#`, quotes, `$(...)` are "
    "part of it (`JDBC_URL=jdbc:sqlserver://db:1433;databaseName=app`, `BRANCH=$BITBUCKET_BRANCH` whatever the "
    "branch is called). Only a newline separates entries, because a value often comes from a variable the "
    "pipe never sees, and git allows `;` in branch names but no control characters; up to 1.x a `;` "
    "separated entries too, and a value that holds `;NAME=` now gets a warning in the log. Spaces around "
    "names and values are dropped; lines starting with `#` are comments. Only `{environment}` is replaced "
    '(`{{environment}}` gives a literal one): other braces (`{"a": 1}`, `{{ .Values.tag }}`, `{date}`) are '
    "kept as they are. The names in [Reserved names](#reserved-names) are refused. Not for secrets: they are "
    "visible in the command history.",
    plain(_plain_pairs),
    expand=Expand.KEEP_OTHER_BRACES,
    parse_items=each(lambda items: unique_pairs(list_pairs(items))),
    group=Group.COMMANDS,
)
PARAMETERS_PATH = Variable(
    "PARAMETERS_PATH",
    "A Parameter Store path, e.g. `/deploy/{environment}/`: every parameter directly under it is exported on "
    "the instances like a `SECRETS` entry (read there with the instance role, never sent), named after its "
    "last path segment upper-cased with other characters as `_` (`/deploy/prod/db-password` -> `DB_PASSWORD`). "
    "Names that collide with each other or with `SECRETS`/`VARIABLES` are refused, and so are the "
    "[reserved names](#reserved-names), interpreter options included (whoever may write parameters under the "
    "path chooses these names). Each is read at the version the pipe listed, as for `SECRETS`.",
    plain(_parameters_path),
    expand=Expand.STRICT,
    group=Group.COMMANDS,
)
WORKING_DIRECTORY = Variable(
    "WORKING_DIRECTORY",
    "Directory on the instances where `COMMANDS` start. Default: the SSM Agent's.",
    plain(optional),
    group=Group.COMMANDS,
)
EXECUTION_TIMEOUT = Variable(
    "EXECUTION_TIMEOUT",
    "Seconds the commands may run on an instance, 1 to 172800.",
    seconds(EXECUTION_TIMEOUT_RANGE),
    default="3600",
    kind="integer",
    group=Group.ADVANCED,
)
DELIVERY_TIMEOUT = Variable(
    "DELIVERY_TIMEOUT",
    "Seconds SSM tries to deliver the command to an instance (SendCommand `TimeoutSeconds`), 30 to 2592000.",
    seconds(DELIVERY_TIMEOUT_RANGE),
    default="600",
    kind="integer",
    group=Group.ADVANCED,
)
COMMENT = Variable(
    "COMMENT",
    "Command comment shown in the console and `list-commands`. Default: `ssm-deploy <repo>#<build> <commit>`. "
    "Each command's comment ends with a marker the pipe finds it by when SendCommand's answer is lost, e.g. "
    "` (ref 1a2b3c4d)`; the comment is cut to fit AWS's 100 characters with it.",
    _comment,
    expand=Expand.KEEP_OTHER_BRACES,
    group=Group.ADVANCED,
    status=True,
)
STREAM_OUTPUT = Variable(
    "STREAM_OUTPUT",
    "Stream the instances' output through CloudWatch Logs while the command runs. With `false`, output is "
    "shown when the command ends, capped by SSM at 24,000 characters (stdout) and 8,000 (stderr).",
    plain(parse_bool),
    default="true",
    kind="boolean",
    group=Group.OUTPUT,
    status=True,
)
CLOUDWATCH_LOG_GROUP = Variable(
    "CLOUDWATCH_LOG_GROUP",
    "Log group the SSM Agent writes the output to.",
    plain(_log_group),
    default="/aws/ssm/ssm-deploy",
    expand=Expand.STRICT,
    group=Group.OUTPUT,
    status=True,
)
AGENT_LOST_TIMEOUT = Variable(
    "AGENT_LOST_TIMEOUT",
    "Seconds an instance's SSM Agent may be offline (ConnectionLost, or no longer managed) during the deploy "
    "before the pipe gives the instance up, fails it by name and cancels its invocation, 1 to 86400. Checked "
    "at most every 30 s.",
    seconds(AGENT_LOST_TIMEOUT_RANGE),
    default="120",
    kind="integer",
    group=Group.ADVANCED,
    status=True,
)
RESULT_FILE = Variable(
    "RESULT_FILE",
    "Where to write the result as JSON (status, command ids, console links, one entry per instance with status, "
    "exit code and duration); the same as `KEY=value` lines goes next to it with `.env` added to its name "
    "(`ssm-deploy-result.json.env`: `SSM_DEPLOY_STATUS`, `SSM_DEPLOY_FAILED_INSTANCES`, ...). Written on "
    "success and on failure; a folder, a path under a file or a name over 255 bytes is refused before anything "
    "runs. Default: "
    f"`{RESULT_FILE_NAME}` in the clone directory.",
    _result_file,
    group=Group.OUTPUT,
    status=True,
)
OUTPUT_S3_BUCKET = Variable(
    "OUTPUT_S3_BUCKET",
    "S3 bucket where the SSM Agent also writes each instance's complete output. Whatever was not streamed "
    "(`STREAM_OUTPUT: 'false'`, or CloudWatch was late or never written to), the pipe prints from there instead "
    "of SSM's capped fields.",
    matching(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", "an S3 bucket name (3-63 of a-z 0-9 . -)"),
    group=Group.OUTPUT,
    status=True,
)
OUTPUT_S3_PREFIX = Variable(
    "OUTPUT_S3_PREFIX",
    "Key prefix in `OUTPUT_S3_BUCKET`, e.g. `web-api/{environment}`.",
    plain(lambda text: text),
    expand=Expand.STRICT,
    group=Group.OUTPUT,
    status=True,
)
HEALTHCHECK_COMMANDS = Variable(
    "HEALTHCHECK_COMMANDS",
    "Shell commands (or a YAML list, one line per item) run on the same instances after the deploy succeeded, "
    "e.g. `curl -fsS localhost:3000/health`. An instance whose check still fails after the retries fails the "
    "deploy. Each attempt runs in a subshell of its own, never as the condition of an `if`, so `set -e`, "
    "`set -o pipefail` and `exit` work as in `COMMANDS` (an `exit` ends the attempt). SECRETS and VARIABLES "
    "are exported for it too.",
    plain(lines),
    parse_items=each(joined_lines),
    script=True,
    group=Group.COMMANDS,
)
HEALTHCHECK_RETRIES = Variable(
    "HEALTHCHECK_RETRIES",
    "Attempts of the health check on each instance, 1 to 100.",
    plain(lambda text: parse_int(text, *HEALTHCHECK_RETRIES_RANGE, unit="")),
    default="3",
    kind="integer",
    group=Group.COMMANDS,
)
HEALTHCHECK_INTERVAL = Variable(
    "HEALTHCHECK_INTERVAL",
    "Seconds between attempts, 0 to 3600.",
    seconds(HEALTHCHECK_INTERVAL_RANGE),
    default="5",
    kind="integer",
    group=Group.COMMANDS,
)
HEALTHCHECK_TIMEOUT = Variable(
    "HEALTHCHECK_TIMEOUT",
    "Seconds the whole health check (all attempts) may run on an instance, 1 to 172800.",
    seconds(EXECUTION_TIMEOUT_RANGE),
    default="300",
    kind="integer",
    group=Group.COMMANDS,
)
ROLLBACK_COMMANDS = Variable(
    "ROLLBACK_COMMANDS",
    "Shell commands (or a YAML list, one line per item) run when the deploy or the health check fails, on the "
    "instances that received the deploy (not on instances it never started on). Its output is streamed the "
    "same way; the step still fails, and the message says whether the rollback succeeded everywhere. Not run "
    "when the pipeline was stopped.",
    plain(lines),
    parse_items=each(joined_lines),
    script=True,
    group=Group.COMMANDS,
)
TARGET_GROUPS = Variable(
    "TARGET_GROUPS",
    "Zero-downtime deploys behind a load balancer: `auto` (every ELBv2 target group the instances are "
    "registered in) or target group names or ARNs separated by spaces or newlines (or a YAML list), e.g. "
    "`web-api-{environment}`; named groups must exist, and a group the instances are also registered in is "
    "left too, named or not (the plan lists it), by instance id or, in a group of target type `ip`, by one of "
    "their addresses (read with `ec2:DescribeInstances`). The pipe then rolls out itself, batch by batch: it "
    "deregisters the batch from every target group it is in, waits until it is drained, deploys, runs the "
    "health check, registers it "
    "again, waits until every group reports it `healthy` (not where it was `unhealthy` before, in a group not "
    "named), bakes (`BAKE_TIME`, watching `ALARMS`), then goes "
    "on; see [Zero-downtime deploys behind a load balancer](#zero-downtime-deploys-behind-a-load-balancer). "
    "Needs the instances known before sending (`INSTANCE_IDS`, or `TARGETS` the deploy role can resolve).",
    plain(_target_groups),
    expand=Expand.STRICT,
    parse_items=each(lambda items: parse_target_groups([item.strip() for item in items if item.strip()])),
    group=Group.ROLLOUT,
)
AUTO_SCALING_GROUPS = Variable(
    "AUTO_SCALING_GROUPS",
    "Deploys to EC2 Auto Scaling groups: `auto` (the groups the targeted instances belong to) or group names "
    "separated by spaces or newlines (or a YAML list). The pipe then rolls out itself, batch by batch, and holds "
    "for the whole rollout the group processes that fight it (`AZRebalance`, `HealthCheck`, `ReplaceUnhealthy`, "
    "`InstanceRefresh`), resuming on every exit path exactly those it suspended; instances that are not "
    "`InService` or `Standby` (`Pending`, `Terminating`, a warm pool's) are reported by state, and an instance the "
    "group terminates during the deploy is reported as gone, not failed, unless fewer than `MIN_HEALTHY` remain. "
    "Scaling in and out goes on: an instance the group launches during the deploy gets it too, in a batch of its "
    "own, before the deploy succeeds. See [Auto Scaling groups](#auto-scaling-groups). Needs the instances known "
    "before sending (`INSTANCE_IDS`, or `TARGETS` the deploy role can resolve).",
    plain(_auto_scaling_groups),
    expand=Expand.STRICT,
    parse_items=each(lambda items: parse_auto_scaling_groups([item.strip() for item in items if item.strip()])),
    group=Group.ROLLOUT,
)
BATCH_SIZE = Variable(
    "BATCH_SIZE",
    "Instances per batch when the pipe rolls out itself: a number (`2`) or a percentage of the instances "
    "(`25%`, rounded up). Each batch is one command, sent when the one before it passed every gate. Default: "
    "without `TARGET_GROUPS`, one batch of every instance, which SSM paces with `MAX_CONCURRENCY` (as before); "
    "with `TARGET_GROUPS`, one instance at a time.",
    plain(lambda text: parse_rate(text, minimum=1) if text else None),
    group=Group.ROLLOUT,
)
ROLLBACK_BATCH_SIZE = Variable(
    "ROLLBACK_BATCH_SIZE",
    "Going back faster, if you accept the risk: instances per batch when the pipe switches back, a number, a "
    f"percentage or `{LARGEST}` (the largest batches `MIN_HEALTHY` allows at that moment). It sizes the automatic "
    "rollback of the batches deployed before a failed one (whole batches joined, never split) and, after staging, "
    "the batches of a `RELEASE` deploy (each one only a switch then). It trades capacity for time: more instances "
    "are out of service at once while they switch back. Default: the deploy's batches. See "
    "[Going back faster](#going-back-faster-rollback_batch_size).",
    plain(parse_rollback_batch_size),
    group=Group.ROLLOUT,
)
CANARY = Variable(
    "CANARY",
    "A first batch of this many instances, deployed and baked (`BAKE_TIME`, `ALARMS`) before the rest, "
    f"{CANARY_RANGE[0]} to {CANARY_RANGE[1]}.",
    plain(lambda text: parse_int(text, *CANARY_RANGE, unit="") if text else None),
    kind="integer",
    group=Group.ROLLOUT,
)
MIN_HEALTHY = Variable(
    "MIN_HEALTHY",
    "With `TARGET_GROUPS`: the healthy targets every target group keeps while a batch is out, a number or a "
    "percentage of the group's registered targets (rounded up). Targets that are already unhealthy count "
    "against it. A plan that would go below it, or a fleet already below it, is refused before anything is "
    "deregistered or sent; `0` accepts downtime (or starts a first deploy, while no target is healthy yet). "
    "Without `TARGET_GROUPS` (an environment without a load balancer) it is ignored, and a line says so; "
    "so are `DRAIN_TIMEOUT` and `HEALTHY_TIMEOUT`.",
    plain(lambda text: parse_rate(text, minimum=0)),
    default=DEFAULT_MIN_HEALTHY,
    group=Group.ROLLOUT,
)
DRAIN_TIMEOUT = Variable(
    "DRAIN_TIMEOUT",
    "With `TARGET_GROUPS`: seconds a deregistered batch may take to drain (until no group lists it as "
    f"`draining`), {DRAIN_TIMEOUT_RANGE[0]} to {DRAIN_TIMEOUT_RANGE[1]}. ELBv2 keeps a target `draining` for the "
    "group's whole `deregistration_delay.timeout_seconds` (300 s unless changed), even once its connections are "
    f"closed. Default: the longest delay of the groups plus {DRAIN_MARGIN_SECONDS} s.",
    plain(lambda text: parse_int(text, *DRAIN_TIMEOUT_RANGE) if text else None),
    kind="integer",
    group=Group.ROLLOUT,
)
HEALTHY_TIMEOUT = Variable(
    "HEALTHY_TIMEOUT",
    "With `TARGET_GROUPS`: seconds a registered batch may take until every group reports it `healthy`, "
    f"{HEALTHY_TIMEOUT_RANGE[0]} to {HEALTHY_TIMEOUT_RANGE[1]}.",
    seconds(HEALTHY_TIMEOUT_RANGE),
    default=str(DEFAULT_HEALTHY_TIMEOUT),
    kind="integer",
    group=Group.ROLLOUT,
)
BAKE_TIME = Variable(
    "BAKE_TIME",
    "Seconds to wait after each batch is back in service (the last one too) while watching `ALARMS`, before the "
    f"next batch or the verdict, {BAKE_TIME_RANGE[0]} to {BAKE_TIME_RANGE[1]}.",
    seconds(BAKE_TIME_RANGE),
    default="0",
    kind="integer",
    group=Group.ROLLOUT,
)
ALARMS = Variable(
    "ALARMS",
    "CloudWatch alarm names separated by spaces or newlines (a YAML list for names holding spaces), e.g. "
    "`web-api-5xx web-api-p99-latency`. The deploy is refused while one is in `ALARM`; they are checked before "
    "each batch and all through the bake; SendCommand carries the first one (`AlarmConfiguration` takes one "
    "alarm: use a composite alarm to have SSM watch several), so SSM stops a command when it fires. An alarm "
    "stops the rollout and rolls back every batch deployed so far.",
    plain(lambda text: parse_alarm_names(split_words(text))),
    parse_items=each(lambda items: parse_alarm_names([item.strip() for item in items if item.strip()])),
    fallback=(),
    group=Group.ROLLOUT,
)
LOCK = Variable(
    "LOCK",
    "One deploy at a time per `SERVICE` and environment, across repositories and manual runs: a Parameter "
    "Store parameter `/deploy-lock/<service>/<environment>` names the build holding it until it ends. `auto` "
    "turns it on in release mode (`ARTIFACT`, `RELEASE`) and with `TARGET_GROUPS` or `AUTO_SCALING_GROUPS`; "
    "`true` or `false` (`false` there lets two deploys overlap: each one's rollback and ledger version then "
    "assume the fleet it saw at its start). Taken before anything of the fleet is read: a held "
    "lock fails the step at once, naming the holder's build. The running deploy renews it every "
    f"{LOCK_RENEW_SECONDS} s; the lock of a killed build expires {LOCK_EXPIRY_SECONDS // 60} min after its last "
    "renewal and is then taken over with a warning (see "
    "[The deploy lock when a build dies](#the-deploy-lock-when-a-build-dies)).",
    plain(_lock),
    default=AUTO,
    group=Group.ROLLOUT,
)
ARTIFACT = Variable(
    "ARTIFACT",
    "Release mode: the build to ship, a `.tar.gz`/`.tgz`/`.zip` file or a directory (packed by the pipe) in "
    "the clone directory, e.g. `web-api.tgz` from the build step's `artifacts:`. Uploaded once per content to "
    "`ARTIFACT_BUCKET`, unpacked on each instance into `APP_DIR/releases/<release id>`, made live by switching "
    "`APP_DIR/current` atomically; see [Releases](#releases). Refused when missing, empty, outside the clone "
    "directory (symlinks too), over 5 GiB, or holding an entry a release may not hold (a device node, FIFO, "
    "socket, setuid/setgid/sticky bit, a path or link leading outside the release, or files declaring more "
    "than 5 GiB unpacked; see "
    "[What a release may hold](#what-a-release-may-hold)).",
    plain(optional),
    group=Group.RELEASE,
)
ARTIFACT_BUCKET = Variable(
    "ARTIFACT_BUCKET",
    "Release mode: the S3 bucket the artifact is uploaded to (never made public) and the instances download "
    "it from with their instance role.",
    matching(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", "an S3 bucket name (3-63 of a-z 0-9 . -)"),
    group=Group.RELEASE,
    status=True,
)
ARTIFACT_PREFIX = Variable(
    "ARTIFACT_PREFIX",
    "Release mode: key prefix in `ARTIFACT_BUCKET`; the key is `<prefix><SHA-256>.<tar.gz|zip>`, so the same "
    "build deployed to dev, stg and prod is uploaded once. Default: the repository's slug and `/`.",
    plain(_artifact_prefix),
    expand=Expand.STRICT,
    group=Group.RELEASE,
    status=True,
)
APP_DIR = Variable(
    "APP_DIR",
    "Release mode: the application's directory on the instances, e.g. `/srv/web-api`, holding `releases/`, "
    "`shared/` and the `current` symlink. `ACTION: status` reads `current` there. Refused with a space in it while "
    "`VERIFY_PROCESSES` is on and with `ACTION: status`: they read command lines as words split at blanks.",
    plain(_checked(app_dir_problem)),
    group=Group.RELEASE,
    status=True,
)
RUN_AS = Variable(
    "RUN_AS",
    "Release mode: the user `COMMANDS` and `ACTIVATE_COMMANDS` run as, with that user's login environment "
    "(so an nvm-installed node and the user's own pm2 daemon are the ones used); the release directories "
    "belong to it. SECRETS and VARIABLES reach its commands as environment variables, never as arguments or "
    "files. Default: root, as SSM runs commands.",
    plain(_checked(run_as_problem)),
    group=Group.RELEASE,
)
SHARED_PATHS = Variable(
    "SHARED_PATHS",
    "Release mode: paths inside each release linked from `APP_DIR/shared/`, separated by spaces, e.g. "
    "`.env logs/` (a trailing `/` makes a directory; a name with a dot, a file).",
    plain(_shared_paths),
    parse_items=each(lambda items: _shared_paths(" ".join(items))),
    fallback=(),
    group=Group.RELEASE,
)
ACTIVATE_COMMANDS = Variable(
    "ACTIVATE_COMMANDS",
    "Release mode: shell commands run in `APP_DIR/current` after the switch, e.g. "
    "`pm2 startOrReload ecosystem.config.js --env {environment}`. When they fail, `current` goes back to the "
    "release that was live before and they run there again.",
    plain(lines),
    parse_items=each(joined_lines),
    script=True,
    expand=Expand.KEEP_OTHER_BRACES,
    group=Group.RELEASE,
)
RELEASE = Variable(
    "RELEASE",
    "Release mode without building: `previous` (from the ledger, the last release live before the live one with "
    "another artifact) or a release id, deployed with the same switch, activation, health check and rollback; "
    "instances that no longer have it fetch it again. Instead of `ARTIFACT`.",
    plain(_release),
    group=Group.RELEASE,
)
KEEP_RELEASES = Variable(
    "KEEP_RELEASES",
    "Release mode: releases kept on each instance after a successful deploy, 2 to 100; the live one and the "
    "one before it are never removed, nor the one before that while a deploy could still fail back to it (so `2` "
    "leaves three releases).",
    plain(lambda text: parse_int(text, MIN_KEEP_RELEASES, MAX_KEEP_RELEASES, unit="")),
    default=str(DEFAULT_KEEP_RELEASES),
    kind="integer",
    group=Group.RELEASE,
)
STAGE_FIRST = Variable(
    "STAGE_FIRST",
    "Release mode, in a rollout the pipe drives: stage the release (download, verify, unpack, `COMMANDS`) on "
    "every instance while all of them serve, before the first batch is drained, so each batch is out of service "
    "only for its switch. `false` installs the release in each batch's window instead, as before staging: no "
    "`COMMANDS` run on instances that serve (their CPU and disk), at the price of a longer time out of service. "
    "See [Releases](#releases).",
    plain(parse_bool),
    default="true",
    kind="boolean",
    group=Group.RELEASE,
)
VERIFY_PROCESSES = Variable(
    "VERIFY_PROCESSES",
    "Release mode: after `ACTIVATE_COMMANDS`, read each instance's processes (`/proc`, as root) and fail the "
    "instance, switched back with exit `90`, when one still runs a replaced release or one of the new release "
    "lacks a value this deploy exported (SECRETS, PARAMETERS_PATH, VARIABLES); see "
    "[Proof of what serves](#proof-of-what-serves-verify_processes). "
    "`false` for a service that is no long-running process, giving up that proof.",
    plain(parse_bool),
    default="true",
    kind="boolean",
    group=Group.RELEASE,
)
SERVICE = Variable(
    "SERVICE",
    "The service's name in the release ledger (release mode), the Parameter Store parameter "
    "`/release-ledger/<service>/<environment>/release` that records every deploy (and that `ACTION: status` "
    "reads), and in the deploy lock (`LOCK`): 1-128 letters, digits or `_.-`, not only dots. Default: the "
    "repository's slug.",
    plain(_service),
    group=Group.RELEASE,
    status=True,
)
ACTION = Variable(
    "ACTION",
    "What the step does: `deploy`, or `status`: read-only and without the lock, it prints the release "
    "ledger's live release and last releases, asks every targeted instance which release `APP_DIR/current` "
    "points to and which processes run from another release, and fails the step when an instance runs another "
    "release than the live one, or a process runs another release than `current` (drift), or could not be "
    "asked; see [What runs where: ACTION: status](#what-runs-where-action-status). `status` needs "
    "`APP_DIR`, `ENVIRONMENT` and the instances (`INSTANCE_IDS` or `TARGETS`); the variables only a deploy "
    "uses (`COMMANDS`, `ARTIFACT`, `DRY_RUN`...) are ignored, and a line names them.",
    plain(_action),
    default=DEPLOY,
    fallback=DEPLOY,
    group=Group.ADVANCED,
    status=True,
)
DRY_RUN = Variable(
    "DRY_RUN",
    "Authenticate, resolve the targets, run every check (agents, parameters, permissions) and print the plan "
    "(role, instances, document, the rollout and its batches, `COMMANDS`; with `DEBUG`, the generated script "
    "with secrets as names only), then stop without sending anything.",
    plain(parse_bool),
    default="false",
    kind="boolean",
    group=Group.ADVANCED,
)
WAIT = Variable(
    "WAIT",
    "With `false`, send the command, print its id and console link, and end the step without waiting for it. "
    "Refused together with `HEALTHCHECK_COMMANDS` or `ROLLBACK_COMMANDS`, which could then never run.",
    plain(parse_bool),
    default="true",
    kind="boolean",
    group=Group.ADVANCED,
)
CODE_INSIGHTS = Variable(
    "CODE_INSIGHTS",
    "Post a Code Insights report on the commit (`BITBUCKET_COMMIT`) when the deploy ends: its verdict, "
    "environment, release and the one before, instances deployed and failed, duration and batches, and one "
    "annotation per failed instance (phase, exit code, last lines of output, secrets masked). A refusal gets "
    "a failed report saying nothing was sent; a dry run gets none. Posted through the Pipelines proxy, no "
    "credentials needed; a report that cannot be posted is a warning, never a failed deploy. `false` turns it "
    "off.",
    plain(parse_bool),
    default="true",
    kind="boolean",
    group=Group.OUTPUT,
)
DEBUG = Variable(
    "DEBUG",
    "Turn on extra debug information (the generated script sent, or with `DRY_RUN` the one that would be, and "
    "the AWS call flow). Never prints credentials or secret values.",
    plain(parse_bool),
    default="false",
    kind="boolean",
    group=Group.OUTPUT,
    status=True,
)

TABLE: tuple[Variable[Any], ...] = (
    REGION,
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    SESSION_TOKEN,
    OIDC_ROLE_ARN,
    ENVIRONMENT,
    ROLE_ARN,
    EXTERNAL_ID,
    INSTANCE_IDS,
    TARGETS,
    SKIP_STOPPED,
    MAX_CONCURRENCY,
    MAX_ERRORS,
    COMMANDS,
    SCRIPT,
    DOCUMENT_NAME,
    DOCUMENT_VERSION,
    DOCUMENT_PARAMETERS,
    SECRETS,
    VARIABLES,
    PARAMETERS_PATH,
    WORKING_DIRECTORY,
    EXECUTION_TIMEOUT,
    DELIVERY_TIMEOUT,
    COMMENT,
    STREAM_OUTPUT,
    CLOUDWATCH_LOG_GROUP,
    AGENT_LOST_TIMEOUT,
    RESULT_FILE,
    OUTPUT_S3_BUCKET,
    OUTPUT_S3_PREFIX,
    HEALTHCHECK_COMMANDS,
    HEALTHCHECK_RETRIES,
    HEALTHCHECK_INTERVAL,
    HEALTHCHECK_TIMEOUT,
    ROLLBACK_COMMANDS,
    TARGET_GROUPS,
    AUTO_SCALING_GROUPS,
    BATCH_SIZE,
    ROLLBACK_BATCH_SIZE,
    CANARY,
    MIN_HEALTHY,
    DRAIN_TIMEOUT,
    HEALTHY_TIMEOUT,
    BAKE_TIME,
    ALARMS,
    LOCK,
    ARTIFACT,
    ARTIFACT_BUCKET,
    ARTIFACT_PREFIX,
    APP_DIR,
    RUN_AS,
    SHARED_PATHS,
    ACTIVATE_COMMANDS,
    RELEASE,
    KEEP_RELEASES,
    STAGE_FIRST,
    VERIFY_PROCESSES,
    SERVICE,
    ACTION,
    DRY_RUN,
    WAIT,
    CODE_INSIGHTS,
    DEBUG,
)
BY_NAME: dict[str, Variable[Any]] = {variable.name: variable for variable in TABLE}
VARIABLE_NAMES: tuple[str, ...] = tuple(BY_NAME)
REQUIRED_VARIABLES: frozenset[str] = frozenset(variable.name for variable in TABLE if variable.required)
# One of INSTANCE_IDS and TARGETS is required too, and one of COMMANDS and SCRIPT: rules.py checks
# that, the schema cannot.
DOCUMENTED_REQUIRED: frozenset[str] = REQUIRED_VARIABLES
EXPANDED: tuple[str, ...] = tuple(variable.name for variable in TABLE if variable.expand is not Expand.NO)
LIST_FORMS: tuple[str, ...] = tuple(variable.name for variable in TABLE if variable.parse_items is not None)

_OPTIONAL: dict[str, Any] = {"type": "string", "required": False, "nullable": True}
_REQUIRED: dict[str, Any] = {"type": "string", "required": True, "empty": False}
SCHEMA: dict[str, dict[str, Any]] = {
    variable.name: dict(_REQUIRED if variable.required else _OPTIONAL) for variable in TABLE
}


@dataclass(frozen=True)
class Given:
    """A variable as the pipe received it: its text, and its items when given as a YAML list."""

    text: str | None = None
    items: list[str] | None = None  # NAME_COUNT and NAME_0..n
    list_error: str = ""  # a broken list: NAME_COUNT without all its items

    @property
    def as_list(self) -> bool:
        return self.items is not None or bool(self.list_error)


class Values:
    """Every variable's parsed value (its fallback when refused), and what was given."""

    def __init__(self, given: dict[str, Given]) -> None:
        self.given = given
        self._values: dict[str, Any] = {}
        self.refused: set[str] = set()
        self.ignored: tuple[str, ...] = ()  # given, but not used by the ACTION chosen: read as if unset

    def set(self, variable: Variable[T], value: T) -> None:
        self._values[variable.name] = value

    def __getitem__(self, variable: Variable[T]) -> T:
        value: T = self._values[variable.name]
        return value

    def is_set(self, variable: Variable[Any]) -> bool:
        """Given with a value of its own: not blank, and not the declared default (which Bitbucket may
        pass for a variable the step does not set)."""
        given = self.given.get(variable.name, Given())
        if given.as_list:
            return True
        text = (given.text or "").strip()
        return text not in ("", variable.default)

    def ok(self, variable: Variable[Any]) -> bool:
        return variable.name not in self.refused

    def ignore(self, names: tuple[str, ...]) -> None:
        """Read ``names`` as if they were not given (their defaults), remembering them for the log."""
        self.ignored = names
        for name in names:
            self.given[name] = Given()
