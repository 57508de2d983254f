"""The forty-first outside attack on the verdict (issue #17), aimed at VERIFY_PROCESSES and KEEP_RELEASES: a
process started from `/` as `python3 /srv/web-api/releases/<A>/server.py` (a systemd unit's ExecStart= with
the release's path and no WorkingDirectory=) names its release by a word only; once A is pruned, that word's
path is gone, and neither its executable nor its working directory is in a release. It still serves A.
Each test compares the three truths: what the instance runs (``current`` on disk, the app asked over
HTTP), what the ledger says is live, and what the step said (exit code, last line, ``ACTION: status``)."""

from __future__ import annotations

from pathlib import Path

from e2e.test_attack30 import a_then_pruned, instance_with_entry, started_once
from e2e.test_attack_found import served
from e2e.test_ledger import entries as ledger_entries
from e2e.test_releases import APP_DIR, live
from standin import StandIn
from support import kill_instance_processes, run_pipe


def test_a_process_named_by_a_word_in_a_pruned_release_fails_the_deploy_and_status_names_it(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    # the unit written by the first deploy (ExecStart=/usr/bin/python3 /srv/web-api/releases/<A>/server.py),
    # started once and left running by deploys that did not verify the processes (VERIFY_PROCESSES: 'false'
    # then), which pruned A (KEEP_RELEASES: 2). Found before the fix: Deployed (exit 0), status No drift
    port = 18410
    start = f'(cd / && exec python3 "{APP_DIR}/$(readlink {APP_DIR}/current)/server.py" {port})'
    activate = started_once(start, port)
    instance_id, env = instance_with_entry(
        standin, tmp_path, bucket, service, "server.py", ACTIVATE_COMMANDS=activate, KEEP_RELEASES="2"
    )
    try:
        a_then_pruned(standin, instance_id, env)
        pid = standin.run_on_instance(instance_id, "cat /srv/web.pid").stdout.strip()
        process = standin.run_on_instance(instance_id, f"readlink /proc/{pid}/cwd; tr '\\0' ' ' < /proc/{pid}/cmdline")
        assert process.stdout.startswith("/\n"), process.stdout  # started from /: its cwd is in no release
        assert f"{APP_DIR}/releases/000001-" in process.stdout, process.stdout
        status = run_pipe(env("D", "4") | {"ACTION": "status"}, timeout=300)
        last = run_pipe(env("E", "5"), timeout=300)
        what_serves = served(standin, instance_id, port)
    finally:
        kill_instance_processes(standin, instance_id, "/srv/web.pid")

    # a copy of A deleted since it started, as a process whose working directory was in A: the deploy
    # fails, and so does its switch back to D (86: the instance needs a look); the ledger says failed, D live
    assert what_serves == "A"
    assert last.returncode != 0, last.output
    assert "Failed (exit 86)" in last.output, last.output
    assert f"process {pid} (python3 {APP_DIR}/releases/000001-" in last.output, last.output
    assert "runs a copy of release 000001-" in last.output, last.output
    assert "that was deleted since it started, not the 000005-" in last.output, last.output
    assert live(standin, instance_id) == "D"
    assert ledger_entries(standin, service)[-1]["status"] == "failed"
    assert status.returncode == 1, status.output
    assert f"process {pid}" in status.output and "Drift" in status.output, status.output
