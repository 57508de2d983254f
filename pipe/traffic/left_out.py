"""What a deploy took out of service, kept beside its lock so that a build killed mid-rollout (SIGKILL,
out of memory, the runner lost: no exit path runs) does not leave it out for good.

A deploy that holds the lock records, in the String parameter ``<lock>/out-of-service``, each target it
is about to deregister (group ARN and name, its Id: an instance or an address, port and zone, and an
address's instance) and each Auto Scaling process it is about to suspend, before the call, and forgets them
once they are registered again or resumed; the parameter is deleted when nothing is left out. The deploy
that takes the lock next (a killed build's lock, once stale) finds the record, registers those targets
again, resumes those processes, says so in a warning naming the build that left them (an error for what it
could not put back, e.g. an instance terminated since: its group's other targets are then registered one
by one), and deletes it; only then does it read the fleet. An address is registered again only once
ec2:DescribeInstances shows that its instance still runs and still holds it: RegisterTargets refuses a
terminated instance's id but takes any address, so a dead instance's address, or one another network
interface holds now, would be put in service blindly; such an address stays out and the error names it.
A record that cannot be written is a warning (the deploy goes on: on its exit paths it puts everything back
itself). The parameter lives under ``/deploy-lock/``, which the lock's IAM statement already covers."""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from pipe.aws.errors import error_code
from pipe.traffic.target_groups.addresses import RUNNING, Addresses
from pipe.traffic.target_groups.groups import TargetGroup, target_description
from pipe.traffic.target_groups.waits import LoadBalancerError, healthy, poll_seconds, read_states

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

log = logging.getLogger("ssm-deploy")

SUFFIX = "/out-of-service"
DESCRIPTION = "ssm-deploy: what the deploy holding the lock took out of service (put back by the next deploy)"
FIELDS = "|"  # between an address target's Id, port, zone and instance in the record (in no Id, zone or port)


class Target(NamedTuple):
    """A registration a deploy took out of service, as recorded."""

    arn: str  # the group's
    group: str  # the group's name
    target_id: str  # an instance id, or an address
    port: int | None
    zone: str | None = None
    owner: str | None = None  # an address's instance (None: an instance target, or recorded without it)

    @property
    def by_address(self) -> bool:
        try:
            ipaddress.ip_address(self.target_id)
        except ValueError:
            return False
        return True

    @property
    def description(self) -> dict[str, Any]:
        """The TargetDescription RegisterTargets takes for it."""
        return target_description(self.target_id, self.port, self.zone)


def record_name(lock: str) -> str:
    return lock + SUFFIX


class LeftOut:
    """The record of one deploy: written before each deregistration or suspension, shrunk after each
    registration or resumption (from the main thread and the stop path alike, hence the mutex)."""

    def __init__(self, ssm: SSMClient, lock: str, build: str) -> None:
        self.ssm = ssm
        self.name = record_name(lock)
        self.build = build
        self.targets: set[Target] = set()
        self.suspended: dict[str, list[str]] = {}
        self._mutex = threading.Lock()

    def taking_out(self, targets: Iterable[Target]) -> None:
        with self._mutex:
            self.targets.update(targets)
            self._write()

    def put_back(self, targets: Iterable[Target]) -> None:
        with self._mutex:
            self.targets.difference_update(targets)
            self._write()

    def suspending(self, group: str, processes: list[str]) -> None:
        with self._mutex:
            self.suspended[group] = sorted(set(self.suspended.get(group, [])) | set(processes))
            self._write()

    def resumed(self, group: str) -> None:
        with self._mutex:
            self.suspended.pop(group, None)
            self._write()

    def _write(self) -> None:
        try:
            if self.targets or self.suspended:
                value = encode(self.build, self.targets, self.suspended)
                self.ssm.put_parameter(
                    Name=self.name, Value=value, Type="String", Overwrite=True, Description=DESCRIPTION
                )
            else:
                try:
                    self.ssm.delete_parameter(Name=self.name)
                except ClientError as error:
                    if error_code(error) != "ParameterNotFound":
                        raise
        except (ClientError, BotoCoreError) as error:
            log.warning(
                f"{self.name} could not be written ({error}): if this build is killed now, the next deploy cannot "
                "put back what it took out of service"
            )


