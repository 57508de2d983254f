"""pipe.config.parsers: the small parsers behind every pipe variable."""

from __future__ import annotations

import random
import string

import pytest

from pipe.config.env_names import reserved_reason
from pipe.config.parsers import (
    PARAMETER_REFERENCE,
    expand_environment,
    former_separator_hints,
    list_pairs,
    listed,
    parse_bool,
    parse_int,
    shown,
    split_pairs,
    split_words,
    tag_key_problem,
    yaml_list,
)
from pipe.config.settings import load_settings
from pipe.errors import ValidationFailed

# --- parse_bool ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["true", "True", "TRUE", " yes ", "1", "on"])
def test_parse_bool_true_spellings(text: str) -> None:
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["false", "False", "no", "NO", "0", "off", "", "  "])
def test_parse_bool_false_spellings(text: str) -> None:
    assert parse_bool(text) is False


@pytest.mark.parametrize("text", ["maybe", "ture", "2", "y"])
def test_parse_bool_rejects_other_words_naming_the_value(text: str) -> None:
    with pytest.raises(ValueError, match="true or false") as info:
        parse_bool(text)
    assert repr(text) in str(info.value)


# --- parse_int ----------------------------------------------------------------------------------


def test_parse_int_reads_value_in_range() -> None:
    assert parse_int("900", 1, 172800) == 900
    assert parse_int(" 30 ", 30, 2592000) == 30  # bounds are inclusive
    assert parse_int("2592000", 30, 2592000) == 2592000


@pytest.mark.parametrize("text", ["abc", "-5", "1.5", "10s", "1e3", "+3", ""])
def test_parse_int_rejects_non_digits(text: str) -> None:
    with pytest.raises(ValueError, match="whole number of seconds from 1 to 172800") as info:
        parse_int(text, 1, 172800)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(("text", "shown"), [("0", "got 0"), ("172801", "got 172801"), ("0029", "got 29")])
def test_parse_int_rejects_out_of_range(text: str, shown: str) -> None:
    with pytest.raises(ValueError, match="must be from 30 to 172800 seconds") as info:
        parse_int(text, 30, 172800)
    assert shown in str(info.value)


def test_parse_int_of_a_count_says_no_unit() -> None:
    with pytest.raises(ValueError, match="must be a whole number from 1 to 100, got 'x'"):
        parse_int("x", 1, 100, unit="")


# --- split_words --------------------------------------------------------------------------------


def test_split_words_on_spaces_commas_semicolons_and_newlines() -> None:
    text = " i-1, i-2\ni-3\t i-4,,\n\ni-5;i-6 ; i-7 "
    assert split_words(text) == ["i-1", "i-2", "i-3", "i-4", "i-5", "i-6", "i-7"]


def test_split_words_of_blank_text_is_empty() -> None:
    assert split_words("") == []
    assert split_words(" ,\n, ") == []


# --- yaml_list ----------------------------------------------------------------------------------


def test_yaml_list_reads_count_and_items_in_order() -> None:
    env = {"INSTANCE_IDS_COUNT": "3", "INSTANCE_IDS_0": "a", "INSTANCE_IDS_1": "b", "INSTANCE_IDS_2": "c"}
    assert yaml_list(env, "INSTANCE_IDS") == ["a", "b", "c"]


def test_yaml_list_without_count_is_none() -> None:
    assert yaml_list({"INSTANCE_IDS": "i-1", "INSTANCE_IDS_0": "x"}, "INSTANCE_IDS") is None


def test_yaml_list_count_zero_is_empty_list() -> None:
    assert yaml_list({"INSTANCE_IDS_COUNT": "0"}, "INSTANCE_IDS") == []


def test_yaml_list_ignores_items_beyond_count() -> None:
    env = {"X_COUNT": "1", "X_0": "a", "X_1": "stale"}
    assert yaml_list(env, "X") == ["a"]


def test_yaml_list_missing_item_is_named() -> None:
    env = {"INSTANCE_IDS_COUNT": "2", "INSTANCE_IDS_0": "a"}
    with pytest.raises(ValueError, match="INSTANCE_IDS_COUNT is 2 but INSTANCE_IDS_1 is missing"):
        yaml_list(env, "INSTANCE_IDS")


