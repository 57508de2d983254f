"""``pipe.main.main()``, the real entry point, against the local AWS stand-in with generated
variable sets (``spec/strategies.py``): a refusal prints ``Validation errors:`` with ``VAR:`` /
``- reason`` lines naming the bad variables, and nothing is ever sent.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from spec.strategies import (
    KEY_PAIR,
    NAMES,
    Case,
    check_problems,
    check_refusal_names,
    e2e_cases,
)
from standin import StandIn

from pipe.main import main

ANSI = re.compile(r"\x1b\[[0-9;]*m")
QUIET = ("botocore", "boto3", "urllib3", "s3transfer", "ssm-deploy")


@contextlib.contextmanager
def preserved_logging() -> Iterator[None]:
    """main() re-points the root logger's handlers, adds filters and sets levels: undo all of it."""
    root = logging.getLogger()
    saved_level, saved_handlers, saved_filters = root.level, list(root.handlers), list(root.filters)
    saved_streams = {h: h.stream for h in root.handlers if isinstance(h, logging.StreamHandler)}
    saved_handler_filters = {h: list(h.filters) for h in root.handlers}
    saved_levels = {name: logging.getLogger(name).level for name in QUIET}
    try:
        yield
    finally:
        root.setLevel(saved_level)
        root.handlers[:] = saved_handlers
        root.filters[:] = saved_filters
        for handler, stream in saved_streams.items():
            handler.setStream(stream)
        for any_handler, filters in saved_handler_filters.items():
            any_handler.filters[:] = filters
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)


class StandInRecords(logging.Filter):
    """The stand-in serves from threads of this process: keep its server's log out of the pipe's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(("werkzeug", "moto", "flask", "standin"))


@dataclass
class Run:
    code: object
    output: str


def run_main(env: dict[str, str]) -> Run:
    """main() in-process with exactly ``env`` as os.environ; stdout, stderr and logging captured.

    It runs in a temporary directory that is also BITBUCKET_CLONE_DIR: the pipe writes RESULT_FILE there.
    """
    buffer = io.StringIO()
    with (
        tempfile.TemporaryDirectory(prefix="ssm-deploy-property-") as clone,
        contextlib.chdir(clone),
        preserved_logging(),
        mock.patch.dict(os.environ, {**env, "BITBUCKET_CLONE_DIR": clone}, clear=True),
        contextlib.redirect_stdout(buffer),
        contextlib.redirect_stderr(buffer),
    ):
        for handler in logging.getLogger().handlers:
            handler.addFilter(StandInRecords())  # removed again by preserved_logging()
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(buffer)  # also what is logged before main() re-points the handler
        try:
            code: object = main()
        except SystemExit as exit_:
            code = exit_.code
    return Run(code, ANSI.sub("", buffer.getvalue()))


def validation_errors(output: str) -> dict[str, list[str]]:
    """The ``VAR:`` / ``- reason`` lines after ``Validation errors:``."""
    found: dict[str, list[str]] = {}
    lines = output.split("Validation errors:", 1)[1].splitlines()
    current: str | None = None
    for line in lines:
        header = re.fullmatch(r"([A-Z][A-Z0-9_]*):", line.strip())
        if header:
            current = header.group(1)
            found.setdefault(current, [])
        elif line.startswith("- ") and current is not None:
            found[current].append(line[2:])
    return found


def pipe_environment(standin: StandIn, case: Case) -> dict[str, str]:
    env = standin.pipe_env()
    for name in NAMES:  # the case decides every pipe variable, keys included
        env.pop(name, None)
    env["AWS_EC2_METADATA_DISABLED"] = "true"  # never wait for an instance metadata service
    if not set(KEY_PAIR) & (set(case.variables) | set(case.bad)):
        env.update(
            AWS_ACCESS_KEY_ID=standin.pipe_env()["AWS_ACCESS_KEY_ID"],
            AWS_SECRET_ACCESS_KEY=standin.pipe_env()["AWS_SECRET_ACCESS_KEY"],
        )
    env.update(case.env)
    env.update(case.variables)
    return env


def commands_for(standin: StandIn, instance_ids: list[str]) -> int:
    ssm = standin.client("ssm")

    def count(**where: str) -> int:  # every page: one page holds at most 50, and a session sends hundreds
        return sum(len(page["Commands"]) for page in ssm.get_paginator("list_commands").paginate(**where))

    return count() + sum(count(InstanceId=i) for i in instance_ids[:3])


@pytest.mark.slow
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=e2e_cases())
def test_main_refuses_by_name_and_sends_nothing(standin: StandIn, case: Case) -> None:
    env = pipe_environment(standin, case)
    ids = case.instance_ids
    sent_before, listed_before = len(standin.sent_commands()), commands_for(standin, ids)
    sessions_before = len(standin.issued_credentials())

    run = run_main(env)
    event("refused by validation" if "Validation errors:" in run.output else "refused after validation")
    for name, kind in case.bad.items():
        event(f"bad {kind}: {name}")

    assert run.code in (0, 1)
    assert "Traceback" not in run.output, run.output[-3000:]
    assert "Unexpected error" not in run.output, run.output[-3000:]
    assert run.code == 1, "nothing exists to deploy to: the pipe must fail"
    assert len(standin.sent_commands()) == sent_before, "a command was sent"
    assert commands_for(standin, ids) == listed_before, "a command was sent"
    if case.bad:
        assert "Validation errors:" in run.output, run.output[-3000:]
        problems = validation_errors(run.output)
        check_problems(problems)
        check_refusal_names(case, set(problems))
        assert len(standin.issued_credentials()) == sessions_before, "a role was assumed before validation ended"
    else:
        assert "Validation errors" not in run.output, run.output[-3000:]
        refused = re.search(r"✖ ([A-Z][A-Z0-9_]*): nothing was sent", run.output)
        assert refused and refused.group(1) in NAMES, run.output[-3000:]
