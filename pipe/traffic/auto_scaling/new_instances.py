"""New instances of an Auto Scaling group install the live release before they enter service.

The group holds each instance it launches in ``Pending:Wait`` with a launch lifecycle hook (the team's;
the pipe checks it, never creates it: the group belongs to the team's infrastructure code). A State
Manager association per SERVICE and ENVIRONMENT (``ssm-deploy-<service>-<environment>``) targets the
group's instances; State Manager runs it on each new managed instance of the group as it comes online
(CreateAssociation: "for dynamic targets, such as an autoscaling group, State Manager applies the
configuration when new managed nodes are added to the group"). Its run is the pipe's own release script
for the live release (``install_body``: download, verify, unpack, switch, ACTIVATE_COMMANDS,
VERIFY_PROCESSES), then the health check, then CompleteLifecycleAction CONTINUE, or ABANDON when a step
failed (the group terminates the instance and launches another).

The association is created or updated (UpdateAssociation, the whole definition: "the system removes all
optional parameters from the request and overwrites the association with null values for those
parameters") only after a deploy or rollback succeeded, so a failed deploy never changes what new
instances install. An update runs the association again on every target ("when you update an
association, the system runs it immediately"): the script first asks whether a launch hook holds the
instance (RecordLifecycleActionHeartbeat, which also extends its timeout) and does nothing on an
instance in service, which the rollout itself deployed.

Alternatives argued: user data belongs to the launch template (the team's, changed by a new template
version), runs before the agent may be registered, and its failure is invisible; EventBridge with an
Automation runbook needs a rule, a role and a runbook the team must own. The association needs nothing
new and runs the same Run Command document the pipe already uses."""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from pipe.aws.clients import Clients
from pipe.aws.errors import error_code, error_message, is_access_denied
from pipe.config.settings import DeploySettings
from pipe.errors import DeployFailed, NothingSent
from pipe.limits import MAX_SCRIPT_BYTES
from pipe.model import SecretRef
from pipe.plan.script import build_script, healthcheck_body, script_bytes
from pipe.release.remote import install_body
from pipe.release.stage import Release
from pipe.traffic import RolloutScope
from pipe.traffic.auto_scaling.groups import VARIABLE, AutoScalingError, call
from pipe.traffic.auto_scaling.hold import ScalingHold
from pipe.traffic.auto_scaling.launch_bounds import AGENT_MARGIN_SECONDS, install_bound, launch_bound

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

log = logging.getLogger("ssm-deploy")
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
ABANDON, CONTINUE = "ABANDON", "CONTINUE"
SUGGESTED_HOOK_NAME = "ssm-deploy-launch"
HEARTBEAT_MAX = 7200  # PutLifecycleHook HeartbeatTimeout: 30 to 7200 seconds
DOCUMENT = "AWS-RunShellScript"
GROUP_TAG = "tag:aws:autoscaling:groupName"
_ASSOCIATION_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")  # AssociationName: ^[a-zA-Z0-9_\-.]{3,128}$
INSTANCE_ROLE_DENIED = (
    "ssm-deploy: could not tell whether a launch lifecycle hook holds this instance: the instance role may not call "
    "autoscaling:RecordLifecycleActionHeartbeat; allow it and autoscaling:CompleteLifecycleAction on the group in "
    "the instance role's policy (see the README's IAM section). AWS said:"
)
DEPLOY_ROLE_FIX = (
    "allow autoscaling:DescribeLifecycleHooks, ssm:ListAssociations, ssm:CreateAssociation and "
    "ssm:UpdateAssociation in the deploy role's policy (see the README's IAM section)"
)


@dataclass(frozen=True)
class NewInstances:
    """The association that makes new instances of the groups install this release, and its run."""

    association_name: str
    hooks: tuple[tuple[str, str], ...]  # (group, its launch hook)
    commands: tuple[str, ...]  # AWS-RunShellScript's commands: the install, the check, the hook's result
    execution_timeout: int
    release_id: str

    def request(self) -> dict[str, Any]:
        """The whole definition, as CreateAssociation and UpdateAssociation both take it."""
        return {
            "Name": DOCUMENT,
            "AssociationName": self.association_name,
            "Targets": [{"Key": GROUP_TAG, "Values": [group for group, _ in self.hooks]}],
            "Parameters": {"commands": list(self.commands), "executionTimeout": [str(self.execution_timeout)]},
        }


def association_name(service: str, environment: str) -> str:
    name = "-".join(part for part in ("ssm-deploy", service, environment) if part)
    return _ASSOCIATION_NAME_UNSAFE.sub("_", name)[:128]


