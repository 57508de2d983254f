"""The forty-fifth outside attack (issue #17): stops at stages earlier attacks left untried, timed to one AWS
call through the stand-in's proxy (``FlakyProxy.on_request``: the pipe gets SIGTERM while that call is under
way, as a Bitbucket stop does at any moment), and live output around a stop. After each stop: the fleet, the
load balancer, the Auto Scaling group, the lock, the result file and the step's last line must agree, and a
re-run must succeed without manual steps."""

from __future__ import annotations

import json
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e.test_attack32 import pieces
from e2e.test_auto_scaling import group_env, make_group
from standin import StandIn
from standin.cloudwatch import AGENT_PIECE_BYTES
from standin.network import FlakyProxy
from support import LivePipe, run_pipe

from pipe.config.lock import LOCK_EXPIRY_SECONDS

HANDLED = 0.5  # seconds the proxy holds the call after the signal: the pipe's handler has run by then


@pytest.fixture
def proxy(standin: StandIn) -> Iterator[FlakyProxy]:
    running = standin.flaky_proxy()
    yield running
    running.stop()


def _stop(holder: list[LivePipe], signum: signal.Signals = signal.SIGTERM) -> Callable[[], None]:
    """A proxy callback: ``signum`` to the pipe while the call it matched is under way."""

    def send() -> None:
        holder[0].signal(signum)
        time.sleep(HANDLED)

    return send


