"""Property-based tests of ``load_settings`` in-process, over every pipe variable: bad values are
refused by name, never with a traceback; valid ones are accepted as written.

Generated variable sets are valid, carry one targeted bad value, carry several at once, or are
arbitrary text (the contract and the generators: ``spec/strategies.py``). At the end: targeted
properties for refusals that once went wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from spec.strategies import (
    BAD,
    BITBUCKET_ENV,
    MAX_SCRIPT_BYTES,
    MAX_TARGET_VALUES,
    MAX_TARGETS,
    NAMES,
    SPEC_INSTANCE_ID,
    TIMEOUTS,
    UNKNOWN_PLACEHOLDERS,
    Case,
    bad_cases,
    check_problems,
    check_refusal_names,
    fixed,
    forbidden_in,
    printable,
    shorten,
    unprintable_cases,
    valid_cases,
)

from pipe.config.settings import DeploySettings
from pipe.config.settings import load_settings as load_variables
from pipe.config.variables import VARIABLE_NAMES
from pipe.errors import ValidationFailed
from pipe.plan.script import build_script, script_size_problem


def load_settings(variables: Mapping[str, str | None], env: Mapping[str, str]) -> DeploySettings:
    """What main() runs: the variables' checks and the size of the script they make."""
    return load_variables(variables, env, script_size=script_size_problem)


def test_schema_names_are_the_variables_under_test() -> None:
    assert set(VARIABLE_NAMES) == NAMES
    assert {"AWS_DEFAULT_REGION", "INSTANCE_IDS", "COMMANDS", "ROLE_ARN", "SECRETS"} <= NAMES


def test_every_variable_has_a_bad_value_generator() -> None:
    """Every variable needs its own targeted bad values in BAD: this fails the day a variable is added
    without them (until then ``bad_cases`` still checks the new variable's encoding, as every other's)."""
    missing = sorted(NAMES - set(BAD))
    assert not missing, f"no targeted bad values yet for {', '.join(missing)}: add them to BAD"
    assert {"AWS_DEFAULT_REGION", "INSTANCE_IDS", "COMMANDS", "ROLE_ARN", "SECRETS"} <= set(BAD) & NAMES


@pytest.mark.parametrize(
    "pattern",
    [
        r"[0-9a-f]{8}",
        r"AKIA[A-Z0-9]{16}",
        r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}",
        r"[A-Za-z0-9_./#-]{1,60}",
        r"[a-z0-9][a-z0-9.-]{1,20}[a-z0-9]",
        r"[a-z]{2}(-[a-z]{1,9}){1,3}-[0-9]{1,2}",  # not drawn directly: from_regex
    ],
)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_fixed_draws_only_full_matches(pattern: str, data: st.DataObject) -> None:
    """The generators' own shortcut (``fixed``) stays within the contract's patterns."""
    assert re.fullmatch(pattern, data.draw(fixed(pattern)))


# --- in-process properties on load_settings ------------------------------------------------------------


def refusal(case: Case) -> dict[str, list[str]]:
    """Run load_settings on a case that must be refused; only ValidationFailed may come out."""
    try:
        load_settings(case.variables, case.env)
    except ValidationFailed as failed:
        return failed.problems
    raise AssertionError(f"accepted, but {sorted(case.bad)} were made bad: {shorten(case.variables)}")


