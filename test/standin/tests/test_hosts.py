"""Each stand-in instance is a host of its own: its own network namespace and address (hosts.py), its
own /home (so its own pm2 daemon), and nothing left behind when the stand-in stops."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import os
import subprocess
import sys
import threading
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from support import wait_until

from standin import StandIn, hosts
from standin.tests.invoke import run, run_one
from standin.users import APP_USER

# A server that outlives the command that started it, as a daemon would (it answers its instance id).
SERVE = (
    'mkdir -p /srv/site && echo "$AWS_SSM_INSTANCE_ID" > /srv/site/index.html\n'
    "cd /srv/site\n"
    "setsid python3 -m http.server 3000 --bind 0.0.0.0 >/dev/null 2>&1 < /dev/null &\n"
    "for _ in $(seq 100); do python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 3000), 1)' "
    "2>/dev/null && exit 0; sleep 0.1; done; exit 1"
)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def test_two_instances_listen_on_the_same_port_and_each_answers_at_its_own_address(standin: StandIn) -> None:
    first, second = standin.launch(2)
    started = run(standin, [first, second], SERVE)

    assert [answer["Status"] for answer in started] == ["Success", "Success"], started
    for instance_id in (first, second):
        assert get(f"http://{standin.instance(instance_id).address}:3000/") == f"{instance_id}\n"


def test_an_instances_address_is_its_private_ip_in_ec2_and_ssm(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    answer = run_one(standin, instance_id, "ip -4 -o addr show dev eth0 | awk '{print $4}'; ip -4 route")
    reservation = standin.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"][0]
    private_ip = reservation["Instances"][0]["PrivateIpAddress"]
    information = standin.client("ssm").describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": [instance_id]}]
    )["InstanceInformationList"][0]

    address, route = answer["StandardOutputContent"].splitlines()
    assert address == f"{private_ip}/{standin.network.subnet.prefixlen}"
    assert information["IPAddress"] == private_ip == standin.instance(instance_id).address
    assert ipaddress.ip_address(private_ip) in standin.network.subnet
    # nothing but the subnet is reachable from an instance: no default route
    assert route.startswith(f"{standin.network.subnet} dev eth0")


def test_the_subnet_overlaps_none_of_the_machines_other_routes(standin: StandIn) -> None:
    routes = json.loads(subprocess.run(["ip", "-j", "-4", "route"], capture_output=True, text=True).stdout)
    others = [r["dst"] for r in routes if r.get("dev") != standin.network.bridge and r["dst"] != "default"]

    assert others  # the machine has routes of its own
    for destination in others:
        assert not ipaddress.ip_network(destination, strict=False).overlaps(standin.network.subnet)
    assert standin.network.subnet.subnet_of(hosts.VPC_RANGE)  # type: ignore[arg-type]


def test_an_instances_loopback_is_its_own(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    moto_port = standin.endpoint.rsplit(":", 1)[1]
    probe = f"python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {moto_port}), 2)'"
    answer = run_one(standin, instance_id, f"{probe} && echo reached || echo refused")

    assert answer["StandardOutputContent"] == "refused\n"  # the stand-in's 127.0.0.1 is not the instance's


def test_an_instance_sees_its_own_processes_only(standin: StandIn) -> None:
    # on EC2 /proc lists the instance's processes; a check that scans it (VERIFY_PROCESSES) must not
    # see, nor judge, another instance's processes or the machine's
    first, second = standin.launch(2)
    marker = f"standin-marker-{uuid.uuid4().hex[:8]}"
    listing = "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done"
    started = run_one(standin, first, f"setsid bash -c 'exec -a {marker} sleep 600' >/dev/null 2>&1 < /dev/null &")
    wait_until(
        lambda: marker in run_one(standin, first, listing)["StandardOutputContent"], "the marker on its instance"
    )
    seen = run_one(standin, second, listing)

    assert started["Status"] == seen["Status"] == "Success", (started, seen)
    assert marker not in seen["StandardOutputContent"]  # another instance's process
    assert "pytest" not in seen["StandardOutputContent"]  # the machine's (the test runner's)


def test_each_instances_app_user_has_its_own_home_and_pm2_daemon(standin: StandIn) -> None:
    first, second = standin.launch(2)
    ping = f"runuser -l {APP_USER} -c 'pm2 ping >/dev/null && cat ~/.pm2/pm2.pid && echo; echo $HOME'"
    answers = run(standin, [first, second], ping)

    assert [a["Status"] for a in answers] == ["Success", "Success"], answers
    (pid_1, home_1), (pid_2, home_2) = (a["StandardOutputContent"].split() for a in answers)
    assert home_1 == home_2 == f"/home/{APP_USER}"
    daemons = []
    for instance_id, pid in ((first, pid_1), (second, pid_2)):
        pm2_home = standin.instance_path(instance_id, f"/home/{APP_USER}/.pm2")
        assert (pm2_home / "pm2.pid").read_text().strip() == pid
        daemon = standin.host_pid(instance_id, int(pid))
        assert daemon is not None  # it runs on its instance
        assert "PM2" in Path(f"/proc/{daemon}/cmdline").read_text()
        daemons.append(daemon)
    assert daemons[0] != daemons[1]  # two daemons, one per instance
    again = run(standin, [first, second], ping)  # a later command finds the same daemon running
    assert [a["StandardOutputContent"].split()[0] for a in again] == [pid_1, pid_2]
    assert [standin.host_pid(i, int(p)) for i, p in ((first, pid_1), (second, pid_2))] == daemons


def test_a_killed_instance_ends_its_processes_and_its_next_command_runs_as_on_a_fresh_boot(
    standin: StandIn,
) -> None:
    (instance_id,) = standin.launch(1)
    started = run_one(standin, instance_id, "setsid sleep 600 >/dev/null 2>&1 < /dev/null & echo $!")
    sleeper = standin.host_pid(instance_id, int(started["StandardOutputContent"]))
    assert sleeper is not None

    standin.network.kill([instance_id])
    after = run_one(standin, instance_id, "cat /proc/[0-9]*/comm")

    assert not Path(f"/proc/{sleeper}").exists()  # ended with the instance, and reaped
    assert after["Status"] == "Success", after
    # a fresh PID 1 (the holder, python) and this command's own bash, nothing left from before
    assert set(after["StandardOutputContent"].split()) == {"bash", Path(sys.executable).name}, after


def test_a_retired_instance_runs_nothing_more_and_is_no_longer_checked(standin: StandIn) -> None:
    retired, kept = standin.launch(2)
    started = run(standin, [retired, kept], SERVE)
    arn = standin.create_target_group(f"retire-{uuid.uuid4().hex[:8]}", [retired, kept], health_check_path="/")
    standin.wait_target_states(arn, [retired, kept], "healthy", timeout=60)

    standin.retire([retired])

    def refused() -> bool:
        try:
            get(f"http://{standin.instance(retired).address}:3000/")
        except OSError:
            return True
        return False

    assert [answer["Status"] for answer in started] == ["Success", "Success"], started
    wait_until(refused, "the retired instance's server to be gone", timeout=30)
    assert standin.target_states(arn) == {kept: "healthy"}  # no longer a target: no health check
    assert get(f"http://{standin.instance(kept).address}:3000/") == f"{kept}\n"  # the other one runs on


def enter(namespace: str) -> subprocess.Popen[bytes]:
    """A process that enters the instance's network namespace and sleeps there, as a daemon would live."""
    return subprocess.Popen(["nsenter", f"--net={hosts.NETNS_DIR}/{namespace}", "sleep", "600"], start_new_session=True)


