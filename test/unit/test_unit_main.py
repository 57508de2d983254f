"""pipe.main.main in process: a bug of ours while checking the variables still ends in one clear line."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

import pipe.main
from pipe.config.settings import DeploySettings


def broken_load(variables: Mapping[str, str | None], env: Mapping[str, str], **_: object) -> DeploySettings:
    raise KeyError("a bug of ours " + "x" * 500)


def test_a_bug_in_validation_gives_one_clear_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(pipe.main, "load_settings", broken_load)
    for name, value in {"AWS_DEFAULT_REGION": "eu-west-1", "INSTANCE_IDS": "i-12345678", "COMMANDS": "true"}.items():
        monkeypatch.setenv(name, value)

    code = pipe.main.main()

    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert code == 1
    assert "Traceback" not in output
    failure = [line for line in output.splitlines() if "Unexpected error" in line]
    assert len(failure) == 1
    assert "KeyError while checking the variables" in failure[0]
    assert len(failure[0]) < 300  # the bug's message is cut too