def hook_command(group: str, heartbeat: int) -> str:
    return (
        f"aws autoscaling put-lifecycle-hook --auto-scaling-group-name {shlex.quote(group)} "
        f"--lifecycle-hook-name {SUGGESTED_HOOK_NAME} --lifecycle-transition {LAUNCHING} "
        f"--heartbeat-timeout {heartbeat} --default-result {ABANDON}"
    )


def plan_new_instances(
    settings: DeploySettings,
    clients: Clients,
    scopes: Sequence[RolloutScope],
    release: Release | None,
    secrets: Sequence[SecretRef],
) -> NewInstances | None:
    """In release mode with Auto Scaling groups: each group's launch hook checked (reads only), and the
    association's run for this release. NothingSent when a hook is missing or cannot be read."""
    read = [g for scope in scopes if isinstance(scope, ScalingHold) for g in scope.groups]
    if release is None or not read:
        return None
    groups = [g.name for g in read]
    warm = next((g.name for g in read if g.warm_pool), None)
    if warm is not None:
        raise NothingSent(
            VARIABLE,
            f"the Auto Scaling group {warm} keeps a warm pool, whose instances a release deploy cannot bring "
            "to the live release before they enter service: the launch hook holds them a second time when they "
            "move into the group, and nothing the pipe sets up runs then, so the group would abandon them",
            f"remove the warm pool (aws autoscaling delete-warm-pool --auto-scaling-group-name {shlex.quote(warm)}) "
            "or deploy this group in command mode (COMMANDS without ARTIFACT or RELEASE)",
        )
    bound, needed = install_bound(settings), launch_bound(settings)
    if needed > HEARTBEAT_MAX:
        raise NothingSent(
            "EXECUTION_TIMEOUT",
            f"a new instance's install may take {bound} s (EXECUTION_TIMEOUT plus HEALTHCHECK_TIMEOUT), more than "
            f"a launch lifecycle hook's longest heartbeat ({HEARTBEAT_MAX} s) less {AGENT_MARGIN_SECONDS} s for the "
            "instance to come online",
            f"lower EXECUTION_TIMEOUT plus HEALTHCHECK_TIMEOUT to {HEARTBEAT_MAX - AGENT_MARGIN_SECONDS} s",
        )
    hooks = tuple((group, _launch_hook(clients, group, needed)) for group in groups)
    new = NewInstances(
        association_name(settings.service, settings.environment or ""),
        hooks,
        tuple(build_script(settings, _run_body(settings, release, hooks), secrets)),
        bound,
        release.plan.release_id,
    )
    size = script_bytes(new.commands)
    if size > MAX_SCRIPT_BYTES:
        raise NothingSent(
            VARIABLE,
            f"the script new instances of the group run makes {size:,} bytes; at most {MAX_SCRIPT_BYTES:,} fit",
            "put the steps in a script inside the artifact and run that from ACTIVATE_COMMANDS",
        )
    _readable(clients.ssm, new.association_name)
    return new


def _launch_hook(clients: Clients, group: str, needed: int) -> str:
    """The name of the group's launch hook that abandons on timeout and waits long enough."""
    try:
        answer = call(
            "DescribeLifecycleHooks", clients.autoscaling.describe_lifecycle_hooks, AutoScalingGroupName=group
        )
    except AutoScalingError as error:
        raise NothingSent(VARIABLE, str(error), DEPLOY_ROLE_FIX) from None
    found = []
    for hook in answer.get("LifecycleHooks", []):
        if hook.get("LifecycleTransition") != LAUNCHING:
            continue
        name = str(hook.get("LifecycleHookName"))
        if hook.get("DefaultResult") == ABANDON and int(hook.get("HeartbeatTimeout") or 0) >= needed:
            return name
        result, heartbeat = hook.get("DefaultResult"), hook.get("HeartbeatTimeout")
        found.append(f"{name} (DefaultResult {result}, HeartbeatTimeout {heartbeat})")
    have = f"its launch hook(s) {', '.join(found)} do not" if found else "it has no launch lifecycle hook, which would"
    raise NothingSent(
        VARIABLE,
        f"new instances of the Auto Scaling group {group} could enter service before they installed the live "
        f"release: {have} hold them with DefaultResult {ABANDON} for at least {needed} s",
        f"add the hook (the pipe does not change the group): {hook_command(group, needed)}",
    )


def _readable(ssm: SSMClient, name: str) -> None:
    try:
        _find(ssm, name)
    except ClientError as error:
        fix = DEPLOY_ROLE_FIX if is_access_denied(error) else "retry; if it persists, check SSM in this Region"
        why = f"ListAssociations refused: {error_code(error)}: {error_message(error)}"
        raise NothingSent(VARIABLE, why, fix) from None


