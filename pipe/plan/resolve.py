"""What the pipe learns about the target instances: which ones TARGETS match (EC2, and SSM for hybrid
nodes), and their names."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipe.aws.clients import Clients
from pipe.aws.errors import error_code, error_message, is_access_denied
from pipe.config.settings import DeploySettings
from pipe.errors import NothingSent
from pipe.model import SecretRef, Target
from pipe.plan.parameter_path import resolve_path
from pipe.runtime.redaction import Redactor

log = logging.getLogger("ssm-deploy")
HYBRID_PREFIX = "mi-"  # hybrid (on-premises) managed nodes: SSM knows them, EC2 does not
# an instance in these states is still its fleet's when TARGETS match it but for its state: it runs nothing now,
# and started (again) it runs the release it had
STOPPED_STATES = ("pending", "stopping", "stopped")
GONE_STATES = ("shutting-down", "terminated")  # no longer running for good
INSTANCE_FILTER_VALUES = 200  # instance ids one DescribeInstances 'instance-id' filter is given at once


def resolve_targets(ec2: Any, resource_groups: Any, targets: list[Target], ssm: Any) -> list[str] | None:
    """Managed nodes matched by ``targets`` (SSM's rules: keys AND'ed, values OR'ed): running EC2
    instances through EC2, hybrid (``mi-``) nodes through SSM's own inventory, which alone knows them.

    None when they cannot be resolved here (no permission, or a key EC2 cannot filter on): SSM
    still resolves them when the command is sent, and the agent check is then skipped.
    """
    try:
        tag_filters, instance_ids = _selection(resource_groups, targets)
        if instance_ids is not None and not instance_ids:
            return []
        found = running_instances(ec2, tag_filters, instance_ids)
    except ClientError as error:
        reason = error_message(error) if is_access_denied(error) else str(error)
        log.warning(f"Could not resolve TARGETS before sending ({reason}); the agent check is skipped.")
        return None
    except BotoCoreError as error:
        log.warning(f"Could not resolve TARGETS before sending ({error}); the agent check is skipped.")
        return None
    hybrid = _hybrid_nodes(ssm, tag_filters, instance_ids)
    if hybrid is None:  # not allowed to ask SSM: what EC2 found stands, if anything
        return sorted(set(found)) or None
    return sorted(set(found) | set(hybrid))


def _selection(resource_groups: Any, targets: list[Target]) -> tuple[list[dict[str, Any]], set[str] | None]:
    """What ``targets`` select: EC2 tag filters, and the instance ids they are limited to (None: any)."""
    tag_filters: list[dict[str, Any]] = []
    instance_ids: set[str] | None = None
    for target in targets:
        if target.key.startswith("tag:") or target.key == "tag-key":
            tag_filters.append({"Name": target.key, "Values": list(target.values)})
        elif target.key == "InstanceIds":
            instance_ids = _intersect(instance_ids, set(target.values))
        elif target.key == "resource-groups:Name":
            instance_ids = _intersect(instance_ids, _group_instances(resource_groups, target.values))
    return tag_filters, instance_ids


def no_longer_targeted(clients: Clients, targets: list[Target], candidates: Sequence[str]) -> dict[str, str]:
    """Which of ``candidates`` (instances TARGETS matched when the deploy was planned) TARGETS no longer match,
    resolved again as the plan resolved them, and why: terminated (or shutting down), or without the tags or
    resource group. One stopped (stopping, or starting again) that TARGETS still match is still in the fleet, named
    so: it did not get the deploy, and started again it runs what it had. A candidate that cannot be told apart
    (a call refused or failed, a hybrid node SSM does not list) counts as still matched: {} when nothing can
    be read."""
    try:
        tag_filters, instance_ids = _selection(clients.resource_groups, targets)
        matched = set(running_instances(clients.ec2, tag_filters, instance_ids))
        unmatched = [i for i in candidates if i not in matched and not i.startswith(HYBRID_PREFIX)]
        states = _states(clients.ec2, unmatched) if unmatched else {}
        idle = [i for i in unmatched if states.get(i) in STOPPED_STATES]
        stopped = _still_matched(clients.ec2, tag_filters, instance_ids, idle) if idle else []
    except (ClientError, BotoCoreError, NothingSent) as error:
        reason = error_message(error) if isinstance(error, ClientError) else str(error)
        log.warning(f"Could not resolve TARGETS again to tell whether instances left the fleet ({reason}).")
        return {}
    for instance_id in stopped:
        log.warning(
            f"{instance_id} is {states[instance_id]}, still matched by TARGETS: still in the fleet, it did not get "
            "the deploy (started again, it runs the release it had)"
        )
    hybrid = [i for i in candidates if i.startswith(HYBRID_PREFIX)]
    listed = _hybrid_nodes(clients.ssm, tag_filters, instance_ids) if hybrid else []
    gone = {i: "" for i in hybrid if listed is not None and i not in listed}
    gone |= {i: states.get(i, "terminated") for i in unmatched if i not in stopped}
    return {i: _why_not_targeted(state) for i, state in gone.items()}


def _still_matched(
    ec2: Any, tag_filters: list[dict[str, Any]], instance_ids: set[str] | None, candidates: list[str]
) -> list[str]:
    """Those of ``candidates`` (each stopped, stopping or pending as last read) that TARGETS still match (tags,
    resource group): asked in those states or running, as one started again since that read is still matched."""
    limited = set(candidates) if instance_ids is None else instance_ids & set(candidates)
    if not limited:
        return []
    found = set(instances_in(ec2, tag_filters, limited, ("running", *STOPPED_STATES)))
    return [i for i in candidates if i in found]


def _why_not_targeted(state: str) -> str:
    if state in GONE_STATES:
        return f"no longer running ({state}) since the deploy was planned"
    return "no longer matched by TARGETS (its tags or resource group changed since the deploy was planned)"


def _states(ec2: Any, instance_ids: list[str]) -> dict[str, str]:
    """{instance id: its EC2 state}; an instance EC2 no longer knows is left out."""
    return {
        row["InstanceId"]: str(row.get("State", {}).get("Name", "")) for row in described_instances(ec2, instance_ids)
    }


def running_instances(ec2: Any, tag_filters: list[dict[str, Any]], instance_ids: set[str] | None) -> list[str]:
    """The running EC2 instances among ``instance_ids`` (all of them when None) with the tags; hybrid nodes
    are never EC2's."""
    return instances_in(ec2, tag_filters, instance_ids, ("running",))


def instances_in(
    ec2: Any, tag_filters: list[dict[str, Any]], instance_ids: set[str] | None, states: Sequence[str]
) -> list[str]:
    """The EC2 instances in one of ``states`` among ``instance_ids`` (all of them when None) with the tags."""
    return list(instance_states(ec2, tag_filters, instance_ids, states))


def instance_states(
    ec2: Any, tag_filters: list[dict[str, Any]], instance_ids: set[str] | None, states: Sequence[str]
) -> dict[str, str]:
    """{instance id: its EC2 state} of the EC2 instances in one of ``states`` among ``instance_ids`` (all of them
    when None) with the tags."""
    filters: list[dict[str, Any]] = [{"Name": "instance-state-name", "Values": list(states)}, *tag_filters]
    if instance_ids is None:
        return _instance_states(ec2, filters)
    ec2_ids = sorted(i for i in instance_ids if not i.startswith(HYBRID_PREFIX))
    found: dict[str, str] = {}
    for start in range(0, len(ec2_ids), INSTANCE_FILTER_VALUES):
        chunk = ec2_ids[start : start + INSTANCE_FILTER_VALUES]
        found |= _instance_states(ec2, [*filters, {"Name": "instance-id", "Values": chunk}])
    return found


def _instance_states(ec2: Any, filters: list[dict[str, Any]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                found[instance["InstanceId"]] = str(instance.get("State", {}).get("Name", ""))
    return found


def stopped_targets(clients: Clients, targets: list[Target]) -> dict[str, str]:
    """{instance id: its EC2 state} of the EC2 instances ``targets`` match but for their state: stopped,
    stopping or pending. SSM targets them too ("the system locates and attempts to run the command on all
    managed nodes that match the specified tags"): a stopped node's command waits, Delayed, until it starts or
    the delivery timeout passes. {} when EC2 cannot be asked (the plan resolved TARGETS just before)."""
    try:
        tag_filters, instance_ids = _selection(clients.resource_groups, targets)
        if instance_ids is not None and not instance_ids:
            return {}
        return instance_states(clients.ec2, tag_filters, instance_ids, STOPPED_STATES)
    except (ClientError, BotoCoreError, NothingSent) as error:
        reason = error_message(error) if isinstance(error, ClientError) else str(error)
        log.warning(f"Could not tell whether TARGETS match stopped instances ({reason}).")
        return {}


def ec2_states(ec2: Any, instance_ids: Sequence[str]) -> dict[str, str]:
    """{instance id: its EC2 state} of the EC2 instances among ``instance_ids`` that are not running, {} when EC2
    cannot be asked (the deploy role lacks ec2:DescribeInstances: the agent check still refuses them)."""
    ec2_ids = [i for i in instance_ids if not i.startswith(HYBRID_PREFIX)]
    try:
        states = _states(ec2, ec2_ids) if ec2_ids else {}
    except (ClientError, BotoCoreError):
        return {}
    return {i: states[i] for i in ec2_ids if states.get(i, "running") != "running"}


def _hybrid_nodes(ssm: Any, tag_filters: list[dict[str, Any]], instance_ids: set[str] | None) -> list[str] | None:
    """The hybrid nodes the targets select; None when SSM refuses to say.

    DescribeInstanceInformation takes ``tag:<key>`` and ``tag-key`` filters, but "tag filters can't
    be combined with other filter types": the rows are narrowed to hybrid nodes (ResourceType
    ManagedInstance) here, not by a ResourceType filter."""
    listed = None if instance_ids is None else {i for i in instance_ids if i.startswith(HYBRID_PREFIX)}
    if listed is not None and not (listed and tag_filters):
        return sorted(listed or [])  # no tag to check: the agent check then asks SSM about each of them
    filters = [{"Key": f["Name"], "Values": f["Values"]} for f in tag_filters] or [
        {"Key": "ResourceType", "Values": ["ManagedInstance"]}
    ]
    found: list[str] = []
    try:
        for page in ssm.get_paginator("describe_instance_information").paginate(Filters=filters):
            found += [
                row["InstanceId"]
                for row in page.get("InstanceInformationList", [])
                if row.get("ResourceType") == "ManagedInstance"
            ]
    except ClientError as error:
        why = "the deploy role lacks ssm:DescribeInstanceInformation" if is_access_denied(error) else "SSM refused"
        log.warning(f"Hybrid (mi-) nodes in TARGETS are not resolved before sending: {why} ({error_message(error)}).")
        return None
    except BotoCoreError as error:
        log.warning(f"Hybrid (mi-) nodes in TARGETS are not resolved before sending ({error}).")
        return None
    return [i for i in found if listed is None or i in listed]


def instance_names(ec2: Any, instance_ids: list[str]) -> dict[str, str]:
    """Name tags, used to label output lines when every name is unique; {} when unavailable."""
    names: dict[str, str] = {}
    try:
        for instance in described_instances(ec2, instance_ids):
            tags = {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}
            if tags.get("Name"):
                names[instance["InstanceId"]] = tags["Name"]
    except ClientError as error:
        if is_access_denied(error):
            log.warning("Output is labelled with instance ids: the deploy role lacks ec2:DescribeInstances.")
            return {}
        raise
    unique = len(set(names.values())) == len(names) == len(instance_ids)
    return names if unique else {}


def described_instances(ec2: Any, instance_ids: Sequence[str]) -> Iterator[dict[str, Any]]:
    """DescribeInstances' row of each of ``instance_ids`` EC2 knows (terminated ones for a while too),
    INSTANCE_FILTER_VALUES ids a request; ClientError or BotoCoreError as botocore raises them."""
    for start in range(0, len(instance_ids), INSTANCE_FILTER_VALUES):
        chunk = list(instance_ids[start : start + INSTANCE_FILTER_VALUES])
        pages = ec2.get_paginator("describe_instances").paginate(Filters=[{"Name": "instance-id", "Values": chunk}])
        for page in pages:
            for reservation in page.get("Reservations", []):
                yield from reservation.get("Instances", [])


def _intersect(current: set[str] | None, new: set[str]) -> set[str]:
    return new if current is None else current & new


def _group_instances(resource_groups: Any, names: tuple[str, ...]) -> set[str]:
    found: set[str] = set()
    for name in names:
        pages = resource_groups.get_paginator("list_group_resources").paginate(Group=name)
        try:
            listed = list(pages)
        except ClientError as error:
            if "NotFound" in error_code(error):
                raise NothingSent(
                    "TARGETS", f"There is no resource group {name!r} here", "check its name and region"
                ) from None
            raise
        for page in listed:
            for item in page.get("ResourceIdentifiers", []):
                arn = str(item.get("ResourceArn", ""))
                if ":instance/" in arn or ":managed-instance/" in arn:  # EC2 instances, hybrid nodes
                    found.add(arn.rsplit("/", 1)[-1])
    return found


def resolve(settings: DeploySettings, clients: Clients) -> list[str] | None:
    """The instances the deploy targets, in order: INSTANCE_IDS, or the ones TARGETS match now (None
    when they cannot be resolved here: SSM then resolves TARGETS when the command is sent)."""
    if not settings.targets:
        return list(settings.instance_ids)
    found = resolve_targets(clients.ec2, clients.resource_groups, settings.targets, clients.ssm)
    if found is None:
        return None
    if not found:
        raise NothingSent(
            "TARGETS",
            f"{'; '.join(map(str, settings.targets))} match no running instance or hybrid node in {settings.region}",
            "check the tag names and values (they are case-sensitive)",
        )
    log.info(f"TARGETS match {len(found)} running instance(s)")
    return found


def resolve_parameters(settings: DeploySettings, ssm: Any, redactor: Redactor, role: str) -> list[SecretRef]:
    """PARAMETERS_PATH: every parameter under it, as a secret read on the instances (none without it)."""
    if not settings.parameters_path:
        return []
    taken = {ref.env_name for ref in settings.secrets} | {name for name, _ in settings.variables}
    return resolve_path(ssm, settings.parameters_path, taken, redactor, role)


def label_instances(ec2: Any, targeted: list[str] | None) -> dict[str, str]:
    """Name tags label the output lines of a fleet (one instance needs no label)."""
    if targeted and len(targeted) > 1:
        return instance_names(ec2, targeted)
    return {}
