"""An outside attack on the verdict and the audit trail (issue #17, "Done when"), end to end against the
stand-in: what the attack found, each test asserting what should hold. The defects it found are fixed
and their tests pass; the failed re-deploy of the live release, whose status the README now explains,
is checked in test_attack_held.py. Instances are real processes; ``current`` is read on disk and the
app is asked over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e.release_support import A, B, build
from e2e.test_attack_held import ledger_fleet, result, stop_at
from e2e.test_ledger import entries as ledger_entries
from e2e.test_load_balancer import every_target_in_service, make_fleet
from e2e.test_releases import live, release_env
from standin import StandIn
from support import kill_instance_processes, run_pipe, wait_until


def served(standin: StandIn, instance_id: str, port: int) -> str:
    """Ask the app on the instance which version it serves."""
    done = standin.run_on_instance(
        instance_id,
        "python3 -c 'import sys, urllib.request; "
        f'sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:{port}/version.txt", timeout=10).read().decode())'
        "'",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


# A static site served by python3's http.server, started by ACTIVATE_COMMANDS when it does not run
# yet ("start if not running", the recipe the process check exists to catch): at B's activation the
# server of A keeps serving A's files. Two common ways to start it, which the check once did not see.
SERVERS = {
    # cwd is /, the release's physical directory is an argument (as --directory, systemd's
    # WorkingDirectory= resolved, or `node /srv/app/releases/X/server.js` started from elsewhere)
    "directory argument": '(cd / && exec python3 -m http.server {port} --bind 127.0.0.1 --directory "$here")',
    # cwd is the release, no word of the command line is a path (python -m, gunicorn app:app, ...): it
    # listens on a socket, so it is a server of that release
    "module from its directory": '(cd "$here" && exec python3 -m http.server {port} --bind 127.0.0.1)',
}


@pytest.mark.parametrize("how", list(SERVERS), ids=["cwd-elsewhere", "no-path-words"])
def test_a_server_left_serving_the_replaced_release_fails_the_deploy(
    standin: StandIn, tmp_path: Path, bucket: str, service: str, how: str
) -> None:
    (instance_id,) = standin.launch(1)
    port = 18080 + list(SERVERS).index(how)
    start = SERVERS[how].format(port=port)
    activate = (
        'echo "activated $(cat version.txt)"\n'
        "here=$(pwd -P)\n"
        "if [ ! -e /srv/static.pid ]; then\n"
        f"  {start} </dev/null >/dev/null 2>&1 &\n"
        "  echo $! > /srv/static.pid\n"
        f"  for i in $(seq 100); do python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}))' "
        "2>/dev/null && break; sleep 0.1; done\n"
        "fi"
    )

    def env(version: str, number: str) -> dict[str, str]:
        return release_env(
            standin,
            [instance_id],
            tmp_path,
            bucket,
            service,
            ARTIFACT=build(tmp_path, version),
            BITBUCKET_BUILD_NUMBER=number,
            ACTIVATE_COMMANDS=activate,
        )

    try:
        first = run_pipe(env("A", "1"), timeout=300)
        assert first.returncode == 0, first.output
        assert served(standin, instance_id, port) == "A"
        second = run_pipe(env("B", "2"), timeout=300)
        what_serves = served(standin, instance_id, port)
    finally:
        kill_instance_processes(standin, instance_id, "/srv/static.pid")

    # the verdict may not say Deployed while the app serves the release it replaced
    assert (second.returncode, what_serves) != (0, "A"), second.output
    assert second.returncode == 1, second.output
    assert live(standin, instance_id) == "A"


def test_a_stop_while_the_second_batch_drains_records_the_fleet_and_leaves_every_target_in_service(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    fleet = make_fleet(standin, 2, deregistration_delay=600)  # 30 s of draining at the stand-in's scale
    first, second = fleet.ids

    def env(version: str, number: str, **extra: str) -> dict[str, str]:
        return release_env(
            standin,
            fleet.ids,
            tmp_path,
            bucket,
            service,
            ARTIFACT=build(tmp_path, version),
            BITBUCKET_BUILD_NUMBER=number,
            TARGET_GROUPS=fleet.group_name,
            **extra,
        )

    done = run_pipe(env("A", "1", MIN_HEALTHY="0", DRAIN_TIMEOUT="120"), timeout=300)
    assert done.returncode == 0, done.output
    code, output = stop_at(env("B", "2", BATCH_SIZE="1"), "batch 2/2 (1 instance(s)): draining from")

    assert code == 1, output
    assert (live(standin, first), live(standin, second)) == ("B", "A")
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == (B, "stopped"), entry
    assert ledger_fleet(entry) == {first: B, second: A}
    wait_until(lambda: every_target_in_service(standin, fleet), "every target back in service", 120)
    assert f"Lock /deploy-lock/{service}/prod released" in output
    document = result(tmp_path)
    assert next(batch["outcome"] for batch in document["batches"]) == "deployed"
    assert document["fleet"] == {first: B, second: A}
    assert f"{second} runs {A}" in output.rsplit("Now ", 1)[1], output
