"""pipe.main.main in process: a bug of ours while checking the variables still ends in one clear line.
And the entry point's exit, in a process of its own."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping

import pytest
from support import PIPE

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


def test_the_entry_point_exits_without_collecting_every_object_still_alive() -> None:
    """The interpreter's garbage collection at exit walks every object (botocore's models): the pipe
    freezes them first, so its process ends as soon as its work does. Seen from an atexit handler,
    which runs after the entry point's SystemExit and before that collection."""
    probe = (
        "import atexit, gc, runpy, sys\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count(), flush=True))\n"
        f"sys.argv = [{str(PIPE)!r}]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1"},  # no variables: validation fails, exit 1
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 1, done.stdout + done.stderr
    assert "Validation errors" in done.stdout + done.stderr
    frozen = [int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("frozen ")]
    assert frozen and frozen[0] > 10_000  # every object of the run, not collected at exit