@pytest.mark.parametrize("count", ["two", "-1", "", "1.0"])
def test_yaml_list_bad_count(count: str) -> None:
    with pytest.raises(ValueError, match="INSTANCE_IDS_COUNT must be a number") as info:
        yaml_list({"INSTANCE_IDS_COUNT": count}, "INSTANCE_IDS")
    assert repr(count) in str(info.value)


# --- split_pairs --------------------------------------------------------------------------------


def test_split_pairs_one_entry_per_line() -> None:
    text = "A=1\nB_2 = two words \nC=x=y\r\n_D="
    assert split_pairs(text) == [("A", "1"), ("B_2", "two words"), ("C", "x=y"), ("_D", "")]


@pytest.mark.parametrize(
    "value",
    [
        "jdbc:sqlserver://db:1433;databaseName=app",
        "feature;BASH_ENV=$(touch /tmp/pwned)",
        "a; B=2",
        "{not a placeholder};#x",
    ],
)
def test_split_pairs_keeps_a_semicolon_in_the_value(value: str) -> None:
    assert split_pairs(f"NAME={value}") == [("NAME", value)]


def test_list_pairs_keep_each_item_whole_and_exact() -> None:
    items = ["JDBC=jdbc:x://db;databaseName=app", " PEM = -----BEGIN-----\nabc\n", "", "# a comment", "E="]
    assert list_pairs(items) == [
        ("JDBC", "jdbc:x://db;databaseName=app"),
        ("PEM", " -----BEGIN-----\nabc\n"),
        ("E", ""),
    ]


def test_list_pairs_refuse_an_item_without_equals_or_with_a_reserved_name() -> None:
    with pytest.raises(ValueError, match="entry 'NOPE' has no '='"):
        list_pairs(["A=1", "NOPE"])
    with pytest.raises(ValueError, match=r"^LD_PRELOAD is reserved: "):
        list_pairs(["LD_PRELOAD=/tmp/x.so"])


def test_an_entry_too_long_to_quote_is_cut_in_the_message() -> None:
    with pytest.raises(ValueError) as info:
        split_pairs("x" * 120_000)
    assert len(str(info.value)) < 200


def test_former_separator_hints_name_the_variable_and_the_entry_it_held() -> None:
    pairs = [("JDBC", "jdbc:x://db:1433;databaseName=app"), ("PLAIN", "a;b"), ("OK", "1")]
    (hint,) = former_separator_hints(pairs)
    assert hint.startswith("VARIABLES: the value of JDBC holds ';databaseName=' and is kept whole")
    assert "put each on its own line" in hint


def test_secrets_in_the_former_semicolon_form_are_refused_by_name() -> None:
    variables = {"AWS_DEFAULT_REGION": "eu-west-1", "INSTANCE_IDS": "i-0123456789abcdef0", "COMMANDS": "true"}
    with pytest.raises(ValidationFailed) as refused:
        load_settings({**variables, "SECRETS": "DB=/deploy/db;API=/deploy/api"}, {})
    (reason,) = refused.value.problems["SECRETS"]
    assert "'/deploy/db;API=/deploy/api' is not a Parameter Store name" in reason


def test_split_pairs_skips_comments_and_blank_entries() -> None:
    text = "# the database\nDB=/deploy/db\n\n  # another comment\n \t\nAPI=/deploy/api\n"
    assert split_pairs(text) == [("DB", "/deploy/db"), ("API", "/deploy/api")]


def test_split_pairs_keeps_hash_inside_a_value() -> None:
    assert split_pairs("COLOR=#ff0000") == [("COLOR", "#ff0000")]


def test_split_pairs_entry_without_equals() -> None:
    with pytest.raises(ValueError, match="has no '='") as info:
        split_pairs("A=1\nDB /deploy/db")
    assert "'DB /deploy/db'" in str(info.value)
    assert "NAME=value" in str(info.value)


@pytest.mark.parametrize("name", ["1ABC", "MY-VAR", "MY VAR", "", "é"])
def test_split_pairs_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid environment variable name") as info:
        split_pairs(f"{name}=value")
    assert repr(name) in str(info.value)


def random_pairs(rng: random.Random) -> list[tuple[str, str]]:
    """NAME=value pairs a user could write: values without newlines, already stripped."""
    value_chars = string.ascii_letters + string.digits + " =#$'\"{}/\\:,.-_;\tü€"
    pairs = []
    for _ in range(rng.randint(0, 6)):
        name = rng.choice(string.ascii_letters + "_") + "".join(
            rng.choices(string.ascii_letters + string.digits + "_", k=rng.randint(0, 10))
        )
        value = "".join(rng.choices(value_chars, k=rng.randint(0, 15))).strip()
        if reserved_reason(name) is None:  # PATH, HOME, LD_... are refused: see test_unit_env_names.py
            pairs.append((name, value))
    return pairs


