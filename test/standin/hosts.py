"""The instances' network: each stand-in instance is a host of its own, with its own address.

On AWS every instance has its own network stack and its private IP in a subnet of its VPC; two
instances can both listen on ``0.0.0.0:3000``, and the load balancer reaches each at its private IP.
Here every instance gets a network namespace of its own (``ip netns``) with one interface, ``eth0``,
holding the instance's ``PrivateIpAddress`` (moto assigns it from the stand-in's subnet, as EC2
does), plugged into a bridge of the stand-in's that holds the subnet's first address, the VPC
router's (``x.x.x.1``). This machine (the stand-in's load balancer, the tests) reaches the instances
through that bridge, and the instances reach the stand-in's AWS endpoint at the router's address
(``StandIn.instance_environment``), like a VPC endpoint.

Choices, and why:

* **The subnet.** A /22 out of ``172.31.128.0/17``: inside the default VPC's ``172.31.0.0/16``
  (moto's default subnets use ``172.31.0.0/20`` to ``172.31.32.0/20``), so the addresses are the
  ones a default VPC gives; 1,019 instance addresses (as many as a bridge takes ports), and 32
  stand-ins side by side (parallel test workers, a demo). The first /22 that overlaps no route and
  no address of this machine is taken (read from the kernel when choosing, under a machine-wide
  lock, so parallel test workers, Docker's networks and the machine's own routes are respected).
* **Nothing leaves the subnet.** An instance has no default route: it reaches the subnet (the
  router address, the other instances) and nothing else, so no test traffic can go anywhere but
  this machine's own namespaces.
* **Created when first used.** An instance gets its namespace the first time a command runs on it
  (most instances of a test session never listen on anything); an instance's namespace is not
  removed while the stand-in runs, so its processes (a pm2 daemon, the app) live on between
  commands, as on a real host.
* **Its own processes and file system.** Each instance also has a PID namespace and a mount namespace
  of its own (``pid_namespace.py``), made with its network namespace and again after ``kill``: /proc
  on an instance lists only its processes, and every command on it shares its mounts, as on EC2.
* **Removed on stop, and after a crash.** ``stop`` ends the instances' PID (and mount) namespaces, kills every
  process left in the network namespaces (one that entered the network only), deletes
  them and the bridge; a process that entered one while ``stop`` ran is killed after the deletion.
  (``ip netns del`` unmounts a namespace's file, then unlinks it, and ``ip netns add`` creates it
  empty before mounting the namespace on it: an ``nsenter`` opening it in between fails with
  "reassociate to namespace 'ns/net' failed: Invalid argument". Only this stand-in adds or deletes
  its namespaces, so that happens only to a process entering while it stops. Other stand-ins'
  ``ip netns`` never touch its files, and the one step they share, making /run/netns a shared mount
  point, iproute2 takes under a lock on the folder.) A session that died without ``stop`` leaves
  its owner's pid in ``STATE_DIR``; the next stand-in that starts removes what a dead owner left.

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN on this machine): ``require_root`` says so, and the
stand-in never falls back to a shared network.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from standin.pid_namespace import PidNamespace

VPC_RANGE = ipaddress.ip_network("172.31.128.0/17")
SUBNET_PREFIX = 22
STATE_DIR = Path("/run/ssm-deploy-standin")
NETNS_DIR = Path("/run/netns")
NAME_PREFIX = "ssmsi"  # bridges ssmsi<tag>, namespaces ssmsi<tag>-<n>, host-side veths ssv<tag><n>
MAX_NAMESPACES = 1000  # a Linux bridge takes at most 1024 ports (BR_MAX_PORTS)
COMMAND_TIMEOUT = 30
MAX_KILL_PASSES = 100  # kill passes over /proc; each one after the first only for processes new since


class NetworkUnavailable(RuntimeError):
    """This machine cannot give the stand-in's instances networks of their own."""


def require_root() -> None:
    missing = [tool for tool in ("ip", "nsenter", "unshare") if shutil.which(tool) is None]
    if os.geteuid() != 0:
        raise NetworkUnavailable(
            "the stand-in gives each instance its own network namespace and file system, which needs root "
            "(CI runs the tests as root): run ./dev test as root"
        )
    if missing:
        raise NetworkUnavailable(
            f"the stand-in needs {', '.join(missing)} on PATH (apt-get install iproute2 util-linux; "
            "./dev test installs them)"
        )