def entry_names(text: str) -> list[str]:
    """The names of ``NAME=value`` entries, in order, skipping blank lines and comments."""
    entries = [entry.strip() for entry in text.split("\n")]
    return [entry.partition("=")[0].strip() for entry in entries if entry and not entry.startswith("#")]


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(valid_cases())
def test_valid_variables_are_accepted(case: Case) -> None:
    result = load_settings(case.variables, case.env)

    assert isinstance(result, DeploySettings)
    values = {name: value.strip() for name, value in case.variables.items()}
    assert result.region == values["AWS_DEFAULT_REGION"]
    assert result.environment == case.environment
    assert result.instance_ids == ([] if "TARGETS" in case.variables else case.instance_ids)
    assert result.commands == case.variables["COMMANDS"].strip("\n")
    for name, (_, _, default) in TIMEOUTS.items():
        if name in NAMES:
            assert getattr(result, name.lower()) == int(values.get(name) or default), name

    def expand(text: str) -> str:
        return text.replace("{environment}", case.environment) if case.environment else text

    if "TARGETS" in case.variables:
        entries = [entry.strip() for entry in re.split(r"[\n;]", case.variables["TARGETS"])]
        assert [str(target) for target in result.targets] == [expand(entry) for entry in entries if entry]
    assert result.role_arn == (expand(values["ROLE_ARN"]) if values.get("ROLE_ARN") else None)
    assert result.oidc_role_arn == (expand(values["AWS_OIDC_ROLE_ARN"]) if values.get("AWS_OIDC_ROLE_ARN") else None)
    assert result.external_id == (values.get("EXTERNAL_ID") or None)
    assert result.log_group == (
        expand(values["CLOUDWATCH_LOG_GROUP"]) if values.get("CLOUDWATCH_LOG_GROUP") else "/aws/ssm/ssm-deploy"
    )
    assert (result.static_keys is None) == ("AWS_ACCESS_KEY_ID" not in case.variables)
    assert [ref.env_name for ref in result.secrets] == entry_names(case.variables.get("SECRETS", ""))
    assert [name for name, _ in result.variables] == entry_names(case.variables.get("VARIABLES", ""))
    for text in [result.role_arn, result.oidc_role_arn, result.comment, result.log_group]:
        assert "{environment}" not in (text or "")
    for ref in result.secrets:
        assert "{environment}" not in ref.parameter
    assert len(result.comment) <= 100
    assert script_bytes(result) <= MAX_SCRIPT_BYTES


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(bad_cases(min_bad=1, max_bad=1))
def test_one_bad_variable_is_refused_by_name(case: Case) -> None:
    problems = refusal(case)
    for name, kind in case.bad.items():
        event(f"bad {kind}: {name}")

    check_problems(problems)
    check_refusal_names(case, set(problems))


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(bad_cases(min_bad=2, max_bad=6))
def test_several_bad_variables_are_refused_by_name(case: Case) -> None:
    problems = refusal(case)

    check_problems(problems)
    check_refusal_names(case, set(problems))


@pytest.mark.parametrize("name", VARIABLE_NAMES)
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_unprintable_value_in_each_variable_is_refused_by_name(name: str, data: st.DataObject) -> None:
    case = data.draw(unprintable_cases(name))

    problems = refusal(case)

    check_problems(problems)
    assert set(problems) == {name}
    assert any("UTF-8" in r or "control character" in r for r in problems[name]), problems[name]


ANY_TEXT = st.text(max_size=60) | st.text(
    st.sampled_from("i-0123456789abcdefmAZ ,\n{}=;/#:$é\udcff\x00\x1b\x7f"), max_size=60
)


@settings(max_examples=200, deadline=None)
@given(
    variables=st.dictionaries(st.sampled_from(sorted(NAMES)), ANY_TEXT, max_size=len(NAMES)),
    env=st.dictionaries(
        st.sampled_from(
            [
                "INSTANCE_IDS_COUNT",
                "INSTANCE_IDS_0",
                "INSTANCE_IDS_1",
                "BITBUCKET_DEPLOYMENT_ENVIRONMENT",
                "BITBUCKET_REPO_FULL_NAME",
                "BITBUCKET_BUILD_NUMBER",
                "BITBUCKET_COMMIT",
                "BITBUCKET_BRANCH",
            ]
        ),
        ANY_TEXT,
    ),
)
def test_arbitrary_text_is_accepted_or_refused_by_name(variables: dict[str, str], env: dict[str, str]) -> None:
    try:
        result = load_settings(variables, env)
    except ValidationFailed as failed:
        check_problems(failed.problems)
        unprintable = {
            name
            for name, value in variables.items()
            if any(c in forbidden_in(name) or 0xD800 <= ord(c) <= 0xDFFF for c in value)
        }
        assert unprintable <= set(failed.problems), (unprintable, failed.problems)
        return
    assert isinstance(result, DeploySettings)
    for name, value in variables.items():  # what was accepted carries no forbidden character
        assert not any(c in forbidden_in(name) or 0xD800 <= ord(c) <= 0xDFFF for c in value), name
    assert result.commands.strip()
    assert script_bytes(result) <= MAX_SCRIPT_BYTES
    assert bool(result.instance_ids) != bool(result.targets)  # one way of choosing the instances
    assert len(result.targets) <= MAX_TARGETS
    assert all(SPEC_INSTANCE_ID.fullmatch(i) for i in result.instance_ids)
    for name, (low, high, _) in TIMEOUTS.items():
        if name in NAMES:
            assert low <= getattr(result, name.lower()) <= high, name