def _last_line(output: str) -> str:
    """The step's last line, without the toolkit's colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", output.rstrip().splitlines()[-1])


def _parameter(standin: StandIn, name: str) -> str | None:
    found = standin.client("ssm").get_parameters(Names=[name])["Parameters"]
    return str(found[0]["Value"]) if found else None


def _sent_to(standin: StandIn, ids: list[str]) -> list[str]:
    """The commands sent to any of ``ids``."""
    return [sent.command_id for sent in standin.sent_commands() if set(sent.runs) & set(ids)]


def _result(clone: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((clone / "ssm-deploy-result.json").read_text())
    return document


# --- the Auto Scaling group's hold, before anything was sent ---


def test_a_stop_while_scaling_is_suspended_resumes_it_and_a_second_stop_during_the_resume_changes_nothing(
    standin: StandIn, proxy: FlakyProxy, tmp_path: Path
) -> None:
    """SIGTERM while SuspendProcesses is under way (before the first batch: nothing sent yet), and SIGTERM again
    while ResumeProcesses is. The group's processes must all be running again (or the last line must name
    the command that resumes them), nothing sent, every target in service, the lock released, the result
    file saying nothing was sent, and a re-run must succeed."""
    group = make_group(standin, 2)
    env = group_env(
        standin, group, AWS_ENDPOINT_URL=proxy.endpoint, COMMANDS="echo deployed", BITBUCKET_CLONE_DIR=str(tmp_path)
    )
    holder: list[LivePipe] = []
    journal = len(standin.load_balancer.changes(group.target_group_arn))
    proxy.on_request("SuspendProcesses", _stop(holder))
    proxy.on_request("ResumeProcesses", _stop(holder))
    holder.append(LivePipe(env))
    run = holder[0].finish(timeout=300)

    assert run.returncode == 1, run.output
    assert "Traceback" not in run.output
    assert standin.suspended_processes(group.name) == set(), run.output
    assert _sent_to(standin, group.ids) == [], run.output
    assert _last_line(run.output).startswith("✖ Received SIGTERM: the pipeline was stopped"), run.output
    assert f"Lock /deploy-lock/{group.name}/_ released" in run.output
    assert _parameter(standin, f"/deploy-lock/{group.name}/_") is None
    states = standin.target_states(group.target_group_arn)
    assert all(states[i] == "healthy" for i in group.ids), states
    # review H6 (fixed): once SuspendProcesses was sent a stop no longer ended the calls before the first drain,
    # so batch 1 was deregistered, then registered back without waiting for it to be healthy
    assert standin.load_balancer.changes(group.target_group_arn)[journal:] == [], run.output
    assert "before batch 1/2 (1 instance(s)) was taken out of the load balancer" in run.output, run.output
    assert _result(tmp_path)["status"] != "succeeded"

    again = run_pipe(group_env(standin, group, COMMANDS="echo deployed"), timeout=300)
    assert again.returncode == 0, again.output


# --- the lock: a stale lock being taken over ---


def _stale_lock(standin: StandIn, name: str) -> None:
    """A lock a killed build left, expired long ago."""
    taken = time.gmtime(time.time() - LOCK_EXPIRY_SECONDS - 600)
    expired = time.gmtime(time.time() - 600)
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    document = {
        "v": 1,
        "id": str(uuid.uuid4()),
        "holder": "arn:aws:sts::123456789012:assumed-role/deploy/killed",
        "repo": "acme/web-api",
        "build": "40",
        "build_url": "https://bitbucket.org/acme/web-api/pipelines/results/40",
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "acquired_at": time.strftime(stamp, taken),
        "renewed_at": time.strftime(stamp, taken),
        "expires_at": time.strftime(stamp, expired),
    }
    standin.client("ssm").put_parameter(Name=name, Value=json.dumps(document), Type="String")


def test_a_stop_while_a_stale_lock_is_taken_over_leaves_no_marker_that_refuses_the_rerun(
    standin: StandIn, proxy: FlakyProxy
) -> None:
    """A killed build's lock, long expired. The deploy takes it over: it claims the takeover marker, and
    SIGTERM comes while it reads the lock again. Nothing is sent; the stopped run must not leave its
    marker behind, or the re-run is refused for minutes as if "another deploy is taking it over"."""
    (instance,) = standin.launch(1)
    service = f"svc-{uuid.uuid4().hex[:8]}"
    name = f"/deploy-lock/{service}/_"
    _stale_lock(standin, name)
    env = standin.pipe_env(INSTANCE_IDS=instance, COMMANDS="echo deployed", LOCK="true", SERVICE=service)
    holder: list[LivePipe] = []
    proxy.on_request("GetParameter", _stop(holder), after=1)  # the first read found it stale; the second
    holder.append(LivePipe({**env, "AWS_ENDPOINT_URL": proxy.endpoint}))
    run = holder[0].finish(timeout=120)

    assert run.returncode == 1, run.output
    assert "Traceback" not in run.output
    assert _last_line(run.output) == (
        "✖ Received SIGTERM: the pipeline was stopped; nothing was sent to the instances."
    ), run.output
    assert _sent_to(standin, [instance]) == [], run.output
    markers = standin.client("ssm").get_parameters_by_path(Path=name)["Parameters"]
    assert markers == [], markers

    again = run_pipe(env, timeout=120)
    assert again.returncode == 0, again.output
    assert "was stale" in again.output and "Taken over" in again.output


# --- live output: a line cut at the agent's 200,000-byte event, around a stop (held) ---

SECRET = "Qz8t-Lm3v-" + uuid.uuid4().hex + "-Rk5n"
BEFORE_CUT = 12  # the secret's first characters that end the agent's first event


def test_a_stop_while_a_cut_line_is_held_prints_it_once_whole_and_masked_with_stderr_in_between(
    standin: StandIn,
) -> None:
    """Held. COMMANDS print a stderr line, then one stdout line cut by the agent's 200,000-byte event inside
    the secret, with no line break, and wait: the stop cancels the command, the agent uploads the line's
    pieces as the process dies, and the pipe (which holds the first piece for the next) must print the
    line once, whole, the value masked, the stderr line once, and no piece of the secret."""
    environment = f"a45{uuid.uuid4().hex[:8]}"
    standin.put_secret(f"/deploy/{environment}/token", SECRET, standin.create_key(f"a45 {environment}"))
    (instance_id,) = standin.launch(1)
    zeros = AGENT_PIECE_BYTES - BEFORE_CUT
    commands = f"echo 'before-the-cut' >&2\nprintf '%0{zeros}d' 0\nprintf '%s tail' \"$API_TOKEN\"\nsleep 600"
    env = standin.pipe_env(
        ENVIRONMENT=environment,
        INSTANCE_IDS=instance_id,
        SECRETS=f"API_TOKEN=/deploy/{environment}/token",
        COMMANDS=commands,
    )
    pipe = LivePipe(env)
    pipe.wait_for_line("before-the-cut", timeout=120)
    pipe.signal(signal.SIGTERM)
    pipe.signal(signal.SIGTERM)  # twice, as an impatient user does
    run = pipe.finish(timeout=180)

    assert run.returncode == 1, run.output
    assert "Traceback" not in run.output
    assert pieces(SECRET, run.output) == [] and pieces(SECRET[::-1], run.output[::-1]) == []
    shown = [line for line in run.output.splitlines() if line.endswith("**** tail")]
    assert len(shown) == 1 and f"{'0' * 1000}****" in shown[0], "the line shows once, whole, the value masked"
    assert len([line for line in run.output.splitlines() if line.endswith("[stderr] before-the-cut")]) == 1
    assert "Received SIGTERM: the pipeline was stopped" in _last_line(run.output)
