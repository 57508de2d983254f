"""VERIFY_PROCESSES: after ACTIVATE_COMMANDS the release script reads /proc and fails the instance (90,
switched back) when a process still runs a replaced release or lacks a value this deploy exported.

The "service" here is a shell loop started by ACTIVATE_COMMANDS from ``current`` with a path under
APP_DIR among its arguments, as pm2 runs ``node /srv/web-api/current/server.js``; test/e2e/
test_proof_of_serving.py does the same with real pm2. Reading /proc/<pid>/environ needs root."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipe.model import SecretRef
from pipe.release.remote import (
    ReleaseExit,
    current_at_start,
    current_report,
    install_body,
    switch_back_body,
    verified_after,
)
from unit.release_support import ACTIVATE, SHELLS, A, B, Box, is_root, open_temp_dir

pytestmark = pytest.mark.skipif(not is_root(), reason="reading other processes' /proc entries needs root")

SECRET_CORE = "v3rify-Secret-4c1d"  # a leak shows up as this
SECRET = SECRET_CORE + "-'\"$(id)-\\n;|&"
OLD_CORE = "old-Secret-8e2f"
PARAMETER = "/deploy/prod/db-password"
# the check's wait for a replaced process to go, shortened from the pipe's 10 s: every process these
# tests stop goes at once (a SIGTERM'd shell loop), and the failing cases wait it out in full
GRACE = 4

# A long-running process of the live release: cwd is the release (physical), and an argument is a
# path under APP_DIR (its $0), like pm2's `node /srv/web-api/current/server.js`.
START = """\
sh -c 'echo $$ >> "$OUT/pids"; while :; do sleep 1; done' "$PWD/bin/start.sh" </dev/null >/dev/null 2>&1 &
"""
# the stale recipe: the service is started once and never restarted, whatever `current` says
STARTED_ONCE = (
    ACTIVATE + 'if ! [ -f "$OUT/pids" ] || ! kill -0 "$(tail -n 1 "$OUT/pids")" 2>/dev/null; then\n' + START + "fi\n"
)
# the working recipe: stop the previous one, start from `current`
RESTARTED = ACTIVATE + 'if [ -f "$OUT/pids" ]; then kill "$(tail -n 1 "$OUT/pids")" 2>/dev/null; fi\n' + START


@pytest.fixture
def box() -> Iterator[Box]:
    for root in open_temp_dir():
        made = Box(root)
        try:
            yield made
        finally:
            _stop_services(made)


def _stop_services(box: Box) -> None:
    pids = [box.out / "pids", box.out / "foreign-pids"]
    for line in [pid for file in pids if file.exists() for pid in file.read_text().split()]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line), signal.SIGKILL)


def _service_pids(box: Box) -> list[int]:
    return [int(line) for line in (box.out / "pids").read_text().split()]


def _install(box: Box, release: str, activate: str, shell: str = SHELLS[0], **changes: object) -> tuple[int, str]:
    if not (box.root / "params" / PARAMETER.replace("/", "_")).exists():
        box.store_parameter(PARAMETER, SECRET)
    changes.setdefault("verify_grace", GRACE)
    plan = box.plan(release, box.release_artifact(release), activate_commands=activate, **changes)
    run = box.run(install_body(plan), shell, secrets=(SecretRef("DB_PASSWORD", PARAMETER),))
    return run.code, run.stdout + run.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_a_process_left_on_the_replaced_release_fails_with_90_and_switches_back(box: Box, shell: str) -> None:
    box.store_parameter(PARAMETER, SECRET)
    code, output = _install(box, A, STARTED_ONCE, shell)
    assert code == 0, output
    [pid] = _service_pids(box)

    code, output = _install(box, B, STARTED_ONCE, shell)

    assert code == ReleaseExit.STALE_PROCESS, output
    assert f"process {pid} (sh -c " in output  # the process, with its command
    assert f"runs release {A}, not {B}" in output
    assert f"rolled back to {A}, whose activation ran again and succeeded" in output
    assert f"set cwd: '{box.app_dir}/current' in the ecosystem file and list every variable the app reads" in output
    assert "`pm2 delete <name>` once" in output
    assert box.current() == f"releases/{A}"
    assert box.observed("activations") == [A, B, A]  # activated again after the switch back
    assert box.history() == [A, B, A]
    assert SECRET_CORE not in output


def test_a_process_only_the_failed_release_started_fails_the_switch_back_with_86_and_the_pm2_fix(box: Box) -> None:
    """B's activation starts a process A's does not stop (a pm2 app only B's ecosystem file lists): the
    switch back to A leaves it on B, exits 86 and says how to get rid of it."""
    box.store_parameter(PARAMETER, SECRET)
    code, output = _install(box, A, ACTIVATE)
    assert code == 0, output
    code, output = _install(box, B, STARTED_ONCE)
    assert code == 0, output
    [pid] = _service_pids(box)

    run = box.run(switch_back_body(box.plan(B, box.release_artifact(B), verify_grace=GRACE), A))

    assert run.code == ReleaseExit.ACTIVATION_FAILED_ROLLBACK_FAILED, run.stdout + run.stderr
    assert f"process {pid} (sh -c " in run.stderr and f"runs release {B}, not {A}" in run.stderr
    assert "this instance needs attention (stop that process); for pm2:" in run.stderr
    assert "renamed, or no longer in the ecosystem file" in run.stderr
    assert box.current() == f"releases/{A}"


def test_a_switch_back_with_nothing_to_switch_still_finds_a_process_of_the_failed_release(box: Box) -> None:
    """A deploy script cut short (EXECUTION_TIMEOUT) after its own switch back to A, before its check: current
    is on A, a process of B still runs. The pipe's switch back has nothing to switch, and must not call the
    instance back on A."""
    box.store_parameter(PARAMETER, SECRET)
    assert _install(box, A, ACTIVATE)[0] == 0
    assert _install(box, B, STARTED_ONCE)[0] == 0
    [pid] = _service_pids(box)
    (box.app_dir / "current.tmp").symlink_to(f"releases/{A}")
    (box.app_dir / "current.tmp").replace(box.app_dir / "current")  # the script's own switch back, then killed

    run = box.run(switch_back_body(box.plan(B, box.release_artifact(B), verify_grace=GRACE), A))

    assert run.code == ReleaseExit.ACTIVATION_FAILED_ROLLBACK_FAILED, run.stdout + run.stderr
    assert "nothing to switch back" in run.stdout
    assert f"process {pid} (sh -c " in run.stderr and f"runs release {B}, not {A}" in run.stderr
    assert box.current() == f"releases/{A}"


def test_processes_that_follow_current_pass(box: Box) -> None:
    box.store_parameter(PARAMETER, SECRET)
    for release in (A, B):
        code, output = _install(box, release, RESTARTED, env_names=("DB_PASSWORD", "OUT"))
        assert code == 0, output
    assert box.current() == f"releases/{B}"
    pid = _service_pids(box)[-1]
    assert Path(f"/proc/{pid}/cwd").resolve() == box.app_dir / "releases" / B
    assert (
        f"ssm-deploy: processes verified: none runs a replaced release; process(es) {pid} run release {B} "
        "with this deploy's values of DB_PASSWORD OUT"
    ) in output


@pytest.mark.parametrize(
    ("pin", "says"),
    [
        (f"DB_PASSWORD={OLD_CORE}; export DB_PASSWORD", "with an old value of DB_PASSWORD, not the one this deploy"),
        ("unset DB_PASSWORD", "without DB_PASSWORD, which this deploy exported"),
    ],
)
def test_a_process_of_the_new_release_without_the_exported_value_fails_naming_only_the_name(
    box: Box, pin: str, says: str
) -> None:
    box.store_parameter(PARAMETER, OLD_CORE)
    code, output = _install(box, A, RESTARTED, env_names=("DB_PASSWORD", "OUT"))
    assert code == 0, output
    box.store_parameter(PARAMETER, SECRET)  # rotated: B's deploy exports the new value
    # the service keeps (or loses) the variable, as a pm2 env block without it does
    pinned = ACTIVATE + 'if [ -f "$OUT/pids" ]; then kill "$(tail -n 1 "$OUT/pids")" 2>/dev/null; fi\n'
    pinned += f'if [ "$(cat app.txt)" = {B} ]; then {pin}; fi\n' + START

    code, output = _install(box, B, pinned, env_names=("DB_PASSWORD", "OUT"))

    assert code == ReleaseExit.STALE_PROCESS, output
    assert f"runs release {B} {says}" in output
    assert f"rolled back to {A}" in output
    assert box.current() == f"releases/{A}"
    assert SECRET_CORE not in output and OLD_CORE not in output


# attack 26: a process started with an empty environment (`env -i`) holds none of the values; one whose
# title was written over its environment (perl's $0, puma, nginx) holds nothing that can be compared
EMPTY_ENVIRONMENT = (
    'sh -c \'echo $$ >> "$OUT/pids"; exec env -i sh -c "while :; do /bin/sleep 1; done" "$0"\''
    ' "$PWD/bin/start.sh" </dev/null >/dev/null 2>&1 &\n'
)
# perl listens (a server of the release by its directory), then writes a long $0 over argv and environ
PERL_SERVER = (
    '$s = IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1:0") or die; '
    '$0 = "worker " . ("x" x 3000); sleep 1 while 1'
)
TITLE_OVER_ENVIRONMENT = (
    f'sh -c \'echo $$ >> "$OUT/pids"; exec perl -MIO::Socket::INET -e "$0"\' {shlex.quote(PERL_SERVER)}'
    " </dev/null >/dev/null 2>&1 &\n"
)


@pytest.mark.skipif(shutil.which("perl") is None, reason="perl writes its title over its environment")
def test_an_empty_environment_lacks_every_value_and_a_title_written_over_it_is_not_compared(box: Box) -> None:
    box.store_parameter(PARAMETER, SECRET)
    code, output = _install(box, A, ACTIVATE + EMPTY_ENVIRONMENT, env_names=("DB_PASSWORD",))

    assert code == ReleaseExit.STALE_PROCESS, output
    assert f"runs release {A} without DB_PASSWORD, which this deploy exported" in output
    _stop_services(box)

    code, output = _install(box, B, ACTIVATE + TITLE_OVER_ENVIRONMENT, env_names=("DB_PASSWORD",))

    assert code == 0, output
    assert f"run release {B}, values not compared: a process title was written over their environment" in output


@pytest.mark.parametrize("verify", [True, False])
def test_the_health_check_verifies_again_once_it_passed(box: Box, verify: bool) -> None:
    """A process of the replaced release that appeared after the activation (between the deploy and
    the health check) fails the health check with 90; nothing is switched there: the pipe's rollback does."""
    box.store_parameter(PARAMETER, SECRET)
    for release in (A, B):
        code, output = _install(box, release, RESTARTED)
        assert code == 0, output
    stale = START.replace('>> "$OUT/pids"', '>> "$OUT/foreign-pids"')  # not the service: killed after the test
    subprocess.run(["sh", "-c", stale], cwd=box.app_dir / "releases" / A, env=box.env(), check=True, timeout=30)
    plan = box.plan(B, box.release_artifact(B), verify_processes=verify)

    run = box.run(verified_after("exit 0", plan))

    if not verify:
        assert run.code == 0, run.stderr
        return
    assert run.code == ReleaseExit.STALE_PROCESS, run.stdout + run.stderr
    assert f"runs release {A}, not {B}" in run.stderr
    assert "after the health check passed" in run.stderr
    assert box.current() == f"releases/{B}"  # the rollback switches it back, not the check
    assert current_report(run.stdout) == B


def test_a_failed_health_check_is_not_verified_and_keeps_its_exit_code(box: Box) -> None:
    box.store_parameter(PARAMETER, SECRET)
    code, output = _install(box, A, RESTARTED)
    assert code == 0, output

    run = box.run(verified_after("exit 1", box.plan(A, box.release_artifact(A))))

    assert run.code == 1
    assert "processes verified" not in run.stdout


def test_verify_processes_off_lets_a_stale_process_through(box: Box) -> None:
    box.store_parameter(PARAMETER, SECRET)
    for release in (A, B):
        code, output = _install(box, release, STARTED_ONCE, verify_processes=False)
        assert code == 0, output
    assert box.current() == f"releases/{B}"
    [pid] = _service_pids(box)  # still A's code: the trade VERIFY_PROCESSES: 'false' makes
    assert Path(f"/proc/{pid}/cwd").resolve() == box.app_dir / "releases" / A


def test_a_process_in_the_release_directory_without_a_path_argument_is_not_condemned(box: Box) -> None:
    # pm2's daemon: its cwd is the release pm2 was first run in, its code pm2's own
    daemon = START.replace('"$PWD/bin/start.sh"', "pm2-god-daemon-like")
    once = ACTIVATE + 'if ! [ -f "$OUT/pids" ]; then\n' + daemon + "fi\n"
    for release in (A, B):
        code, output = _install(box, release, once)
        assert code == 0, output
    [pid] = _service_pids(box)
    assert Path(f"/proc/{pid}/cwd").resolve() == box.app_dir / "releases" / A
    assert f"processes verified: none runs a replaced release; none runs release {B}" in output


# A server started once from its release's directory whose command line names no path (python's
# http.server serves its cwd; gunicorn app:app, uvicorn main:app likewise). `title` is its argv[0].
SERVER_ONCE = (
    ACTIVATE
    + 'if ! [ -f "$OUT/pids" ]; then\n'
    + "  bash -c 'echo $$ >> \"$OUT/pids\"; exec -a \"$0\" python3 -m http.server 0 --bind 127.0.0.1' '{title}' "
    + "</dev/null >/dev/null 2>&1 &\n"
    + "fi\n"
)


def test_a_server_left_in_the_replaced_release_is_condemned_though_no_word_of_it_is_a_path(box: Box) -> None:
    once = SERVER_ONCE.format(title="python3")
    code, output = _install(box, A, once)
    assert code == 0, output
    [pid] = _service_pids(box)

    code, output = _install(box, B, once)

    assert code == ReleaseExit.STALE_PROCESS, output
    assert f"process {pid} (python3 -m http.server 0 --bind 127.0.0.1) runs release {A}, not {B}" in output
    assert box.current() == f"releases/{A}"


def test_pm2s_daemon_holding_an_apps_port_in_the_release_it_was_first_run_in_is_not_condemned(box: Box) -> None:
    # in cluster mode pm2's daemon is the cluster's primary: it holds the app's listening socket, and
    # its cwd stays where pm2 was first run; it runs pm2's own code, known by its title
    once = SERVER_ONCE.format(title="PM2 v5.4.3: God Daemon (/root/.pm2)")
    for release in (A, B):
        code, output = _install(box, release, once)
        assert code == 0, output
    [pid] = _service_pids(box)
    assert Path(f"/proc/{pid}/cwd").resolve() == box.app_dir / "releases" / A
    assert f"processes verified: none runs a replaced release; none runs release {B}" in output


def test_a_service_that_keeps_starting_short_lived_children_does_not_hold_the_check_for_its_grace(box: Box) -> None:
    # a new `sleep 1` every half second in the release directory: at every look some child is young
    # and names no path under APP_DIR. The check waits for young processes that were there when it
    # began, never for ones born since, so it passes long before this grace (Box.run gives up after
    # 120 s); before, it waited the whole grace
    busy = RESTARTED.replace("while :; do sleep 1; done", "while :; do sleep 1 & sleep 0.5; done")
    assert busy != RESTARTED
    code, output = _install(box, A, busy, verify_grace=600)

    assert code == 0, output
    assert "processes verified: none runs a replaced release" in output


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare for a second mount namespace")
def test_a_process_at_the_same_path_in_another_mount_namespace_is_not_this_app_dirs(box: Box) -> None:
    # a container (or another stand-in instance) whose /srv/web-api/releases/<A> is another directory
    code, output = _install(box, A, RESTARTED)
    assert code == 0, output
    other = box.root / "other-releases"
    (other / A / "bin").mkdir(parents=True)
    (other / A / "bin" / "start.sh").write_text("")
    releases = box.app_dir / "releases"
    inside = (
        f'mount --bind "{other}" "{releases}" && cd "{releases}/{A}" && '
        f'echo $$ > "{box.out}/foreign-pids" && '
        f"exec sh -c 'while :; do sleep 1; done' \"{releases}/{A}/bin/start.sh\""
    )
    subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", inside],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    foreign_pids = box.out / "foreign-pids"
    for _ in range(100):
        if foreign_pids.exists() and foreign_pids.read_text().strip():
            break
        subprocess.run(["sleep", "0.05"], check=True)
    foreign = int(foreign_pids.read_text())
    assert os.readlink(f"/proc/{foreign}/cwd") == f"{releases}/{A}"  # the same path, another directory

    code, output = _install(box, B, RESTARTED)

    assert code == 0, output
    assert box.current() == f"releases/{B}"
    assert f"processes verified: none runs a replaced release; process(es) {_service_pids(box)[-1]} run" in output


def _in_another_mount_namespace(box: Box, inside: str) -> int:
    """Run ``inside`` (sh) in a mount namespace of its own, as a container or another stand-in
    instance runs; the pid it writes to foreign-pids."""
    subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", inside],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    foreign_pids = box.out / "foreign-pids"
    for _ in range(200):
        if foreign_pids.exists() and foreign_pids.read_text().strip():
            return int(foreign_pids.read_text())
        subprocess.run(["sleep", "0.05"], check=True)
    raise AssertionError("the process in the other mount namespace did not start")


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare for a second mount namespace")
def test_a_server_started_through_another_namespaces_current_before_the_switch_is_not_this_app_dirs(box: Box) -> None:
    # another host's APP_DIR at the same path: its current/bin is another directory
    code, output = _install(box, A, RESTARTED)
    assert code == 0, output
    other = box.root / "other-app"
    (other / "releases" / A / "bin").mkdir(parents=True)
    (other / "current").symlink_to(f"releases/{A}")
    inside = (
        f'mount --bind "{other}" "{box.app_dir}" && cd / && echo $$ > "{box.out}/foreign-pids" && '
        f'exec python3 -m http.server 0 --bind 127.0.0.1 --directory "{box.app_dir}/current/bin"'
    )
    foreign = _in_another_mount_namespace(box, inside)
    subprocess.run(["sleep", "1.1"], check=True)  # started a clock tick or more before the switch

    code, output = _install(box, B, RESTARTED)

    assert code == 0, output
    assert f"process {foreign} " not in output


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare for a second mount namespace")
def test_a_process_in_another_namespaces_deleted_release_directory_is_not_this_app_dirs(box: Box) -> None:
    code, output = _install(box, A, RESTARTED)
    assert code == 0, output
    other = box.root / "other-releases"
    (other / B).mkdir(parents=True)
    releases = box.app_dir / "releases"
    inside = (
        f'mount --bind "{other}" "{releases}" && cd "{releases}/{B}" && rmdir "{releases}/{B}" && '
        f'echo $$ > "{box.out}/foreign-pids" && exec sleep 600'
    )
    foreign = _in_another_mount_namespace(box, inside)
    assert os.readlink(f"/proc/{foreign}/cwd") == f"{releases}/{B} (deleted)"  # our path, textually

    code, output = _install(box, B, RESTARTED)

    assert code == 0, output
    assert f"process {foreign} " not in output


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare for a second mount namespace")
@pytest.mark.parametrize("through", ["working directory", "word"])
def test_a_container_whose_volume_is_current_and_left_running_runs_the_release_it_was_bound_to(
    box: Box, through: str
) -> None:
    # `docker run -v /srv/web-api/current:/app`: bound to the release current pointed to as it started;
    # its paths (/app, /app/bin/start.sh) name no APP_DIR
    code, output = _install(box, A, RESTARTED)
    assert code == 0, output
    volume = box.root / "container-app"
    volume.mkdir()
    start = "bin/start.sh" if through == "working directory" else f"{volume}/bin/start.sh"
    inside = (
        f'mount --bind "{box.app_dir}/current" "{volume}" && cd "{volume if through == "working directory" else "/"}"'
        f' && echo $$ > "{box.out}/foreign-pids" && exec sh -c \'while :; do sleep 1; done\' "{start}"'
    )
    foreign = _in_another_mount_namespace(box, inside)

    code, output = _install(box, B, RESTARTED)

    assert code == ReleaseExit.STALE_PROCESS, output
    assert f"process {foreign} (sh -c " in output
    assert f"runs release {A}, not {B}" in output


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare for a second mount namespace")
def test_a_container_whose_volume_is_a_copy_of_a_release_at_the_same_paths_is_not_this_app_dirs(box: Box) -> None:
    # held: a container (another host's APP_DIR) bound to a directory with the same path names
    code, output = _install(box, A, RESTARTED)
    assert code == 0, output
    volume = box.root / "container-app"
    copy = box.root / "copy"
    shutil.copytree(box.app_dir / "releases" / A, copy)
    volume.mkdir()
    inside = (
        f'mount --bind "{copy}" "{volume}" && cd "{volume}" && echo $$ > "{box.out}/foreign-pids"'
        f" && exec sh -c 'while :; do sleep 1; done' \"{volume}/bin/start.sh\""
    )
    foreign = _in_another_mount_namespace(box, inside)

    code, output = _install(box, B, RESTARTED)

    assert code == 0, output
    assert f"process {foreign} " not in output


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to record every execve")
def test_comparing_the_values_puts_none_in_any_program_argument(box: Box) -> None:
    box.store_parameter(PARAMETER, SECRET)
    assert _install(box, A, RESTARTED, env_names=("DB_PASSWORD", "OUT"))[0] == 0
    plan = box.plan(
        B, box.release_artifact(B), activate_commands=RESTARTED, env_names=("DB_PASSWORD", "OUT"), commands=""
    )
    script = box.script(install_body(plan), secrets=(SecretRef("DB_PASSWORD", PARAMETER),))
    trace = box.root / "execve.trace"

    # strace -f follows the service the activation starts: stop it once the script has ended
    tracer = subprocess.Popen(
        ["strace", "-f", "-qq", "-e", "trace=execve", "-s", "1000000", "-o", str(trace), SHELLS[0], str(script)],
        env=box.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert tracer.stdout is not None
    stdout = "".join(iter(tracer.stdout.readline, ""))  # the script's end closes it (the service's are /dev/null)
    _stop_services(box)
    _, stderr = tracer.communicate(timeout=120)
    done = subprocess.CompletedProcess(tracer.args, tracer.returncode, stdout, stderr)

    assert done.returncode == 0, done.stderr
    calls = [line for line in trace.read_text().splitlines() if "execve(" in line]
    assert any('"awk"' in call and "unreadable" in call for call in calls)  # the values were compared (awk)
    assert [call for call in calls if SECRET_CORE in call] == []
    assert SECRET_CORE not in done.stdout + done.stderr
    for folder, _, files in os.walk(box.root):
        for name in files:
            path = Path(folder, name)
            if path.is_file() and not path.is_symlink() and path.parent != box.root / "params":
                assert SECRET_CORE.encode() not in path.read_bytes(), path


def test_the_release_current_pointed_to_as_an_install_began_comes_before_its_commands_output(box: Box) -> None:
    """Where the switch's own line is past the 24,000 characters SSM keeps (COMMANDS printed much: attack 28),
    the release the install began on, said before COMMANDS run."""
    code, first = _install(box, A, "true")
    assert code == 0, first
    assert current_at_start(first) is None  # nothing was live
    code, second = _install(box, B, "true")
    assert code == 0, second
    assert current_at_start(second) == A
    assert second.index("as this run begins") < second.index("(was releases/")
    assert current_at_start(f"ssm-deploy: {box.app_dir}/current points at /elsewhere/{A} as this run begins") is None


def _b_beside_a_stale_process_of_a(box: Box, argument: str, old_value: str) -> tuple[int, str, int]:
    """A deployed, then B while a process of A runs with ``argument`` on its command line and ``old_value``
    (a rotated secret's) as its DB_PASSWORD: B's exit code and output, and that process's pid."""
    assert _install(box, A, ACTIVATE)[0] == 0
    script = box.app_dir / "releases" / A / "bin" / "start.sh"
    stale = subprocess.Popen(
        ["sh", "-c", "while :; do sleep 1; done", argument, str(script)],
        cwd=box.app_dir / "releases" / A,
        env={"PATH": os.environ["PATH"], "DB_PASSWORD": old_value},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        code, output = _install(box, B, ACTIVATE, env_names=("DB_PASSWORD",))
    finally:
        stale.kill()
        stale.wait()
    return code, output, stale.pid


def test_an_old_value_ending_with_a_newline_is_masked_in_a_stale_process_command_line(box: Box) -> None:
    """A process of A holds a rotated secret's old value, which ends with a newline (a PEM key, kept since
    attack 26), in its environment, and the same value, trimmed, inside an argument (`--url=...:old@db`):
    the command line the exit 90 names masks it (attack 28's note: the newline turned into a space, so the
    trimmed value in the argument did not match and showed)."""
    code, output, pid = _b_beside_a_stale_process_of_a(box, f"--url=postgres://app:{OLD_CORE}@db", OLD_CORE + "\n")

    assert code == ReleaseExit.STALE_PROCESS, output
    assert f"process {pid} (" in output and "--url=postgres://app:****@db" in output, output
    assert OLD_CORE not in output


def test_an_old_pem_value_with_a_line_that_looks_like_a_name_is_masked_whole_in_a_stale_process_command_line(
    box: Box,
) -> None:
    """Attack 36: the old value is a PEM key whose last base64 line (`Q2ZJqwXYZ9ab=`) looks like `NAME=`.
    The command line's mask read the process's environment a line at a time and took that line for a new
    variable, so only the value's first lines were masked and the rest showed (the old key, which the pipe
    does not know to mask)."""
    old = (
        "-----BEGIN PRIVATE KEY-----\n"
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
        "Q2ZJqwXYZ9ab=\n"
        "-----END PRIVATE KEY-----\n"
    )
    code, output, pid = _b_beside_a_stale_process_of_a(box, f"--key={old}", old)

    assert code == ReleaseExit.STALE_PROCESS, output
    assert f"process {pid} (" in output and "--key=****" in output, output
    assert [line for line in old.splitlines() if line.strip("-") and line in output] == [], output