@pytest.mark.parametrize("separator", ["\n", " \n", "\r\n", "\n\n"])
def test_split_pairs_round_trip(separator: str) -> None:
    rng = random.Random(f"split_pairs{separator}")
    for _ in range(200):
        pairs = random_pairs(rng)
        text = separator.join(f"{name}={value}" for name, value in pairs)
        assert split_pairs(text) == pairs, text


# --- expand_environment -------------------------------------------------------------------------


def test_expand_environment_replaces_every_occurrence() -> None:
    assert expand_environment("/deploy/{environment}/db-{environment}", "prod") == "/deploy/prod/db-prod"


def test_expand_environment_without_placeholder_is_unchanged() -> None:
    assert expand_environment("/deploy/static", None) == "/deploy/static"


def test_expand_environment_unknown_placeholder_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown placeholder \{branch\}, \{env\}") as info:
        expand_environment("/deploy/{env}/{branch}/{environment}", "prod")
    assert "only {environment} is supported" in str(info.value)


@pytest.mark.parametrize("environment", [None, ""])
def test_expand_environment_needs_an_environment(environment: str | None) -> None:
    with pytest.raises(ValueError, match="no environment is known") as info:
        expand_environment("arn:aws:iam::123456789012:role/deploy-{environment}", environment)
    assert "ENVIRONMENT" in str(info.value)
    assert "deployment step" in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{environment}}", "{environment}"),
        ("${environment}", "${environment}"),  # shell syntax, not the placeholder
        ("{environment}-{{environment}}", "prod-{environment}"),
    ],
)
def test_expand_environment_escape_and_shell_syntax(text: str, expected: str) -> None:
    assert expand_environment(text, "prod") == expected


def test_expand_environment_can_keep_other_braces() -> None:
    text = '{"a": 1} {date} {{ .Values }} {environment}'
    assert expand_environment(text, "prod", others="keep") == '{"a": 1} {date} {{ .Values }} prod'
    with pytest.raises(ValueError, match="no environment is known"):
        expand_environment("{date} {environment}", None, others="keep")


# --- messages: values cut ------------------------------------------------------------------------


def test_shown_cuts_long_values_and_gives_their_length() -> None:
    assert shown("short") == "'short'"
    long = shown("x" * 120_000)
    assert len(long) < 110
    assert long.endswith("…' (120,000 characters)")


def test_listed_gives_at_most_a_few_values() -> None:
    assert listed(["a", "b"]) == "'a', 'b'"
    assert listed([f"i-{n}" for n in range(6000)], limit=3) == "'i-0', 'i-1', 'i-2' and 5,997 more"
    assert listed(["A", "B"], quote=False) == "A, B"


# --- tag keys and parameter references -------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["Service", "环境", "Café au lait", "aws:cloudformation:stack-name", "a_b.c/d-e@f", "٣"]
)
def test_tag_keys_ssm_can_target(key: str) -> None:
    assert tag_key_problem(key) is None


@pytest.mark.parametrize("key", ["a+b", "a#b", "a*", "", "k" * 129, "tab\tkey"])
def test_tag_keys_ssm_cannot_target(key: str) -> None:
    assert tag_key_problem(key)


@pytest.mark.parametrize(
    "reference",
    [
        "/a/b",
        "flat",
        "/a/b:1",
        "/a/b:Live_2.x-y",
        "arn:aws:ssm:eu-west-1:123456789012:parameter/a/b",
        "arn:aws-cn:ssm:cn-north-1:123456789012:parameter/flat:9",
        "/aws/reference/secretsmanager/prod/token",
    ],
)
def test_parameter_references_accepted(reference: str) -> None:
    assert PARAMETER_REFERENCE.fullmatch(reference)


@pytest.mark.parametrize(
    "reference",
    [
        "/a//b",
        "/a/b/",
        "a b",
        "/a:b:c",
        "/a:",
        "/a:9x",
        "/a:awsx",
        "/a:ssm",
        "arn:aws:ssm:eu-west-1:1:parameter/a",
        "/é",
    ],
)
def test_parameter_references_refused(reference: str) -> None:
    assert not PARAMETER_REFERENCE.fullmatch(reference)