def inside(pid: int, namespace: str) -> bool:
    """Whether process ``pid`` is in the network namespace (the same device and inode, as ``ip netns pids``)."""
    try:
        process, instance = os.stat(f"/proc/{pid}/ns/net"), os.stat(hosts.NETNS_DIR / namespace)
    except OSError:
        return False
    return (process.st_dev, process.st_ino) == (instance.st_dev, instance.st_ino)


def members(init: int) -> list[int]:
    """The processes in the PID namespace whose PID 1 is ``init`` (this machine's pids)."""
    wanted = os.stat(f"/proc/{init}/ns/pid")
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            namespace = os.stat(f"/proc/{entry}/ns/pid")
        except OSError:
            continue
        if (namespace.st_dev, namespace.st_ino) == (wanted.st_dev, wanted.st_ino):
            found.append(int(entry))
    return found


def test_stopping_the_network_removes_it_and_the_instances_processes() -> None:
    # a network of its own (a second StandIn in this process would take over the first's moto patches)
    network = hosts.PrivateNetwork().start()
    address = str(network.subnet.network_address + 4)
    namespace = network.namespace("i-0123456789abcdef0", address)
    sleeper = enter(namespace)
    processes = network.processes("i-0123456789abcdef0", address, ["true"])
    entered = subprocess.Popen(
        ["nsenter", f"--net={hosts.NETNS_DIR}/{namespace}", f"--pid={processes.path}", "sleep", "600"],
        start_new_session=True,
    )
    reached = subprocess.run(["ip", "-n", namespace, "-4", "-o", "addr"], capture_output=True, text=True).stdout
    # in the instance before the stop: nsenter opening the namespace's file while ``ip netns del``
    # removes it fails ("reassociate to namespace 'ns/net' failed: Invalid argument"); the next test
    # is about a process entering during the stop
    wait_until(lambda: inside(sleeper.pid, namespace), "the sleeper to be in the instance's namespace")
    holder = processes.init_pid
    wait_until(lambda: len(members(holder)) == 2, "the entered sleeper to be in the instance's PID namespace")
    network.stop()

    assert f"{address}/{network.subnet.prefixlen}" in reached
    assert sleeper.wait(timeout=10) == -9  # killed with the instance
    assert entered.wait(timeout=10) == -9  # and the one in its PID namespace
    assert not [name for name in os.listdir(hosts.NETNS_DIR) if name.startswith(network.bridge)]
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert network.bridge not in links and f"ssv{network.tag}" not in links
    assert not (hosts.STATE_DIR / f"{network.tag}.owner").exists()


