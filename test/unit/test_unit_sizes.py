"""The sizes docs/architecture.md promises: no class in pipe/ over 200 lines, no function over 60."""

from __future__ import annotations

import ast
from pathlib import Path

PIPE = Path(__file__).resolve().parents[2] / "pipe"
MAX_LINES = {ast.ClassDef: 200, ast.FunctionDef: 60, ast.AsyncFunctionDef: 60}


def oversized() -> list[str]:
    found = []
    for path in sorted(PIPE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            bound = MAX_LINES.get(type(node))
            if bound is not None and isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > bound:
                    found.append(f"{path.relative_to(PIPE.parent)}: {node.name} has {lines} lines (at most {bound})")
    return found


def test_no_class_over_200_lines_and_no_function_over_60() -> None:
    assert oversized() == []