def encode(build: str, targets: Iterable[Target], suspended: dict[str, list[str]]) -> str:
    """The record as Parameter Store keeps it: each group's ARN and name once, its instance targets as
    ``instance`` or ``instance:port`` (``targets``, as the pipe has always written them, so the pipe's
    previous version still puts them back), its address targets as ``address|port|zone|instance``
    (``addresses``: that version reads no such key and leaves them out, as it never drained them).

    A standard parameter holds 4096 characters. A group takes up to about 190 (its ARN, up to 118, and its
    name, up to 32, with the JSON around them), an instance target up to 28 (``"i-0123456789abcdef0:65535",``),
    an IPv4 target up to about 60 and an IPv6 one up to about 85 (with a zone like ``ap-southeast-2a``): one
    batch of about 130 instances registered in one group, or 60 addresses, fits. A larger record is refused
    (ValidationException): the warning of ``_write`` says so and the deploy goes on (on its exit paths it
    puts everything back itself)."""
    groups: dict[str, dict[str, Any]] = {}
    for target in sorted(targets, key=str):
        group = groups.setdefault(target.arn, {"name": target.group, "targets": []})
        if target.by_address:
            fields = (target.target_id, target.port, target.zone, target.owner)
            group.setdefault("addresses", []).append(FIELDS.join("" if f is None else str(f) for f in fields))
        else:
            group["targets"].append(target.target_id if target.port is None else f"{target.target_id}:{target.port}")
    return json.dumps({"build": build, "groups": groups, "suspended": suspended}, separators=(",", ":"))


def decode(value: str) -> tuple[str, list[Target], dict[str, list[str]]]:
    """``encode``'s build, targets and suspended processes (a record of the pipe's first ``ip`` version too:
    an address as ``[address, port, zone]`` or ``address:port`` in ``targets``, without its instance);
    ValueError, TypeError or AttributeError for a value it did not write."""
    record = json.loads(value)
    targets: list[Target] = []
    for arn, group in dict(record.get("groups", {})).items():
        where = (str(arn), str(group["name"]))
        for target in group["targets"]:
            if isinstance(target, list):
                target_id, port, zone = target
                targets.append(Target(*where, str(target_id), _optional(int, port), _optional(str, zone)))
                continue
            target_id, _, text = str(target).partition(":")
            targets.append(Target(*where, target_id, int(text) if text else None))
        for fields in group.get("addresses", []):
            target_id, port, zone, owner = str(fields).split(FIELDS)
            targets.append(Target(*where, target_id, int(port) if port else None, zone or None, owner or None))
    suspended = {str(g): [str(p) for p in ps] for g, ps in dict(record.get("suspended", {})).items()}
    return str(record.get("build", "?")), targets, suspended


def _optional(kind: Callable[[Any], Any], value: Any) -> Any:
    return None if value is None else kind(value)


def unverified(ec2: Any, targets: Iterable[Target]) -> dict[Target, str]:
    """Of ``targets``, the addresses not to register again, each with why: its instance is not recorded, is
    not running, no longer holds it, or cannot be checked (ec2:DescribeInstances). An instance target is not
    checked here: RegisterTargets refuses one that is not running (InvalidTarget)."""
    by_address = [target for target in targets if target.by_address]
    owners = sorted({target.owner for target in by_address if target.owner})
    addresses = Addresses()
    failed = ""
    try:
        addresses.learn(ec2, owners)
    except (ClientError, BotoCoreError) as error:
        failed = f"its instance could not be checked ({error})"
    why: dict[Target, str] = {}
    for target in by_address:
        owner = target.owner
        state = addresses.state(owner) if owner else None
        if owner is None:
            why[target] = "recorded without its instance, which could not be checked"
        elif failed:
            why[target] = failed
        elif state != RUNNING:
            why[target] = f"its instance {owner} is {state or 'gone'}"
        elif not addresses.holds(owner, target.target_id):
            why[target] = f"its instance {owner} no longer holds that address"
    return why


def what_a_killed_deploy_left(ssm: SSMClient, lock: str) -> tuple[str, list[Target]] | None:
    """For a dry run, which changes nothing: the build and the targets the record names, which the deploy
    would register again before it reads the fleet; None without a (readable) record."""
    try:
        build, targets, _ = decode(ssm.get_parameter(Name=record_name(lock))["Parameter"]["Value"])
    except (ClientError, BotoCoreError, ValueError, TypeError, AttributeError):
        return None
    return build, targets