def test_a_process_that_enters_an_instance_while_the_network_stops_does_not_outlive_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    network = hosts.PrivateNetwork().start()
    namespace = network.namespace("i-0123456789abcdef0", str(network.subnet.network_address + 4))
    entrants: list[subprocess.Popen[bytes]] = []
    run = subprocess.run

    def enter_then_run(args: list[str], *rest: Any, **options: Any) -> Any:
        # the worst moment to enter: the instance's processes are killed, its namespace not yet deleted
        if args[:3] == ["ip", "netns", "del"] and not entrants:
            entrants.append(enter(namespace))
            wait_until(lambda: inside(entrants[0].pid, namespace), "the entrant to be in the instance's namespace")
        return run(args, *rest, **options)

    monkeypatch.setattr(subprocess, "run", enter_then_run)  # the one hosts.py calls
    try:
        network.stop()
    finally:
        monkeypatch.undo()
    (entrant,) = entrants
    try:
        wait_until(lambda: entrant.poll() is not None, "the entrant to end with the instance", timeout=30)
        assert entrant.returncode == -9
        assert not [name for name in os.listdir(hosts.NETNS_DIR) if name.startswith(network.bridge)]
    finally:
        entrant.kill()
        entrant.wait()


def test_a_stopping_network_never_kills_a_process_of_a_namespace_made_meanwhile_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kernel gives a freed namespace's inode number to the next namespace made on the machine. Once
    the instance's namespace is deleted, namespaces other stand-ins make meanwhile must keep their
    processes: the stop's last pass, which matches by the deleted namespace's identity, must not find them."""
    network = hosts.PrivateNetwork().start()
    namespace = network.namespace("i-0123456789abcdef0", str(network.subnet.network_address + 4))
    gone = os.stat(hosts.NETNS_DIR / namespace)
    others: list[str] = []  # namespaces made as another stand-in would, right after the deletion
    sleepers: list[subprocess.Popen[bytes]] = []
    run = subprocess.run

    def make_others_after_the_deletion(args: list[str], *rest: Any, **options: Any) -> Any:
        answer = run(args, *rest, **options)
        if args[:3] == ["ip", "netns", "del"] and not others:
            for number in range(8):  # until one takes the deleted namespace's identity, if it is free
                other = f"ssdtest{os.getpid()}-{number}"
                run(["ip", "netns", "add", other], check=True)
                others.append(other)
                sleeper = enter(other)
                sleepers.append(sleeper)
                wait_until(lambda: inside(sleeper.pid, other), "the sleeper to be in the other namespace")  # noqa: B023
                if os.stat(hosts.NETNS_DIR / other).st_ino == gone.st_ino:
                    break
        return answer

    monkeypatch.setattr(subprocess, "run", make_others_after_the_deletion)  # the one hosts.py calls
    try:
        network.stop()
    finally:
        monkeypatch.undo()
        try:
            alive = [sleeper.poll() is None for sleeper in sleepers]
        finally:
            for sleeper in sleepers:
                sleeper.kill()
                sleeper.wait()
            for other in others:
                subprocess.run(["ip", "netns", "del", other], capture_output=True, check=False)
    assert others and all(alive), alive


def test_stand_ins_starting_and_stopping_side_by_side_never_break_entering_a_live_instance() -> None:
    # parallel test workers each run a stand-in: their ip netns add/del must not touch another's
    # namespaces (a failed nsenter there was once suspected of the flake the test above explains)
    churners = [
        subprocess.Popen(
            [sys.executable, "-m", "standin.tests.netns_churn", "3", "4"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        )
        for _ in range(3)
    ]
    outputs = [churner.communicate(timeout=120)[0] for churner in churners]

    assert [churner.returncode for churner in churners] == [0, 0, 0], outputs
    assert outputs == ["", "", ""]  # every entry into a live namespace succeeded


@pytest.mark.parametrize("owner", ["reaped", "zombie"])  # a worker killed while its parent lives on is a zombie
def test_what_a_dead_stand_in_left_is_removed_by_the_next_one(owner: str) -> None:
    dead = subprocess.Popen(["true"])
    if owner == "reaped":
        dead.wait()
    else:
        wait_until(lambda: Path(f"/proc/{dead.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", "a zombie")
    tag = f"dead0{owner[0]}"
    bridge, namespace = f"{hosts.NAME_PREFIX}{tag}", f"{hosts.NAME_PREFIX}{tag}-0"
    # what it left first, its owner file last: another worker's stand-in starting meanwhile removes
    # all of it or none of it (with the owner file first, it could remove the file before the
    # namespace existed, and leave the namespace nobody owns)
    for leftover in (["ip", "link", "del", bridge], ["ip", "netns", "del", namespace]):  # of a run that died
        subprocess.run(leftover, capture_output=True, check=False)
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    hosts.STATE_DIR.mkdir(parents=True, exist_ok=True)
    (hosts.STATE_DIR / f"{tag}.owner").write_text(f"{dead.pid} 172.31.255.0/24\n")

    network = hosts.PrivateNetwork().start()
    try:
        assert not Path(hosts.NETNS_DIR, namespace).exists()
        assert bridge not in subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
        assert not (hosts.STATE_DIR / f"{tag}.owner").exists()
    finally:
        network.stop()
        dead.wait()


def test_without_root_the_stand_in_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(hosts.NetworkUnavailable, match="needs root"):
        hosts.require_root()


def test_instances_whose_first_commands_start_together_each_get_a_namespace_of_their_own() -> None:
    # MaxConcurrency runs many instances' first commands at once, each creating its namespace
    network = hosts.PrivateNetwork().start()
    ids = [f"i-{n:017x}" for n in range(16)]
    together = threading.Barrier(len(ids))

    def first_command(n: int) -> str:
        together.wait()
        return network.namespace(ids[n], str(network.subnet.network_address + 4 + n))

    try:
        with concurrent.futures.ThreadPoolExecutor(len(ids)) as pool:
            names = list(pool.map(first_command, range(len(ids))))

        assert len(set(names)) == len(ids)
        assert all(network.is_up(instance_id) for instance_id in ids)
    finally:
        network.stop()
