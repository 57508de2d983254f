"""The thirty-eighth attack on the verdict (issue #17): a worker that is a shell script started through
``current`` (VERIFY_PROCESSES). dash and bash keep the script they run open, and the process check took
a process holding the file it names under ``current`` for a reader following it (`tail -f
current/logs/app.log`), never judged: a started-once worker kept running the replaced release's script
behind a "Deployed" (exit 0), and ``ACTION: status`` did not list it. Fixed: the script a shell runs is
told from a file it follows. Each test compares the three truths: what the instance runs (``current`` on
disk, what the worker writes, /proc), what the ledger says is live, and what the step said."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e.release_support import A, B, build_server
from e2e.test_ledger import entries as ledger_entries
from e2e.test_releases import APP_DIR, live, release_env
from standin import StandIn
from support import kill_instance_processes, run_pipe

WORKER_OUT = "/srv/worker.out"
PID_FILE = "/srv/worker.pid"


def worker_started_once(start: str) -> str:
    """ACTIVATE_COMMANDS that run the worker ``start`` in the background when /srv/worker.pid names none
    yet and leave a running one alone (`systemctl start`), once it wrote its release."""
    return (
        f"if [ ! -e {PID_FILE} ]; then\n"
        f"  {start} </dev/null >/dev/null 2>&1 &\n"
        f"  echo $! > {PID_FILE}\n"
        f"  for i in $(seq 100); do [ -s {WORKER_OUT} ] && break; sleep 0.1; done\n"
        "fi"
    )


def instance_with_worker(
    standin: StandIn, tmp_path: Path, bucket: str, service: str, start: str, pause: str = "sleep 1", **fixed: str
) -> tuple[str, Callable[..., dict[str, str]]]:
    """A fresh instance, and the step's environment for a release whose bin/worker.sh writes the release
    it is every second (what it runs, whatever current says), pausing with ``pause``."""
    (instance_id,) = standin.launch(1)

    def env(version: str, number: str, **extra: str) -> dict[str, str]:
        worker = f"while :; do echo {version} > {WORKER_OUT}; {pause}; done\n"
        artifact = build_server(tmp_path, version, **{"bin/worker.sh": worker})
        variables = {"ACTIVATE_COMMANDS": worker_started_once(start), **fixed, **extra}
        return release_env(
            standin,
            [instance_id],
            tmp_path,
            bucket,
            service,
            ARTIFACT=artifact,
            BITBUCKET_BUILD_NUMBER=number,
            **variables,
        )

    return instance_id, env


def what_the_worker_runs(standin: StandIn, instance_id: str) -> str:
    """The release the worker last wrote, once it wrote again (the file is emptied first)."""
    done = standin.run_on_instance(
        instance_id,
        f": > {WORKER_OUT}; for i in $(seq 50); do [ -s {WORKER_OUT} ] && break; sleep 0.1; done; cat {WORKER_OUT}",
    )
    return done.stdout.strip()


# the pause forks: `sleep 1` is a copy of the shell for the moment before it runs sleep (caught there on a
# loaded machine: the CI run of 2026-12-07), a subshell `(sleep 1; :)` is one for the whole second: a
# child of the shell's own executable started since the switch, which a reload in place (nginx -s reload,
# a gunicorn HUP) leaves and a shell never does
@pytest.mark.parametrize("pause", ["sleep 1", "(sleep 1; :)"], ids=["command", "subshell"])
def test_a_shell_script_worker_started_through_current_and_left_running_fails_the_deploy(
    standin: StandIn, tmp_path: Path, bucket: str, service: str, pause: str
) -> None:
    # systemd: WorkingDirectory=/srv/web-api, ExecStart=/bin/bash current/bin/worker.sh, `systemctl start`
    # (started when it does not run, left running when it does); no socket: a worker
    start = f"(cd {APP_DIR} && exec bash current/bin/worker.sh)"
    instance_id, env = instance_with_worker(standin, tmp_path, bucket, service, start, pause)
    try:
        first = run_pipe(env("A", "1"), timeout=300)
        assert first.returncode == 0, first.output
        second = run_pipe(env("B", "2"), timeout=300)
        runs = what_the_worker_runs(standin, instance_id)
    finally:
        kill_instance_processes(standin, instance_id, PID_FILE)

    # the only worker runs A's script: the step must not say Deployed, nor the ledger succeeded, on B
    assert runs == "A"
    assert second.returncode != 0, second.output
    assert "Failed (exit 90)" in second.output, second.output
    assert f"runs release {A}" in second.output, second.output
    assert live(standin, instance_id) == "A"
    assert ledger_entries(standin, service)[-1]["status"] == "rolled back"


def test_status_names_a_shell_script_worker_started_through_current_before_the_switch(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    # ExecStart=/bin/sh /srv/web-api/current/bin/worker.sh from /, and a deploy that does not verify
    # processes (VERIFY_PROCESSES: 'false'): B is live, the worker still runs A; status is the proof
    start = f"(cd / && exec sh {APP_DIR}/current/bin/worker.sh)"
    instance_id, env = instance_with_worker(standin, tmp_path, bucket, service, start, VERIFY_PROCESSES="false")
    try:
        assert run_pipe(env("A", "1"), timeout=300).returncode == 0
        second = run_pipe(env("B", "2"), timeout=300)
        assert second.returncode == 0, second.output
        status = run_pipe(env("B", "3", ACTION="status"), timeout=300)
        runs = what_the_worker_runs(standin, instance_id)
    finally:
        kill_instance_processes(standin, instance_id, PID_FILE)

    assert runs == "A" and live(standin, instance_id) == "B"
    assert status.returncode == 1, status.output
    assert f"1 process(es) run from another release than current on {instance_id}" in status.output, status.output
    assert any(f"runs release {A}" in line and "Drift: on" in line for line in status.output.splitlines())
    document = json.loads((tmp_path / "ssm-deploy-result.json").read_text())
    assert document["status"] == "drift", document
    assert B in json.dumps(document), document  # the live release stays what current points to
