"""What the release steps leave of SendCommand's bound for the team's own commands, and that the text
sent to save room is the same program as the text in the pipe."""

from __future__ import annotations

import ast
import base64
import uuid
import zlib
from pathlib import Path

from pipe.limits import MAX_SCRIPT_BYTES
from pipe.plan.script import build_script, script_bytes
from pipe.release import contents
from pipe.release.remote import ReleasePlan, install_body, packed_unpack_program, stage_body, unpack_program
from unit.unit_support import make_settings

ROOM_FOR_THE_TEAM = 8 * 1024  # COMMANDS, ACTIVATE_COMMANDS and the exported names, together


def _plan(commands: str, activate: str) -> ReleasePlan:
    return ReleasePlan(
        app_dir="/srv/web-api",
        release_id="000042-0123456",
        artifact_url="s3://artifacts/web-api/" + "0" * 64 + ".tar.gz",
        sha256="0" * 64,
        archive_format="tar.gz",
        region="eu-west-1",
        commands=commands,
        activate_commands=activate,
        env_names=("DB_PASSWORD", "API_KEY", "NODE_ENV"),
    )


def test_a_release_leaves_8_kib_of_the_script_for_the_teams_commands() -> None:
    half = "x" * (ROOM_FOR_THE_TEAM // 2)
    run_id = str(uuid.uuid4())  # as the plan makes it
    for body in (install_body(_plan(half, half), True, run_id), stage_body(_plan(half, half), run_id)):
        assert script_bytes(build_script(make_settings(), body)) <= MAX_SCRIPT_BYTES


def test_the_unpack_program_as_sent_is_contents_py_without_its_docstrings() -> None:
    tree = ast.parse(Path(contents.__file__).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef) and ast.get_docstring(node) is not None:
            node.body = node.body[1:] or [ast.Pass()]
    assert ast.dump(ast.parse(unpack_program())) == ast.dump(tree)


def test_the_script_carries_the_unpack_program_compressed_and_it_decompresses_to_the_text() -> None:
    body = install_body(_plan("", ""))
    assert f"ssm_deploy_unpack={packed_unpack_program()}\n" in body
    assert zlib.decompress(base64.b64decode(packed_unpack_program())).decode() == unpack_program()
    assert "def problems(" not in body  # the text itself is not sent beside it
