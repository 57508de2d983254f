"""Checks made before anything is sent: instances reachable by SSM, parameters readable."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from pipe.aws.errors import error_code, error_message, is_access_denied, permission_for
from pipe.aws.instances import ping_statuses
from pipe.config.settings import DeploySettings
from pipe.errors import NothingSent, PipeError
from pipe.execution import Execution
from pipe.limits import DESCRIBE_FILTER_BATCH, GET_PARAMETERS_BATCH
from pipe.model import SecretRef
from pipe.plan.pinned import pins_of
from pipe.plan.resolve import GONE_STATES, ec2_states
from pipe.runtime.redaction import Redactor

PREFLIGHT_THREADS = 8  # concurrent reads before sending: round trips overlap, within SSM's rate limits
log = logging.getLogger("ssm-deploy")


def check_instances(ssm: Any, instance_ids: list[str], region: str, variable: str = "INSTANCE_IDS") -> None:
    """Refuse instances that SSM does not manage or whose agent is not online; ``variable`` names
    where they came from (INSTANCE_IDS, or TARGETS that matched them)."""
    _judge_instances(_read_statuses(ssm, instance_ids), instance_ids, region, variable)


def _read_statuses(ssm: Any, instance_ids: list[str]) -> dict[str, str] | ClientError:
    try:
        return ping_statuses(ssm, instance_ids)
    except ClientError as error:
        return error


def _judge_instances(seen: dict[str, str] | ClientError, instance_ids: list[str], region: str, variable: str) -> None:
    if isinstance(seen, ClientError):
        if is_access_denied(seen):
            log.warning(
                "Skipping the agent check: the deploy role lacks ssm:DescribeInstanceInformation "
                f"({error_message(seen)}). Offline instances will show up as failed invocations instead."
            )
            return
        raise seen
    unmanaged = [i for i in instance_ids if i not in seen]
    offline = [f"{i} ({seen[i]})" for i in instance_ids if i in seen and seen[i] != "Online"]
    problems = []
    if unmanaged:
        problems.append(
            f"not managed by SSM in {region}: {', '.join(unmanaged)}. Check that the instance exists in "
            f"{region}, runs the SSM Agent, and has an instance profile with AmazonSSMManagedInstanceCore"
        )
    if offline:
        problems.append(
            f"SSM Agent not online: {', '.join(offline)}. Check that the instance is running and the "
            "agent is started (systemctl status amazon-ssm-agent) and can reach the SSM endpoints"
        )
    if problems:
        raise NothingSent(variable, "Instances " + "; ".join(problems))
    log.info(f"All {len(instance_ids)} instance(s) have the SSM Agent online")


def _judge_states(states: dict[str, str], region: str) -> None:
    """Refuse INSTANCE_IDS that EC2 says are not running (stopped, stopping, pending, terminated...), by state:
    the agent check would only say their agent is not online (or still Online, for a moment after a stop)."""
    if not states:
        return
    listed = ", ".join(f"{i} is {state}" for i, state in states.items())
    ids = " ".join(i for i, state in states.items() if state not in GONE_STATES)
    start = f"start it (aws ec2 start-instances --instance-ids {ids} --region {region}) and deploy once its SSM Agent "
    raise NothingSent(
        "INSTANCE_IDS",
        f"Not running in EC2: {listed}. It cannot run the deploy (SSM would hold its command, Delayed, until it "
        "starts or the delivery timeout passes), and started again it runs what it ran before",
        (start + "is online, or " if ids else "") + "remove it from INSTANCE_IDS",
    )


PROBE_COMMAND_ID = "00000000-0000-4000-8000-000000000000"  # a command id that never exists
PROBE_INSTANCE_ID = "i-00000000"  # when SSM resolves TARGETS: any well-formed id proves the permission


def check_follow_permissions(ssm: Any, role: str, instance_id: str) -> None:
    """Refuse to send a command the deploy role could not follow: probe the read calls first."""
    _judge_probes([_probe(ssm, operation, request) for operation, request in _probes(instance_id)], role)


def _probes(instance_id: str) -> list[tuple[str, dict[str, str | int]]]:
    return [
        ("list_commands", {"CommandId": PROBE_COMMAND_ID, "MaxResults": 1}),
        ("list_command_invocations", {"CommandId": PROBE_COMMAND_ID, "MaxResults": 1}),
        ("get_command_invocation", {"CommandId": PROBE_COMMAND_ID, "InstanceId": instance_id}),
    ]


def _probe(ssm: Any, operation: str, request: dict[str, str | int]) -> ClientError | None:
    try:
        getattr(ssm, operation)(**request)
    except ClientError as error:
        return error
    return None


def _judge_probes(answers: list[ClientError | None], role: str) -> None:
    for error in answers:
        if error is not None and is_access_denied(error):
            raise NothingSent(
                "The deploy role",
                f"{role} could send the command but not follow it ({error_message(error)})",
                f"allow {permission_for(error.operation_name)} for the deploy role",
            )
        # any other answer (no such command or invocation) proves the permission


def check_parameters(ssm: Any, secrets: list[SecretRef], redactor: Redactor, role: str) -> dict[str, str]:
    """Read every SECRETS parameter with decryption; keep values only to mask them in output. Returns
    each reference pinned to the version read (``pinned.pins_of``)."""
    batches = parameter_batches(secrets)
    return _judge_parameters([_read_parameters(ssm, batch) for batch in batches], batches, secrets, redactor, role)


def parameter_batches(secrets: list[SecretRef]) -> list[list[str]]:
    names = list(dict.fromkeys(ref.parameter for ref in secrets))
    return [names[start : start + GET_PARAMETERS_BATCH] for start in range(0, len(names), GET_PARAMETERS_BATCH)]


def _read_parameters(ssm: Any, batch: list[str]) -> dict[str, Any] | ClientError:
    try:
        response: dict[str, Any] = ssm.get_parameters(Names=batch, WithDecryption=True)
    except ClientError as error:
        return error
    return response


def _judge_parameters(
    answers: list[dict[str, Any] | ClientError],
    batches: list[list[str]],
    secrets: list[SecretRef],
    redactor: Redactor,
    role: str,
) -> dict[str, str]:
    """Refuses a parameter missing or unreadable; otherwise each reference pinned to the version read."""
    missing: list[str] = []
    pins: dict[str, str] = {}
    for batch, response in zip(batches, answers, strict=True):
        if isinstance(response, ClientError):
            raise PipeError(_parameter_access_message(response, batch, role))
        for parameter in response.get("Parameters", []):
            redactor.add(parameter.get("Value"), name=f"SECRETS parameter {parameter.get('Name')}")
        pins |= pins_of(response.get("Parameters", []))
        missing.extend(response.get("InvalidParameters", []))
    if missing:
        owners = [ref.env_name for ref in secrets if ref.parameter in missing]
        raise NothingSent(
            "SECRETS",
            f"Parameter(s) not found: {', '.join(missing)} (for {', '.join(owners)}). Create them in Parameter "
            "Store in this region and account, or fix the names." + _not_found_hints(missing),
        )
    if batches:
        count = sum(len(batch) for batch in batches)
        log.info(f"Checked {count} parameter(s): they exist and the deploy role can decrypt them")
    return pins


def _not_found_hints(missing: list[str]) -> str:
    hints = ""
    if any(":" in (name.rsplit(":parameter", 1)[-1]) for name in missing):
        hints += " A :version or :label must exist on the parameter (labels are attached with label-parameter-version)."
    if any(name.startswith("arn:") for name in missing):
        hints += (
            " A parameter of another account is found by its ARN only once its owner shares it with this account "
            "(AWS RAM), and only in the region of the ARN, which must be AWS_DEFAULT_REGION."
        )
    return hints


def parameter_resource(parameter: str) -> str:
    """The IAM resource of a SECRETS reference: its ARN, without a :version or :label."""
    if parameter.startswith("arn:"):
        return ":".join(parameter.split(":")[:6])
    name = parameter.split(":", 1)[0]
    return "arn:aws:ssm:<region>:<account>:parameter" + (name if name.startswith("/") else "/" + name)


def _parameter_access_message(error: ClientError, names: list[str], role: str) -> str:
    message = error_message(error)
    listed = ", ".join(names)
    if is_access_denied(error) and "kms" in message.lower():  # "kms:Decrypt", "Service: AWSKMS"
        return (
            f"SECRETS: nothing was sent. {role} may read {listed} but cannot decrypt them: KMS denied "
            f"kms:Decrypt ({message}). Fix: allow kms:Decrypt for {role} in the key policy of the "
            "parameters' KMS key (or by IAM with a kms:ViaService condition for ssm.<region>.amazonaws.com)."
        )
    if is_access_denied(error):
        resources = ", ".join(dict.fromkeys(parameter_resource(name) for name in names))
        return (
            f"SECRETS: nothing was sent. {role} is not allowed ssm:GetParameters on {listed} "
            f"({message}). Fix: allow ssm:GetParameters on {resources} in the deploy role's policy (a version "
            "or label needs no resource of its own; arn:aws:ssm:<region>:<account>:parameter/deploy/<environment>/* "
            "covers an environment)."
        )
    return f"SECRETS: could not read {listed} ({error_code(error)}: {message})."


def preflight(settings: DeploySettings, targeted: list[str] | None, role: str, ctx: Execution) -> dict[str, str]:
    """Before sending: the agents are online, the deploy role can follow what it sends, and it can
    read (and decrypt) every SECRETS parameter, whose values are kept only to mask them. Returns each
    SECRETS reference pinned to the version read (``pinned.pins_of``).

    The reads do not depend on each other, so they all go out at once (boto3 clients are
    thread-safe; sessions are not, and none is made here); their answers are then judged in this
    order, so the first problem reported, and the log, are the same as if they had run one by one."""
    ssm = ctx.clients.ssm
    instance = targeted[0] if targeted else PROBE_INSTANCE_ID
    targeted = targeted or []
    agent_batches = [
        targeted[start : start + DESCRIBE_FILTER_BATCH] for start in range(0, len(targeted), DESCRIBE_FILTER_BATCH)
    ]
    secret_batches = parameter_batches(settings.secrets)
    with ThreadPoolExecutor(max_workers=PREFLIGHT_THREADS, thread_name_prefix="preflight") as pool:
        agents = [pool.submit(_read_statuses, ssm, batch) for batch in agent_batches]
        probes = [pool.submit(_probe, ssm, operation, request) for operation, request in _probes(instance)]
        parameters = [pool.submit(_read_parameters, ssm, batch) for batch in secret_batches]
        given = targeted if not settings.targets else []  # TARGETS resolved running instances only
        states = pool.submit(ec2_states, ctx.clients.ec2, given) if given else None
        if states is not None:
            _judge_states(states.result(), settings.region)
        if targeted:
            variable = "TARGETS" if settings.targets else "INSTANCE_IDS"
            _judge_instances(_merged([future.result() for future in agents]), targeted, settings.region, variable)
        _judge_probes([future.result() for future in probes], role)
        ctx.stops.raise_if_requested()
        answers = [future.result() for future in parameters]
        return _judge_parameters(answers, secret_batches, settings.secrets, ctx.redactor, role)


def _merged(answers: list[dict[str, str] | ClientError]) -> dict[str, str] | ClientError:
    merged: dict[str, str] = {}
    for answer in answers:
        if isinstance(answer, ClientError):
            return answer
        merged |= answer
    return merged
