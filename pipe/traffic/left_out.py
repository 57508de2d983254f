"""What a deploy took out of service, kept beside its lock so that a build killed mid-rollout (SIGKILL,
out of memory, the runner lost: no exit path runs) does not leave it out for good.

A deploy that holds the lock records, in the String parameter ``<lock>/out-of-service``, each target it
is about to deregister (group ARN and name, its Id: an instance or an address, port and zone) and each
Auto Scaling process it is about to suspend, before the call, and forgets them once they are registered
again or resumed; the parameter is deleted when nothing is left out. The deploy that takes the lock next
(a killed build's lock, once stale) finds the record, registers those targets again, resumes those
processes, says so in a warning naming the build that left them (an error for what it could not put
back, e.g. an instance terminated since: its group's other targets are then registered one by one), and
deletes it; only then does it read the fleet. A record that cannot be written is a warning (the deploy
goes on: on its exit paths it puts everything back itself). The parameter lives under ``/deploy-lock/``,
which the lock's IAM statement already covers."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from pipe.aws.errors import error_code
from pipe.traffic.target_groups.groups import TargetGroup
from pipe.traffic.target_groups.waits import LoadBalancerError, healthy, poll_seconds, read_states

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

log = logging.getLogger("ssm-deploy")

SUFFIX = "/out-of-service"
DESCRIPTION = "ssm-deploy: what the deploy holding the lock took out of service (put back by the next deploy)"
Target = tuple[str, str, str, int | None, str | None]  # group ARN, group name, Id (instance or address), port, zone


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
    """The record as Parameter Store keeps it: each group's ARN and name once, then its targets as
    ``instance`` or ``instance:port`` (an address with a zone, or an IPv6 one: ``[id, port, zone]``), so a
    batch of a hundred instances fits a standard parameter's 4 KB."""
    groups: dict[str, dict[str, Any]] = {}
    for arn, name, target_id, port, zone in sorted(targets, key=str):
        group = groups.setdefault(arn, {"name": name, "targets": []})
        if zone is not None or ":" in target_id:
            group["targets"].append([target_id, port, zone])
        else:
            group["targets"].append(target_id if port is None else f"{target_id}:{port}")
    return json.dumps({"build": build, "groups": groups, "suspended": suspended}, separators=(",", ":"))


def decode(value: str) -> tuple[str, list[Target], dict[str, list[str]]]:
    """``encode``'s build, targets and suspended processes; ValueError, TypeError or AttributeError for
    a value it did not write."""
    record = json.loads(value)
    targets: list[Target] = []
    for arn, group in dict(record.get("groups", {})).items():
        for target in group["targets"]:
            if isinstance(target, list):
                target_id, port, zone = target
                targets.append((str(arn), str(group["name"]), str(target_id), _port(port), _zone(zone)))
                continue
            instance, _, text = str(target).partition(":")
            targets.append((str(arn), str(group["name"]), instance, int(text) if text else None, None))
    suspended = {str(g): [str(p) for p in ps] for g, ps in dict(record.get("suspended", {})).items()}
    return str(record.get("build", "?")), targets, suspended


def as_registered(target: Target) -> dict[str, Any]:
    """The TargetDescription RegisterTargets takes for a recorded target."""
    _, _, target_id, port, zone = target
    described: dict[str, Any] = {"Id": target_id}
    if port is not None:
        described["Port"] = port
    if zone is not None:
        described["AvailabilityZone"] = zone
    return described


def _port(value: Any) -> int | None:
    return None if value is None else int(value)


def _zone(value: Any) -> str | None:
    return None if value is None else str(value)


def what_a_killed_deploy_left(ssm: SSMClient, lock: str) -> tuple[str, list[Target]] | None:
    """For a dry run, which changes nothing: the build and the targets the record names, which the deploy
    would register again before it reads the fleet; None without a (readable) record."""
    try:
        build, targets, _ = decode(ssm.get_parameter(Name=record_name(lock))["Parameter"]["Value"])
    except (ClientError, BotoCoreError, ValueError, TypeError, AttributeError):
        return None
    return build, targets


def put_back_what_a_killed_deploy_left(
    ssm: SSMClient, elbv2: Any, autoscaling: Any, lock: str, healthy_timeout: int
) -> None:
    """Right after the lock is taken: register and resume what the previous holder left out, if it
    left a record (it was killed, or could not put everything back)."""
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
    problems: list[str] = []
    by_group: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for target in targets:
        by_group.setdefault((target[0], target[1]), []).append(as_registered(target))
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
