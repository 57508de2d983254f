"""pipe.config.build_context: the Bitbucket build context, the command Comment and the STS session name."""

from __future__ import annotations

import random
import re
import string

import pytest

from pipe.config.build_context import BuildContext, cut
from pipe.limits import COMMENT_LIMIT, SESSION_NAME_LIMIT

SESSION_NAME = re.compile(r"[A-Za-z0-9_+=,.@-]+")


def context(repo: str = "team/app", build_number: str = "42", commit: str = "0123456789abcdef") -> BuildContext:
    return BuildContext(
        repo=repo,
        build_number=build_number,
        commit=commit,
        branch="main",
        triggerer="",
        deployment_environment="",
    )


def test_limits_match_aws() -> None:
    assert COMMENT_LIMIT == 100
    assert SESSION_NAME_LIMIT == 64


# --- from_env -----------------------------------------------------------------------------------


def test_from_env_reads_bitbucket_variables() -> None:
    build = BuildContext.from_env(
        {
            "BITBUCKET_REPO_FULL_NAME": "team/app",
            "BITBUCKET_REPO_SLUG": "ignored-slug",
            "BITBUCKET_BUILD_NUMBER": "1234",
            "BITBUCKET_COMMIT": "abcdef0123456789",
            "BITBUCKET_BRANCH": "release/1.2",
            "BITBUCKET_TAG": "v1.2.0",
            "BITBUCKET_STEP_TRIGGERER_UUID": "{uuid}",
            "BITBUCKET_DEPLOYMENT_ENVIRONMENT": "production",
        }
    )
    assert build == BuildContext(
        repo="team/app",
        build_number="1234",
        commit="abcdef0123456789",
        branch="release/1.2",
        triggerer="{uuid}",
        deployment_environment="production",
    )
    assert build.short_commit == "abcdef0"


def test_from_env_fallbacks() -> None:
    build = BuildContext.from_env({"BITBUCKET_REPO_SLUG": "app", "BITBUCKET_TAG": "v2"})
    assert build.repo == "app"
    assert build.branch == "v2"
    assert build.build_number == "0"
    assert build.commit == ""
    assert build.short_commit == ""
    assert build.deployment_environment == ""


def test_from_empty_env() -> None:
    build = BuildContext.from_env({})
    assert build.repo == "local"
    assert build.default_comment() == "ssm-deploy local#0"
    assert build.session_name() == "ssm-deploy-local-0"


# --- default_comment ----------------------------------------------------------------------------


def test_default_comment_has_repo_build_and_short_commit() -> None:
    assert context().default_comment() == "ssm-deploy team/app#42 0123456"


def test_default_comment_without_commit() -> None:
    assert context(commit="").default_comment() == "ssm-deploy team/app#42"


def test_default_comment_for_very_long_repo_fits_the_limit() -> None:
    comment = context(repo="workspace/" + "r" * 500).default_comment()
    assert len(comment) == COMMENT_LIMIT
    assert comment.startswith("ssm-deploy workspace/rrr")
    assert "…#" in comment  # the repository is shortened; the build number and commit stay


# --- session_name -------------------------------------------------------------------------------


def test_session_name_uses_repository_slug_and_build() -> None:
    assert context().session_name() == "ssm-deploy-app-42"


def test_session_name_for_very_long_repo() -> None:
    name = context(repo="team/" + "a" * 200, build_number="987654").session_name()
    assert len(name) == SESSION_NAME_LIMIT
    assert SESSION_NAME.fullmatch(name)
    assert name.startswith("ssm-deploy-aaaa")
    assert name.endswith("aaa-987654")


def test_session_name_replaces_characters_sts_refuses() -> None:
    name = context(repo="team/My Repo (ü)!#~", build_number="7").session_name()
    assert SESSION_NAME.fullmatch(name), name
    assert name == "ssm-deploy-My-Repo--------7"


def test_session_name_keeps_allowed_punctuation() -> None:
    assert context(repo="t/a_b+c=d,e.f@g-h").session_name() == "ssm-deploy-a_b+c=d,e.f@g-h-42"


ANY_TEXT = string.printable + "üéß€—…/ \u00a0\u2028"


def random_text(rng: random.Random, longest: int) -> str:
    return "".join(rng.choices(ANY_TEXT, k=rng.randint(0, longest)))


def test_session_name_always_valid_for_sts() -> None:
    rng = random.Random("session_name")
    for _ in range(500):
        build_number = str(rng.randint(0, 10 ** rng.randint(1, 12)))
        name = context(repo=random_text(rng, 300), build_number=build_number).session_name()
        assert 2 <= len(name) <= SESSION_NAME_LIMIT, name
        assert SESSION_NAME.fullmatch(name), name
        assert name.endswith(f"-{build_number}"), name
        assert name.startswith("ssm-deploy-"), name


def test_default_comment_always_within_limit() -> None:
    rng = random.Random("default_comment")
    for _ in range(500):
        build = context(repo=random_text(rng, 300), build_number=random_text(rng, 40), commit=random_text(rng, 60))
        assert len(build.default_comment()) <= COMMENT_LIMIT


# --- cut ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [("abcdef", 6, "abcdef"), ("abcdefg", 6, "abcde…"), ("", 3, ""), ("abcd", 1, "…")],
)
def test_cut(text: str, limit: int, expected: str) -> None:
    assert cut(text, limit) == expected


def test_default_comment_keeps_build_and_commit_when_the_repo_name_is_long() -> None:
    context = BuildContext(
        repo="a-very-long-workspace-name/" + "r" * 120,
        build_number="1234",
        commit="abcdef0123456789",
        branch="main",
        triggerer="",
        deployment_environment="",
    )
    comment = context.default_comment()
    assert len(comment) == 100
    assert comment.endswith("…#1234 abcdef0")
