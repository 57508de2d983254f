"""The twenty-first outside attack on the verdict and the audit trail (issue #17, "Done when"), aimed at
the switches log (.ssm-deploy/switches) and the switch back's process check. Each test compares the three
truths: what the instance runs (``current`` on disk, the server asked over HTTP), what the ledger says
is live, and what the step said (exit code, last line, result file); then ACTION: status."""

from __future__ import annotations

import json
from pathlib import Path

from e2e.release_support import A, B
from e2e.test_attack20 import one_instance, systemd_style
from e2e.test_attack_found import served
from e2e.test_ledger import entries as ledger_entries
from e2e.test_releases import APP_DIR, live
from standin import StandIn
from support import kill_instance_processes, run_pipe

# --- the switch back: a server the failed release started through `current` ---------------------------


def test_a_switch_back_names_a_server_the_failed_release_started_through_current(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    port = 18130
    instance_id, env = one_instance(standin, tmp_path, bucket, service)
    try:
        # A runs no server yet; B's activation starts one (`systemctl start web-api`, through current)
        assert run_pipe(env("A", "1"), timeout=300).returncode == 0
        second = run_pipe(
            env(
                "B",
                "2",
                ACTIVATE_COMMANDS=systemd_style(port),
                HEALTHCHECK_COMMANDS='test "$(cat version.txt)" = A',  # B fails its health check
            ),
            timeout=300,
        )
        what_serves = served(standin, instance_id, port)
        result = json.loads((tmp_path / "ssm-deploy-result.json").read_text())
        status = run_pipe(env("B", "3", ACTION="status"), timeout=300)
    finally:
        kill_instance_processes(standin, instance_id, "/srv/web.pid")
        standin.run_on_instance(instance_id, "rm -f /srv/web.pid")

    # the three truths: current says A, the only server serves B (the failed release)
    assert live(standin, instance_id) == "A"
    assert what_serves == "B"
    assert second.returncode == 1, second.output
    assert status.returncode == 1 and f"runs release {B}" in status.output, status.output  # status sees it
    # the step must not say the rollback ended well while B serves: exit 86, the rollback failed
    assert "exit 86" in second.output or "exit code 86" in second.output, second.output
    assert ledger_entries(standin, service)[-1]["status"] != "rolled back"
    assert "the rollback failed" in result["summary"], result["summary"]


# --- an instance upgraded from a pipe that wrote .ssm-deploy/switched only ----------------------------


def test_status_names_a_server_started_before_a_switch_made_by_the_previous_pipe_version(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    port = 18131
    instance_id, env = one_instance(
        standin, tmp_path, bucket, service, ACTIVATE_COMMANDS=systemd_style(port), VERIFY_PROCESSES="false"
    )
    state = f"{APP_DIR}/.ssm-deploy"
    try:
        assert run_pipe(env("A", "1"), timeout=300).returncode == 0
        second = run_pipe(env("B", "2"), timeout=300)
        assert second.returncode == 0, second.output
        # what 2.0.0's ssm_deploy_record left for the same switch: switched (boot id, then seconds since
        # boot), no switches file (its lines are this switch's, rewritten in 2.0.0's form)
        converted = standin.run_on_instance(
            instance_id,
            f"tail -n 1 {state}/switches | awk '{{ print $1; print $2 }}' > {state}/switched"
            f" && rm -f {state}/switches && cat {state}/switched {state}/previous",
        )
        assert converted.returncode == 0 and A in converted.stdout, converted.stdout + converted.stderr
        status = run_pipe(env("B", "3", ACTION="status"), timeout=300)
        what_serves = served(standin, instance_id, port)
    finally:
        kill_instance_processes(standin, instance_id, "/srv/web.pid")
        standin.run_on_instance(instance_id, "rm -f /srv/web.pid")

    # the three truths: current and the ledger say B, the only server serves A
    assert live(standin, instance_id) == "B"
    assert ledger_entries(standin, service)[-1]["status"] == "succeeded"
    assert what_serves == "A"
    assert "No drift" not in status.output, status.output
    assert status.returncode == 1 and f"runs release {A}" in status.output, status.output


def test_going_back_on_an_instance_last_switched_by_the_previous_pipe_version_finds_its_server_current(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    port = 18132
    instance_id, env = one_instance(standin, tmp_path, bucket, service, ACTIVATE_COMMANDS=systemd_style(port))
    state = f"{APP_DIR}/.ssm-deploy"
    try:
        assert run_pipe(env("A", "1", VERIFY_PROCESSES="false"), timeout=300).returncode == 0
        assert run_pipe(env("B", "2", VERIFY_PROCESSES="false"), timeout=300).returncode == 0
        standin.run_on_instance(  # as 2.0.0 left it (above)
            instance_id,
            f"tail -n 1 {state}/switches | awk '{{ print $1; print $2 }}' > {state}/switched && rm -f {state}/switches",
        )
        # back to A, whose server (started before 2.0.0's switch to B) never stopped: it runs A, current again
        going_back = env("A", "3", RELEASE="previous")
        del going_back["ARTIFACT"]
        back = run_pipe(going_back, timeout=300)
        what_serves = served(standin, instance_id, port)
        status = run_pipe(env("A", "4", ACTION="status"), timeout=300)
    finally:
        kill_instance_processes(standin, instance_id, "/srv/web.pid")
        standin.run_on_instance(instance_id, "rm -f /srv/web.pid")

    # the three truths: current, the ledger and the server all say A; no false stale, no false drift
    assert back.returncode == 0, back.output
    assert live(standin, instance_id) == "A" and what_serves == "A"
    assert ledger_entries(standin, service)[-1]["status"] == "succeeded"
    assert status.returncode == 0, status.output
    assert f"No drift: 1 instance(s) run {A}, the live release" in status.output
