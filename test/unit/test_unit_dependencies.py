"""One-way dependencies that docs/architecture.md states: no two modules import each other, the plan
step loads nothing of the apply side, and validation loads neither step."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PIPE = Path(__file__).resolve().parents[2] / "pipe"
APPLY_SIDE = ("pipe.apply",)  # the package: apply itself, run, rollout, phases, send, staging, watch, lock


def loaded_by(module: str) -> set[str]:
    """The pipe modules a fresh interpreter has loaded once it imported ``module``."""
    code = f"import sys, {module}; print('\\n'.join(m for m in sys.modules if m.startswith('pipe')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def test_the_plan_step_loads_nothing_of_the_apply_side() -> None:
    assert not {m for m in loaded_by("pipe.plan.build") if within(m, APPLY_SIDE)}


def test_validation_loads_no_stage_and_no_report() -> None:
    assert not {m for m in loaded_by("pipe.config.settings") if within(m, ("pipe.apply", "pipe.report", "pipe.plan"))}


def test_the_printers_in_report_load_nothing_of_the_watch_stage() -> None:
    # the watch stage prints through report/ (console, summary); report/ never calls back into it
    for module in ("pipe.report.summary", "pipe.report.console", "pipe.report.plan", "pipe.report.sinks"):
        assert not {m for m in loaded_by(module) if within(m, ("pipe.apply.watch",))}, module


def import_graph() -> dict[str, set[str]]:
    """Module -> the pipe modules it imports when it runs (imports for type checking only left out),
    with the packages each import loads on the way (importing ``pipe.plan.script`` runs ``pipe.plan``)."""
    modules = {}
    for path in PIPE.rglob("*.py"):
        name = ".".join(path.relative_to(PIPE.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}

    def visit(name: str, nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pipe":
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    target = full if full in modules else node.module
                    parts = target.split(".")
                    loaded = {".".join(parts[:k]) for k in range(2, len(parts) + 1)}
                    graph[name] |= {m for m in loaded if m in modules and not within(name, (m,))}
            elif isinstance(node, ast.If | ast.Try):
                visit(name, node.body + node.orelse)

    for name, path in modules.items():
        visit(name, ast.parse(path.read_text()).body)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or not (Tarjan's components above one)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component: list[str] = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_two_modules_import_each_other() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"pipe.a": {"pipe.b"}, "pipe.b": {"pipe.c"}, "pipe.c": {"pipe.a"}, "pipe.d": set()}) == [
        ["pipe.a", "pipe.b", "pipe.c"]
    ]