def _find(ssm: SSMClient, name: str) -> str | None:
    answer = ssm.list_associations(AssociationFilterList=[{"key": "AssociationName", "value": name}])
    ids = [str(a["AssociationId"]) for a in answer.get("Associations", [])]
    return ids[0] if ids else None


def _run_body(settings: DeploySettings, release: Release, hooks: Sequence[tuple[str, str]]) -> str:
    """Bash: which launch hook holds this instance (none: in service, nothing to do), the release's install,
    the health check, and the hook's result."""
    plan = release.plan
    region = shlex.quote(settings.region)
    # a hook that does not hold the instance answers ValidationError; a refusal (AccessDenied) says nothing
    # about the hook, and taking it for "in service" would leave a held instance to be abandoned in silence
    lines = ["ssm_deploy_hold=''", "ssm_deploy_denied=''"]
    for group, hook in hooks:
        args = f"--auto-scaling-group-name {shlex.quote(group)} --lifecycle-hook-name {shlex.quote(hook)}"
        lines += [
            '[ -n "$ssm_deploy_hold" ] || if ssm_deploy_said=$(aws autoscaling record-lifecycle-action-heartbeat '
            f'--region {region} {args} --instance-id "$AWS_SSM_INSTANCE_ID" 2>&1 >/dev/null); then '
            f'ssm_deploy_hold={shlex.quote(args)}; else case "$ssm_deploy_said" in *AccessDenied*) '
            'ssm_deploy_denied="$ssm_deploy_said" ;; esac; fi',
        ]
    lines += [
        'if [ -z "$ssm_deploy_hold" ] && [ -n "$ssm_deploy_denied" ]; then',
        f'  echo {shlex.quote(INSTANCE_ROLE_DENIED)} "$ssm_deploy_denied" >&2',
        "  exit 1",
        "fi",
    ]
    # the install already read the processes (VERIFY_PROCESSES) after ACTIVATE_COMMANDS; the second read the
    # pipe makes after the health check would repeat the release functions, over the script's bound
    check = healthcheck_body(settings, plan.release_id) if settings.healthcheck_commands else ""
    lines += [
        'if [ -z "$ssm_deploy_hold" ]; then',
        "  echo 'ssm-deploy: no launch lifecycle hook holds this instance: nothing to install (the pipe deploys "
        "instances in service)'",
        "  exit 0",
        "fi",
        f"echo {shlex.quote(f'ssm-deploy: installing release {plan.release_id} before this instance enters service')}",
        "(",
        install_body(plan),
        ")",
        "ssm_deploy_step=$?",
    ]
    if check:
        lines += ['if [ "$ssm_deploy_step" -eq 0 ]; then', "(", check, ")", "ssm_deploy_step=$?", "fi"]
    lines += [
        f'ssm_deploy_result={CONTINUE}; [ "$ssm_deploy_step" -eq 0 ] || ssm_deploy_result={ABANDON}',
        f"aws autoscaling complete-lifecycle-action --region {region} $ssm_deploy_hold "
        '--instance-id "$AWS_SSM_INSTANCE_ID" --lifecycle-action-result "$ssm_deploy_result" || exit 1',
        'echo "ssm-deploy: lifecycle action completed: $ssm_deploy_result"',
        'exit "$ssm_deploy_step"',
    ]
    return "\n".join(lines)


def converge_new_instances(ssm: SSMClient, new: NewInstances) -> None:
    """After a deploy or rollback that succeeded: the association installs its release on new instances.
    DeployFailed when it cannot be written (new instances would install the release before)."""
    request = new.request()
    try:
        found = _find(ssm, new.association_name)
        if found is None:
            ssm.create_association(**request)
        else:
            ssm.update_association(AssociationId=found, **request)
    except (ClientError, BotoCoreError) as error:
        why = f"{error_code(error)}: {error_message(error)}" if isinstance(error, ClientError) else str(error)
        fix = f" Fix: {DEPLOY_ROLE_FIX}." if isinstance(error, ClientError) and is_access_denied(error) else ""
        raise DeployFailed(
            f"The deploy succeeded, but the association {new.association_name} could not be written ({why}): "
            f"new instances of {', '.join(g for g, _ in new.hooks)} still install the release live before it.{fix}"
        ) from None
    groups = ", ".join(f"{group} (hook {hook})" for group, hook in new.hooks)
    log.info(
        f"New instances of {groups} install release {new.release_id} before they enter service "
        f"(association {new.association_name} {'created' if found is None else 'updated'})"
    )
