"""The control script of the users' app started outside pm2 (``instance_app.py``)."""

from __future__ import annotations

from support import wait_until

from standin import StandIn
from standin.instance_app import APP_CTL, APP_DIR

# A process that has exited and that no one reaps: the subshell's parent becomes ``sleep 600`` (exec),
# which never waits for it. It exits only once the test has seen the exec done (``go``): had it exited
# before, bash would have reaped it itself.
HOLD_A_ZOMBIE = f"""
rm -f {APP_DIR}/go
bash -c '(until [ -e {APP_DIR}/go ]; do sleep 0.05; done) & echo $! > {APP_DIR}/pid; exec sleep 600' >/dev/null 2>&1 &
echo $!
"""


def test_stop_counts_an_exited_app_not_yet_reaped_as_stopped(standin: StandIn) -> None:
    """An app started by an earlier invocation is an orphan: its exit is reaped by the machine's
    PID 1, which in a container may take seconds (an EC2 instance's systemd reaps at once). ``stop``
    must not wait for the reap: it finds the zombie stopped at its first look."""
    (instance_id,) = standin.launch(1)
    standin.app_up(instance_id)
    standin.app_up(instance_id, up=False)
    holder = standin.run_on_instance(instance_id, HOLD_A_ZOMBIE).stdout.strip()
    try:
        pid_file = standin.instance_path(instance_id, f"{APP_DIR}/pid")
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", "the pid file")
        zombie = pid_file.read_text().strip()
        exec_done = f"cat /proc/{holder}/comm"
        wait_until(lambda: standin.run_on_instance(instance_id, exec_done).stdout.strip() == "sleep", "the exec")
        standin.instance_path(instance_id, f"{APP_DIR}/go").touch()
        is_zombie = f"sed 's/.*) //' /proc/{zombie}/stat | cut -d ' ' -f 1"
        wait_until(lambda: standin.run_on_instance(instance_id, is_zombie).stdout.strip() == "Z", "the zombie")
        done = standin.run_on_instance(instance_id, f"bash -x {APP_CTL} stop")
        assert done.returncode == 0, done.stderr
        assert "sleep 0.1" not in done.stderr  # it never waited: the first look found it stopped
        assert not pid_file.exists()
        assert standin.run_on_instance(instance_id, is_zombie).stdout.strip() == "Z"  # still not reaped
    finally:
        standin.run_on_instance(instance_id, f"kill {holder}")
