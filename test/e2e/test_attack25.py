"""The twenty-fifth outside attack on the verdict (issue #17, "Done when"): a service started through
``current`` by its own manager (systemd's ``ExecStart=/usr/bin/python3 /srv/web-api/current/server.py``,
no ``WorkingDirectory=``, its environment from an ``EnvironmentFile=``), restarted by ACTIVATE_COMMANDS
after the switch. It runs the new release; the values it holds are its manager's, not this deploy's.
Each test compares the three truths: what the instance runs and holds, the ledger, and the step."""

from __future__ import annotations

import uuid
from pathlib import Path

from e2e.test_attack3 import wait_for_port
from e2e.test_attack20 import one_instance
from e2e.test_attack_found import served
from e2e.test_ledger import entries as ledger_entries
from e2e.test_releases import APP_DIR, live
from standin import StandIn
from support import kill_instance_processes, run_pipe

FIRST, ROTATED = "first-db-password-4f1c", "rotated-db-password-9a7e"


def systemd_restart(port: int, refresh: bool) -> str:
    """`systemctl restart web-api`: stop the server if it runs, start it through current from `/`, its
    environment from /srv/web-api.env (EnvironmentFile=); ``refresh`` says whether ACTIVATE_COMMANDS
    writes that file again from this deploy's exports, or only on the first deploy (a stale one)."""
    write = "" if refresh else "[ -e /srv/web-api.env ] || "
    return (
        f"{write}printf 'DB_PASSWORD=%s\\n' \"$DB_PASSWORD\" > /srv/web-api.env\n"
        "if [ -e /srv/web.pid ]; then\n"
        '  old=$(cat /srv/web.pid); kill "$old"\n'
        '  while kill -0 "$old" 2>/dev/null; do sleep 0.1; done\n'
        "fi\n"
        "(cd / && unset DB_PASSWORD && set -a && . /srv/web-api.env"
        f" && exec python3 {APP_DIR}/current/server.py {port})"
        " </dev/null >/dev/null 2>&1 &\n"
        "echo $! > /srv/web.pid\n"
        f"{wait_for_port(port)}"
    )


def rotated_deploy(
    standin: StandIn, tmp_path: Path, bucket: str, service: str, port: int, refresh: bool
) -> tuple[str, int, str, str]:
    """A, then the secret rotated, then B; returns the instance, B's exit code and output, and the
    release its server serves."""
    parameter = f"/attack25/{uuid.uuid4().hex[:8]}/db_password"
    key = standin.create_key("attack 25")
    standin.put_secret(parameter, FIRST, key)
    instance_id, env = one_instance(
        standin,
        tmp_path,
        bucket,
        service,
        ACTIVATE_COMMANDS=systemd_restart(port, refresh),
        SECRETS=f"DB_PASSWORD={parameter}",
    )
    try:
        first = run_pipe(env("A", "1"), timeout=300)
        assert first.returncode == 0, first.output
        standin.put_secret(parameter, ROTATED, key)
        second = run_pipe(env("B", "2"), timeout=300)
        what_serves = served(standin, instance_id, port)
    finally:
        kill_instance_processes(standin, instance_id, "/srv/web.pid")
    assert FIRST not in second.output and ROTATED not in second.output
    return instance_id, second.returncode, second.output, what_serves


def test_a_service_restarted_through_current_with_a_stale_environment_file_fails_the_deploy(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    instance_id, code, output, what_serves = rotated_deploy(standin, tmp_path, bucket, service, 18130, refresh=False)

    # the server B's activation started holds the first password, not the rotated one this deploy read:
    # the deploy must not say Deployed (exit 90 names the process and the variable), and goes back to A
    assert code == 1, output
    assert "Failed (exit 90)" in output, output
    assert "with an old value of DB_PASSWORD" in output, output
    assert live(standin, instance_id) == "A" and what_serves == "A"
    assert ledger_entries(standin, service)[-1]["status"] == "rolled back"


def test_a_service_restarted_through_current_with_this_deploys_values_passes(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    # held: the same service whose EnvironmentFile ACTIVATE_COMMANDS writes again on every deploy
    instance_id, code, output, what_serves = rotated_deploy(standin, tmp_path, bucket, service, 18131, refresh=True)

    assert code == 0, output
    assert live(standin, instance_id) == "B" and what_serves == "B"
    assert ledger_entries(standin, service)[-1]["status"] == "succeeded"
    assert "run release 000002-0123456 with this deploy's values of DB_PASSWORD" in output, output