def _ip(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["ip", *args], input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise NetworkUnavailable(f"ip {' '.join(args)} failed: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done.stdout


def used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this machine routes or holds an address in, default routes left out."""
    networks: list[ipaddress.IPv4Network] = []
    for route in json.loads(_ip("-j", "-4", "route", "show", "table", "all") or "[]"):
        destination = str(route.get("dst", ""))
        if destination in ("", "default") or route.get("type") in ("broadcast",):
            continue
        with contextlib.suppress(ValueError):
            network = ipaddress.ip_network(destination if "/" in destination else f"{destination}/32", strict=False)
            if isinstance(network, ipaddress.IPv4Network) and network.prefixlen > 0:
                networks.append(network)
    for link in json.loads(_ip("-j", "-4", "addr") or "[]"):
        for info in link.get("addr_info", []):
            with contextlib.suppress(ValueError, KeyError):
                interface = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}")
                if isinstance(interface, ipaddress.IPv4Interface):
                    networks.append(interface.network)
    return networks


def free_subnet(used: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """The first /22 of ``VPC_RANGE`` that overlaps none of ``used``."""
    assert isinstance(VPC_RANGE, ipaddress.IPv4Network)
    for subnet in VPC_RANGE.subnets(new_prefix=SUBNET_PREFIX):
        if not any(subnet.overlaps(network) for network in used):
            return subnet
    raise NetworkUnavailable(
        f"no /{SUBNET_PREFIX} of {VPC_RANGE} is free of this machine's routes and addresses "
        f"({', '.join(str(n) for n in used if n.overlaps(VPC_RANGE))}): stop other stand-ins or remove stale "
        f"bridges named {NAME_PREFIX}*"
    )


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with (STATE_DIR / "network.lock").open("a") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(stream, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _namespaces(tag: str) -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(f"{NAME_PREFIX}{tag}-"))


Identity = tuple[int, int]  # a network namespace's (device, inode), as its file and a process's ns/net show it


def _identities(namespaces: list[str]) -> set[Identity]:
    wanted = set()
    for namespace in namespaces:
        with contextlib.suppress(OSError):
            found = os.stat(NETNS_DIR / namespace)
            wanted.add((found.st_dev, found.st_ino))
    return wanted


def _members(wanted: set[Identity]) -> set[int]:
    """The processes whose network namespace is one of ``wanted``: one pass over /proc, matching as
    ``ip netns pids`` does (a zombie has no namespace left, so it is not one)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            namespace = os.stat(f"/proc/{entry}/ns/net")
        except OSError:  # gone, or a kernel thread
            continue
        if (namespace.st_dev, namespace.st_ino) in wanted:
            found.add(int(entry))
    return found


def _kill_members(wanted: set[Identity]) -> None:
    """SIGKILL every process in the namespaces ``wanted``, passing over /proc again until a pass finds
    none it has not killed: a child forked (a pm2 daemon restarting its app) or a process that entered
    while a pass ran is caught by the next one. A killed process forks no more, so this ends."""
    killed: set[int] = set()
    for _ in range(MAX_KILL_PASSES):
        found = _members(wanted) - killed
        if not found:
            return
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        killed |= found


def kill_processes(namespaces: list[str]) -> None:
    """SIGKILL every process whose network namespace is one of ``namespaces`` (the instances' pm2
    daemons, apps, anything their commands left running), as stopping the instances would."""
    _kill_members(_identities(namespaces))


@contextlib.contextmanager
def _held(namespaces: list[str]) -> Iterator[None]:
    """Keep the namespaces alive while the block runs, by an open descriptor of each (a namespace lives
    as long as something refers to it). Without it, a namespace deleted and left by its last process is
    freed, and the kernel gives its inode number to the next namespace made on the machine (another
    stand-in's instance): a pass matching by identity would then kill that instance's processes."""
    descriptors = []
    try:
        for namespace in namespaces:
            with contextlib.suppress(OSError):
                descriptors.append(os.open(NETNS_DIR / namespace, os.O_RDONLY))
        yield
    finally:
        for descriptor in descriptors:
            os.close(descriptor)


def _remove(tag: str) -> None:
    namespaces = _namespaces(tag)
    identities = _identities(namespaces)
    _kill_members(identities)
    with _held(namespaces):
        for namespace in namespaces:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=COMMAND_TIMEOUT, check=False)
        # Once its file is gone nothing can enter a namespace by name, but a process could enter between
        # the pass above and ``ip netns del`` (an nsenter started before stop): it would outlive the stop
        # and keep the namespace alive. Killed here, by the identities taken before the files went, while
        # the namespaces are still held, so that no other namespace can have taken their identity.
        _kill_members(identities)
    subprocess.run(
        ["ip", "link", "del", f"{NAME_PREFIX}{tag}"], capture_output=True, timeout=COMMAND_TIMEOUT, check=False
    )
    (STATE_DIR / f"{tag}.owner").unlink(missing_ok=True)


def remove_stale() -> list[str]:
    """Remove the bridges and namespaces of stand-ins whose process is gone; their tags."""
    removed = []
    for owner in sorted(STATE_DIR.glob("*.owner")) if STATE_DIR.is_dir() else []:
        try:
            pid = int(owner.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = -1
        if pid <= 0 or not _alive(pid):
            _remove(owner.stem)
            removed.append(owner.stem)
    return removed


class PrivateNetwork:
    """The stand-in's subnet: a bridge with the router address, and a namespace per instance."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.bridge = f"{NAME_PREFIX}{self.tag}"
        self._subnet: ipaddress.IPv4Network | None = None
        self._namespaces: dict[str, str] = {}  # instance id -> namespace
        self._processes: dict[str, PidNamespace] = {}  # instance id -> its PID and mount namespaces, while held
        self._lock = threading.Lock()
        self._creating: dict[str, threading.Lock] = {}  # one per instance: its namespace is made once
        self._made = 0  # namespaces made or being made: the next one's number (names never repeat)

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        if self._subnet is None:
            raise RuntimeError("PrivateNetwork.start() was not called")
        return self._subnet

    @property
    def router(self) -> str:
        """The subnet's first address (the VPC router's on AWS): this machine's address on the bridge."""
        return str(self.subnet.network_address + 1)

    def start(self) -> PrivateNetwork:
        require_root()
        with _machine_lock():
            remove_stale()
            subnet = free_subnet(used_networks())
            (STATE_DIR / f"{self.tag}.owner").write_text(f"{os.getpid()} {subnet}\n")
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{subnet.network_address + 1}/{subnet.prefixlen}", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            self._subnet = subnet
        return self

    def stop(self) -> None:
        with self._lock:
            held, self._processes = list(self._processes.values()), {}
        for processes in held:
            processes.kill()
        with _machine_lock():
            _remove(self.tag)
        self._namespaces.clear()

    def namespace(self, instance_id: str, address: str) -> str:
        """The instance's network namespace, created on first use with ``address`` on its eth0."""
        with self._lock:
            existing = self._namespaces.get(instance_id)
            if existing is not None:
                return existing
            creating = self._creating.setdefault(instance_id, threading.Lock())
        with creating:
            with self._lock:
                existing = self._namespaces.get(instance_id)
                if existing is not None:
                    return existing
                if self._made >= MAX_NAMESPACES:
                    raise NetworkUnavailable(
                        f"more than {MAX_NAMESPACES} instances ran commands in one stand-in (a bridge takes "
                        "1,024 ports): start a new StandIn"
                    )
                index = self._made
                self._made += 1
            name = self._create(instance_id, address, index)
            with self._lock:
                self._namespaces[instance_id] = name
            return name

    def processes(self, instance_id: str, address: str, setup: Sequence[str]) -> PidNamespace:
        """The instance's PID and mount namespaces (their paths for ``nsenter --pid= --mount=``), made
        with its network namespace on first use and again after ``kill``; ``setup`` (an argv) runs in
        them once, as they are made (the instance's mounts)."""
        network = self.namespace(instance_id, address)
        with self._lock:
            creating = self._creating[instance_id]
        with creating:
            with self._lock:
                processes = self._processes.get(instance_id)
            if processes is None or not processes.alive():
                processes = PidNamespace(str(NETNS_DIR / network), setup)
                with self._lock:
                    self._processes[instance_id] = processes
            return processes

    def host_pid(self, instance_id: str, pid: int) -> int | None:
        """This machine's pid of the process ``pid`` on the instance (as its pid files and ``$$``
        there say), or None when the instance runs no such process."""
        with self._lock:
            processes = self._processes.get(instance_id)
        return processes.host_pid(pid) if processes is not None else None

    def kill(self, instance_ids: list[str]) -> None:
        """End every process of these instances: their PID namespaces, then whatever else is left in
        their network namespaces (``kill_processes``). The network namespaces stay, so a later command
        on one of them runs as on a rebooted host."""
        with self._lock:
            namespaces = [self._namespaces[i] for i in instance_ids if i in self._namespaces]
            held = [self._processes.pop(i) for i in instance_ids if i in self._processes]
        for processes in held:
            processes.kill()
        kill_processes(namespaces)

    def is_up(self, instance_id: str) -> bool:
        """Whether the instance's namespace exists (before its first command, nothing listens there)."""
        with self._lock:
            return instance_id in self._namespaces

    def _create(self, instance_id: str, address: str, index: int) -> str:
        if ipaddress.ip_address(address) not in self.subnet:
            raise NetworkUnavailable(f"{instance_id}'s address {address} is outside the subnet {self.subnet}")
        name = f"{self.bridge}-{index}"
        veth = f"ssv{self.tag}{index:x}"
        _ip("netns", "add", name)
        _ip(
            "-batch",
            "-",
            stdin=(
                f"link add {veth} type veth peer name eth0 netns {name}\n"
                f"link set {veth} master {self.bridge}\n"
                f"link set {veth} up\n"
            ),
        )
        _ip(
            "-n",
            name,
            "-batch",
            "-",
            stdin=(f"link set lo up\naddr add {address}/{self.subnet.prefixlen} dev eth0\nlink set eth0 up\n"),
        )
        return name