def put_back_what_a_killed_deploy_left(
    ssm: SSMClient, elbv2: Any, ec2: Any, autoscaling: Any, lock: str, healthy_timeout: int
) -> None:
    """Right after the lock is taken: register and resume what the previous holder left out, if it
    left a record (it was killed, or could not put everything back); an address only while its instance
    still runs and holds it (``unverified``)."""
    name = record_name(lock)
    try:
        value = ssm.get_parameter(Name=name)["Parameter"]["Value"]  # ssm:GetParameter, as the lock itself
    except ClientError as error:
        if error_code(error) != "ParameterNotFound":
            log.warning(f"{name} could not be read ({error}): what a killed deploy left out of service is not checked")
        return
    except BotoCoreError as error:
        log.warning(f"{name} could not be read ({error}): what a killed deploy left out of service is not checked")
        return
    try:
        build, targets, suspended = decode(value)
    except (ValueError, TypeError, AttributeError):
        log.warning(f"{name} is not a record ssm-deploy wrote: ignored and deleted")
        ssm.delete_parameter(Name=name)
        return
    stay_out = unverified(ec2, targets)
    problems = [
        f"{target.target_id} was not registered again in {target.group}: {why}" for target, why in stay_out.items()
    ]
    by_group: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for target in targets:
        if target not in stay_out:
            by_group.setdefault((target.arn, target.group), []).append(target.description)
    registered: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for (arn, group), ids in by_group.items():
        back = _register_again(problems, elbv2, arn, group, ids)
        if back:
            registered[(arn, group)] = back
            listed = ", ".join(t["Id"] for t in back)
            log.warning(
                f"Build {build} took {listed} out of {group} and never put them back (it was killed?): registered again"
            )
    _wait_healthy(elbv2, registered, healthy_timeout)
    for group, processes in suspended.items():
        listed = ", ".join(processes)
        _put_back(
            problems,
            partial(autoscaling.resume_processes, AutoScalingGroupName=group, ScalingProcesses=processes),
            f"Build {build} suspended {listed} of the Auto Scaling group {group} and never resumed them (it was "
            "killed?): resumed",
            f"{listed} of {group} could not be resumed",
        )
    if problems:  # an instance terminated since cannot be registered: said once, not at every deploy
        log.error(f"What build {build} left out of service is not all back: " + "; ".join(problems))
    ssm.delete_parameter(Name=name)


def _register_again(
    problems: list[str], elbv2: Any, arn: str, group: str, targets: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The targets of ``group`` registered again. RegisterTargets is all or nothing: one target it refuses
    (an instance terminated since: InvalidTarget) fails the call, so after a refusal each target is
    registered on its own, and only those it refuses stay out."""
    try:
        elbv2.register_targets(TargetGroupArn=arn, Targets=targets)
        return targets
    except (ClientError, BotoCoreError) as error:
        if len(targets) == 1:
            problems.append(f"{targets[0]['Id']} could not be registered again in {group} ({error})")
            return []
    back: list[dict[str, Any]] = []
    for target in targets:
        back += _register_again(problems, elbv2, arn, group, [target])
    return back


def _wait_healthy(elbv2: Any, by_group: dict[tuple[str, str], list[dict[str, Any]]], timeout: int) -> None:
    """Until the targets registered again are healthy (at most HEALTHY_TIMEOUT): the plan's MIN_HEALTHY
    check reads the groups next, and would count them out."""
    deadline = time.monotonic() + timeout
    pending = dict(by_group)
    while pending and time.monotonic() < deadline:
        for (arn, group), targets in list(pending.items()):
            try:
                states = read_states(elbv2, TargetGroup(arn, group), targets)
            except LoadBalancerError:
                pending.pop((arn, group))  # unreadable: the plan reads it again and says so
                continue
            if all(healthy(state) for state in states):
                pending.pop((arn, group))
        if pending:
            time.sleep(poll_seconds(len(pending)))
    for _, group in pending:
        log.warning(f"The targets registered again in {group} were not healthy after HEALTHY_TIMEOUT {timeout} s")


def _put_back(problems: list[str], call: Callable[[], Any], done: str, failed: str) -> None:
    try:
        call()
    except (ClientError, BotoCoreError) as error:
        problems.append(f"{failed} ({error})")
        return
    log.warning(done)
