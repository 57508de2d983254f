"""Who and what a deploy is for: Bitbucket build context, the command Comment, the STS session name."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pipe.limits import COMMENT_LIMIT, SESSION_NAME_LIMIT


@dataclass(frozen=True)
class BuildContext:
    repo: str
    build_number: str
    commit: str
    branch: str
    triggerer: str
    deployment_environment: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BuildContext:
        raw = env
        # Bitbucket's values are trusted, but a non-UTF-8 byte must not break the comment or the script
        env = {name: value.encode("utf-8", "replace").decode("utf-8") for name, value in raw.items()}
        return cls(
            repo=env.get("BITBUCKET_REPO_FULL_NAME") or env.get("BITBUCKET_REPO_SLUG") or "local",
            build_number=env.get("BITBUCKET_BUILD_NUMBER", "0"),
            commit=env.get("BITBUCKET_COMMIT", ""),
            branch=env.get("BITBUCKET_BRANCH") or env.get("BITBUCKET_TAG", ""),
            triggerer=env.get("BITBUCKET_STEP_TRIGGERER_UUID", ""),
            deployment_environment=env.get("BITBUCKET_DEPLOYMENT_ENVIRONMENT", ""),
        )

    @property
    def url(self) -> str:
        """The build's page in Bitbucket Pipelines; empty outside Bitbucket."""
        if self.repo == "local" or "/" not in self.repo:
            return ""
        return f"https://bitbucket.org/{self.repo}/pipelines/results/{self.build_number}"

    @property
    def short_commit(self) -> str:
        return self.commit[:7]

    def default_comment(self) -> str:
        """``ssm-deploy <repo>#<build> <commit>``; a long repository name is shortened, never the build."""
        suffix = f"#{self.build_number}" + (f" {self.short_commit}" if self.short_commit else "")
        prefix = cut(f"ssm-deploy {self.repo}", COMMENT_LIMIT - len(suffix))
        return cut(prefix + suffix, COMMENT_LIMIT)

    def session_name(self) -> str:
        """``ssm-deploy-<repo>-<build>``; the repository part is shortened first (AWS allows 64)."""
        suffix = _session_safe(f"-{self.build_number}")[:20]
        prefix = _session_safe(f"ssm-deploy-{self.repo.rsplit('/', 1)[-1]}")
        return prefix[: SESSION_NAME_LIMIT - len(suffix)] + suffix


def clone_dir(env: Mapping[str, str]) -> str:
    """Where the build's files are: BITBUCKET_CLONE_DIR, which is also the working directory."""
    return env.get("BITBUCKET_CLONE_DIR") or "."


def _session_safe(text: str) -> str:
    return re.sub(r"[^\w+=,.@-]", "-", text, flags=re.ASCII)


def cut(text: str, limit: int) -> str:
    """Shorten ``text`` to ``limit`` characters, marking the cut with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