# --- targeted properties: each one pins a refusal that once went wrong ----------------------------

MINIMAL = {"AWS_DEFAULT_REGION": "eu-west-1", "INSTANCE_IDS": "i-0123456789abcdef0", "COMMANDS": "./deploy.sh"}


def problems_for(variables: Mapping[str, str], env: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """The problems load_settings reports for MINIMAL changed by ``variables`` ({} when accepted)."""
    try:
        load_settings({**MINIMAL, **variables}, env or {})
    except ValidationFailed as failed:
        check_problems(failed.problems)
        return failed.problems
    return {}


def script_bytes(accepted: DeploySettings) -> int:
    """What SendCommand carries: the script's lines, joined by newlines."""
    return len("\n".join(build_script(accepted)).encode())


@settings(max_examples=25, deadline=None)
@given(
    region=st.sampled_from(["eu-west-", "us-east-", "ap-southeast-"]),
    digit=st.characters(categories=["Nd"]).filter(lambda c: not c.isascii()),
)
def test_region_with_non_ascii_digits_is_refused(region: str, digit: str) -> None:
    """'eu-west-' + ARABIC-INDIC DIGIT ONE once passed; botocore then failed without naming the variable."""
    assert "AWS_DEFAULT_REGION" in problems_for({"AWS_DEFAULT_REGION": region + digit})


@settings(max_examples=20, deadline=None)
@given(digits=st.integers(8, 6000), variable=st.sampled_from(sorted(set(TIMEOUTS) & NAMES)))
def test_huge_numbers_are_refused_with_the_pipes_own_reason(digits: int, variable: str) -> None:
    """Beyond 4300 digits int() raises its own message: the refusal must still give the range."""
    high = TIMEOUTS[variable][1]
    reasons = problems_for({variable: "9" * digits})[variable]
    assert any(str(high) in r for r in reasons), reasons
    listed = problems_for({}, {"INSTANCE_IDS_COUNT": "9" * digits})["INSTANCE_IDS"]
    assert any("INSTANCE_IDS_COUNT" in r for r in listed), listed


@settings(max_examples=20, deadline=None)
@given(key=fixed(r"AKIA[A-Z0-9]{4}[ \t\u00a0\u2028'\"][A-Z0-9]{8}|AKIA[A-Z0-9]{6}é[A-Z0-9]{9}"))
def test_access_key_id_that_cannot_be_one_is_refused(key: str) -> None:
    """A key id with a space once reached the SigV4 header: 'Unexpected error KeyError' in the stand-in."""
    problems = problems_for({"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": "s" * 40})
    assert "AWS_ACCESS_KEY_ID" in problems
    assert all(key.strip() not in r for r in problems["AWS_ACCESS_KEY_ID"] if len(key.strip()) > 4)


@settings(max_examples=20, deadline=None)
@given(secret=fixed(r"[A-Za-z0-9]{10}[ \"'`\u00a0\u2028][A-Za-z0-9]{29}"))
def test_secret_access_key_that_cannot_be_one_is_refused_without_showing_it(secret: str) -> None:
    problems = problems_for({"AWS_ACCESS_KEY_ID": "AKIA" + "A" * 16, "AWS_SECRET_ACCESS_KEY": secret})
    assert "AWS_SECRET_ACCESS_KEY" in problems
    if len(secret.strip()) >= 8:  # never echo a secret
        assert all(secret.strip() not in r for r in problems["AWS_SECRET_ACCESS_KEY"])


@settings(max_examples=25, deadline=None)
@given(commands=st.integers(MAX_SCRIPT_BYTES - 4096, MAX_SCRIPT_BYTES), extra=st.integers(0, 200_000))
def test_the_whole_script_stays_within_the_size_limit(commands: int, extra: int) -> None:
    """The limit holds for what is sent, not only COMMANDS: VARIABLES add export lines."""
    variables = {**MINIMAL, "COMMANDS": "x" * commands, "VARIABLES": "V_BIG=" + "y" * extra}
    try:
        accepted = load_settings(variables, BITBUCKET_ENV)
    except ValidationFailed as failed:
        check_problems(failed.problems)
        assert set(failed.problems) & {"COMMANDS", "VARIABLES"}
        return
    assert script_bytes(accepted) <= MAX_SCRIPT_BYTES


@settings(max_examples=30, deadline=None)
@given(
    separator=st.sampled_from(["\x85", "\u2028", "\u2029", "\r", "\x1b"]),
    before=printable(min_size=1, max_size=10, exclude="\r\n\x85\u2028\u2029'"),
    after=printable(min_size=1, max_size=10, exclude="\r\n\x85\u2028\u2029'"),
)
def test_commands_reach_the_instance_unchanged(separator: str, before: str, after: str) -> None:
    """Accepted characters inside a quoted string must not split the line (str.splitlines() did)."""
    commands = f"echo '{before}{separator}{after}'\n./deploy.sh"
    accepted = load_settings({**MINIMAL, "COMMANDS": commands}, {})
    assert "\n".join(build_script(accepted)).endswith(commands)


# --- once-open bugs, now fixed: each test pins the expected behaviour --------------------------------


@settings(max_examples=20, deadline=None)
@given(repo=fixed(r"[a-z]{1,20}/[a-z-]{1,40}"), build=st.integers(1, 10**6), slack=st.integers(0, 40))
def test_refusal_of_commands_within_the_stated_limit_does_not_blame_unset_variables(
    repo: str, build: int, slack: int
) -> None:
    env = {**BITBUCKET_ENV, "BITBUCKET_REPO_FULL_NAME": repo, "BITBUCKET_BUILD_NUMBER": str(build)}
    reasons = problems_for({"COMMANDS": "x" * (MAX_SCRIPT_BYTES - slack)}, env).get("COMMANDS", [])
    assert not [r for r in reasons if "VARIABLES" in r or "SECRETS" in r], reasons


@settings(max_examples=10, deadline=None)
@given(key=st.sampled_from(["AKIA EXAMPLE", "'akiaexample00000000'"]), secret=st.sampled_from(["'short'", "a b" * 10]))
def test_malformed_key_id_and_secret_are_both_named(key: str, secret: str) -> None:
    problems = problems_for({"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret})
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(problems), problems


@settings(max_examples=10, deadline=None)
@given(word=st.sampled_from(["not-an-id", "i-123", "i-0123456789ABCDEF0", "mi-12345678", "instance-1"]))
def test_instance_ids_in_targets_are_checked_like_instance_ids(word: str) -> None:
    problems = problems_for({"INSTANCE_IDS": "", "TARGETS": f"InstanceIds={word}"})
    assert "TARGETS" in problems


@settings(max_examples=10, deadline=None)
@given(count=st.integers(MAX_TARGET_VALUES + 1, 200), key=st.sampled_from(["tag:Service", "InstanceIds"]))
def test_a_target_with_more_values_than_sendcommand_takes_is_refused(count: int, key: str) -> None:
    values = [f"i-{n:017x}" if key == "InstanceIds" else f"v{n}" for n in range(count)]
    problems = problems_for({"INSTANCE_IDS": "", "TARGETS": f"{key}={','.join(values)}"})
    assert "TARGETS" in problems


@settings(max_examples=10, deadline=None)
@given(placeholder=st.sampled_from([*UNKNOWN_PLACEHOLDERS, "{environment}"]))
def test_output_s3_prefix_with_a_bad_placeholder_is_refused(placeholder: str) -> None:
    variables = {"OUTPUT_S3_BUCKET": "deploy-output", "OUTPUT_S3_PREFIX": f"web-api/{placeholder}"}
    assert "OUTPUT_S3_PREFIX" in problems_for(variables)  # MINIMAL has no ENVIRONMENT
