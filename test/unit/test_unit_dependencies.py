"""One-way dependencies that docs/architecture.md states: the plan step loads nothing of the
apply side, and validation loads neither step."""

from __future__ import annotations

import subprocess
import sys

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
