"""pipe.plan.preflight with a stubbed SSM client: agent status and readable SECRETS before anything is sent."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from mypy_boto3_ssm.client import SSMClient

from pipe.errors import PipeError
from pipe.model import SecretRef
from pipe.plan.preflight import check_instances, check_parameters, preflight
from pipe.runtime.interruption import StopRequests
from pipe.runtime.redaction import MASK, Redactor
from unit.unit_support import INSTANCE_A, INSTANCE_B, INSTANCE_C, REGION, make_settings, ssm_client

ROLE = "arn:aws:sts::123456789012:assumed-role/deploy-production/ssm-deploy-app-42"
KMS_DENIED = (
    "The ciphertext refers to a customer master key that does not exist, does not exist in this region, "
    "or you are not allowed to access. (Service: AWSKMS; Status Code: 400; Error Code: AccessDeniedException)"
)


def iam_denied(parameter: str) -> str:
    return (
        f"User: {ROLE} is not authorized to perform: ssm:GetParameters on resource: "
        f"arn:aws:ssm:{REGION}:123456789012:parameter{parameter} because no identity-based policy "
        "allows the ssm:GetParameters action"
    )


@pytest.fixture
def stubbed() -> Iterator[tuple[SSMClient, Stubber]]:
    client = ssm_client()
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def info(instance_id: str, ping: str) -> dict[str, Any]:
    return {"InstanceId": instance_id, "PingStatus": ping}


def describe_params(ids: list[str], token: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"Filters": [{"Key": "InstanceIds", "Values": ids}]}
    if token:
        params["NextToken"] = token
    return params


# --- check_instances ----------------------------------------------------------------------------


def test_all_online_passes(stubbed: tuple[SSMClient, Stubber], caplog: pytest.LogCaptureFixture) -> None:
    client, stubber = stubbed
    ids = [INSTANCE_A, INSTANCE_B]
    stubber.add_response(
        "describe_instance_information",
        {"InstanceInformationList": [info(INSTANCE_A, "Online"), info(INSTANCE_B, "Online")]},
        describe_params(ids),
    )
    with caplog.at_level(logging.INFO, logger="ssm-deploy"):
        check_instances(client, ids, REGION)
    assert "All 2 instance(s) have the SSM Agent online" in caplog.text


def test_unmanaged_instance_refused(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    ids = [INSTANCE_A, INSTANCE_B]
    stubber.add_response(
        "describe_instance_information",
        {"InstanceInformationList": [info(INSTANCE_A, "Online")]},
        describe_params(ids),
    )
    with pytest.raises(PipeError) as error:
        check_instances(client, ids, REGION)
    message = str(error.value)
    assert message.startswith("INSTANCE_IDS: nothing was sent.")
    assert f"not managed by SSM in {REGION}: {INSTANCE_B}." in message
    assert INSTANCE_A not in message
    assert "AmazonSSMManagedInstanceCore" in message
    assert "runs the SSM Agent" in message


def test_connection_lost_instance_refused(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    ids = [INSTANCE_A, INSTANCE_B, INSTANCE_C]
    stubber.add_response(
        "describe_instance_information",
        {
            "InstanceInformationList": [
                info(INSTANCE_A, "Online"),
                info(INSTANCE_B, "ConnectionLost"),
                info(INSTANCE_C, "Inactive"),
            ]
        },
        describe_params(ids),
    )
    with pytest.raises(PipeError) as error:
        check_instances(client, ids, REGION)
    message = str(error.value)
    assert f"SSM Agent not online: {INSTANCE_B} (ConnectionLost), {INSTANCE_C} (Inactive)." in message
    assert "systemctl status amazon-ssm-agent" in message
    assert "not managed by SSM" not in message
    assert f"{INSTANCE_A} (" not in message


def test_unmanaged_and_offline_reported_together(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    ids = [INSTANCE_A, INSTANCE_B]
    stubber.add_response(
        "describe_instance_information",
        {"InstanceInformationList": [info(INSTANCE_B, "ConnectionLost")]},
        describe_params(ids),
    )
    with pytest.raises(PipeError) as error:
        check_instances(client, ids, REGION)
    assert f"not managed by SSM in {REGION}: {INSTANCE_A}" in str(error.value)
    assert f"SSM Agent not online: {INSTANCE_B} (ConnectionLost)" in str(error.value)


def test_instances_over_several_pages(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    ids = [INSTANCE_A, INSTANCE_B]
    stubber.add_response(
        "describe_instance_information",
        {"InstanceInformationList": [info(INSTANCE_A, "Online")], "NextToken": "page-2"},
        describe_params(ids),
    )
    stubber.add_response(
        "describe_instance_information",
        {"InstanceInformationList": [info(INSTANCE_B, "Online")]},
        describe_params(ids, token="page-2"),
    )
    check_instances(client, ids, REGION)


def test_more_than_fifty_instances_asked_in_batches(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    ids = [f"i-{n:017x}" for n in range(51)]
    stubber.add_response(
        "describe_instance_information",
        {"InstanceInformationList": [info(i, "Online") for i in ids[:50]]},
        describe_params(ids[:50]),
    )
    stubber.add_response(
        "describe_instance_information",
        {"InstanceInformationList": [info(ids[50], "Online")]},
        describe_params(ids[50:]),
    )
    check_instances(client, ids, REGION)


@pytest.mark.parametrize("code", ["AccessDeniedException", "AccessDenied"])
def test_access_denied_on_describe_only_warns(
    stubbed: tuple[SSMClient, Stubber], caplog: pytest.LogCaptureFixture, code: str
) -> None:
    client, stubber = stubbed
    stubber.add_client_error(
        "describe_instance_information",
        service_error_code=code,
        service_message=f"User: {ROLE} is not authorized to perform: ssm:DescribeInstanceInformation",
        http_status_code=400,
        expected_params=describe_params([INSTANCE_A]),
    )
    with caplog.at_level(logging.INFO, logger="ssm-deploy"):
        check_instances(client, [INSTANCE_A], REGION)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Skipping the agent check" in warnings[0].getMessage()
    assert "ssm:DescribeInstanceInformation" in warnings[0].getMessage()
    assert "have the SSM Agent online" not in caplog.text


def test_other_describe_errors_propagate(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error(
        "describe_instance_information", service_error_code="InternalServerError", http_status_code=500
    )
    with pytest.raises(ClientError):
        check_instances(client, [INSTANCE_A], REGION)


# --- check_parameters ---------------------------------------------------------------------------


def parameter(name: str, value: str) -> dict[str, Any]:
    return {"Name": name, "Type": "SecureString", "Value": value, "Version": 1}


def test_readable_parameters_pass_and_values_are_masked(
    stubbed: tuple[SSMClient, Stubber], caplog: pytest.LogCaptureFixture
) -> None:
    client, stubber = stubbed
    secrets = [SecretRef("DB_PASSWORD", "/deploy/prod/db"), SecretRef("API_TOKEN", "/deploy/prod/api")]
    stubber.add_response(
        "get_parameters",
        {"Parameters": [parameter("/deploy/prod/db", "db-s3cret"), parameter("/deploy/prod/api", "tok-9999")]},
        {"Names": ["/deploy/prod/db", "/deploy/prod/api"], "WithDecryption": True},
    )
    redactor = Redactor()
    with caplog.at_level(logging.INFO, logger="ssm-deploy"):
        check_parameters(client, secrets, redactor, ROLE)
    assert redactor.redact("db-s3cret and tok-9999") == f"{MASK} and {MASK}"
    assert "Checked 2 parameter(s)" in caplog.text


def test_same_parameter_for_two_names_is_asked_once(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    secrets = [SecretRef("DB_PASSWORD", "/deploy/prod/db"), SecretRef("PGPASSWORD", "/deploy/prod/db")]
    stubber.add_response(
        "get_parameters",
        {"Parameters": [parameter("/deploy/prod/db", "db-s3cret")]},
        {"Names": ["/deploy/prod/db"], "WithDecryption": True},
    )
    check_parameters(client, secrets, Redactor(), ROLE)


def test_no_secrets_makes_no_call(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, _ = stubbed
    check_parameters(client, [], Redactor(), ROLE)  # any call would fail: nothing is stubbed


def test_twelve_secrets_read_in_two_batches(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    secrets = [SecretRef(f"SECRET_{n}", f"/deploy/prod/secret-{n}") for n in range(12)]
    names = [ref.parameter for ref in secrets]
    for batch in (names[:10], names[10:]):
        stubber.add_response(
            "get_parameters",
            {"Parameters": [parameter(name, f"value-of-{name}") for name in batch]},
            {"Names": batch, "WithDecryption": True},
        )
    redactor = Redactor()
    check_parameters(client, secrets, redactor, ROLE)
    assert redactor.redact("value-of-/deploy/prod/secret-11") == MASK
    assert redactor.redact("value-of-/deploy/prod/secret-0") == MASK


def test_missing_parameter_names_it_and_its_variable(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    secrets = [
        SecretRef("DB_PASSWORD", "/deploy/prod/db"),
        SecretRef("API_TOKEN", "/deploy/prod/api-token"),
    ]
    stubber.add_response(
        "get_parameters",
        {"Parameters": [parameter("/deploy/prod/db", "db-s3cret")], "InvalidParameters": ["/deploy/prod/api-token"]},
        {"Names": ["/deploy/prod/db", "/deploy/prod/api-token"], "WithDecryption": True},
    )
    redactor = Redactor()
    with pytest.raises(PipeError) as error:
        check_parameters(client, secrets, redactor, ROLE)
    message = str(error.value)
    assert message.startswith("SECRETS: nothing was sent.")
    assert "not found: /deploy/prod/api-token (for API_TOKEN)" in message
    assert "DB_PASSWORD" not in message
    assert "Create them in Parameter Store" in message
    assert redactor.redact("db-s3cret") == MASK  # what was read is masked even when the check fails


def test_missing_parameters_from_several_batches_all_listed(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    secrets = [SecretRef(f"SECRET_{n}", f"/deploy/prod/secret-{n}") for n in range(11)]
    names = [ref.parameter for ref in secrets]
    stubber.add_response(
        "get_parameters", {"InvalidParameters": [names[3]]}, {"Names": names[:10], "WithDecryption": True}
    )
    stubber.add_response(
        "get_parameters", {"InvalidParameters": [names[10]]}, {"Names": names[10:], "WithDecryption": True}
    )
    with pytest.raises(PipeError) as error:
        check_parameters(client, secrets, Redactor(), ROLE)
    assert f"{names[3]}, {names[10]} (for SECRET_3, SECRET_10)" in str(error.value)


def test_kms_denied_explains_key_policy(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error(
        "get_parameters", service_error_code="AccessDeniedException", service_message=KMS_DENIED, http_status_code=400
    )
    with pytest.raises(PipeError) as error:
        check_parameters(client, [SecretRef("DB_PASSWORD", "/deploy/prod/db")], Redactor(), ROLE)
    message = str(error.value)
    assert message.startswith("SECRETS: nothing was sent.")
    assert "kms:Decrypt" in message
    assert "key policy" in message
    assert ROLE in message
    assert "/deploy/prod/db" in message
    assert "customer master key" in message  # AWS's own words are kept


def test_iam_denied_explains_get_parameters(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error(
        "get_parameters",
        service_error_code="AccessDeniedException",
        service_message=iam_denied("/deploy/prod/db"),
        http_status_code=400,
    )
    with pytest.raises(PipeError) as error:
        check_parameters(client, [SecretRef("DB_PASSWORD", "/deploy/prod/db")], Redactor(), ROLE)
    message = str(error.value)
    assert "is not allowed ssm:GetParameters on /deploy/prod/db" in message
    assert "Fix: allow ssm:GetParameters" in message
    assert "kms:Decrypt" not in message


def test_iam_denied_on_parameter_named_key_is_not_blamed_on_kms(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error(
        "get_parameters",
        service_error_code="AccessDeniedException",
        service_message=iam_denied("/deploy/prod/api-key"),
        http_status_code=400,
    )
    with pytest.raises(PipeError) as error:
        check_parameters(client, [SecretRef("API_KEY", "/deploy/prod/api-key")], Redactor(), ROLE)
    message = str(error.value)
    assert "Fix: allow ssm:GetParameters" in message
    assert "kms:Decrypt" not in message


def test_other_get_parameters_error_is_reported(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error(
        "get_parameters", service_error_code="ValidationException", service_message="bad name", http_status_code=400
    )
    with pytest.raises(PipeError) as error:
        check_parameters(client, [SecretRef("DB", "/deploy//db")], Redactor(), ROLE)
    assert str(error.value) == "SECRETS: could not read /deploy//db (ValidationException: bad name)."


SHARED = "arn:aws:ssm:eu-west-1:210987654321:parameter/shared/db_password"


@pytest.mark.parametrize(
    "reference",
    [SHARED, f"{SHARED}:4", "/deploy/prod/db:3", "/deploy/prod/db:live"],
)
def test_parameters_by_arn_version_or_label_are_asked_as_given(
    stubbed: tuple[SSMClient, Stubber], reference: str
) -> None:
    """GetParameters takes names, ARNs (shared parameters: "you must use the full ARN") and
    name:version / name:label selectors, as the API reference says."""
    client, stubber = stubbed
    found = parameter(SHARED if reference.startswith("arn:") else reference.split(":")[0], "v4lue")
    stubber.add_response("get_parameters", {"Parameters": [found]}, {"Names": [reference], "WithDecryption": True})
    redactor = Redactor()
    check_parameters(client, [SecretRef("DB", reference)], redactor, ROLE)
    assert redactor.redact("v4lue") == MASK


def test_a_missing_version_or_shared_parameter_says_what_to_check(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    names = ["/deploy/prod/db:7", SHARED]
    stubber.add_response("get_parameters", {"InvalidParameters": names}, {"Names": names, "WithDecryption": True})
    with pytest.raises(PipeError) as error:
        check_parameters(client, [SecretRef("DB", names[0]), SecretRef("SHARED", names[1])], Redactor(), ROLE)
    message = str(error.value)
    assert message.startswith("SECRETS: nothing was sent.")
    assert "A :version or :label must exist" in message
    assert "shares it with this account (AWS RAM)" in message


def test_iam_denial_names_the_resources_without_version_or_label(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error(
        "get_parameters",
        service_error_code="AccessDeniedException",
        service_message=iam_denied("/deploy/prod/db"),
        http_status_code=400,
    )
    refs = [SecretRef("DB", "/deploy/prod/db:live"), SecretRef("SHARED", f"{SHARED}:4")]
    with pytest.raises(PipeError) as error:
        check_parameters(client, refs, Redactor(), ROLE)
    message = str(error.value)
    assert (
        f"Fix: allow ssm:GetParameters on arn:aws:ssm:<region>:<account>:parameter/deploy/prod/db, {SHARED} " in message
    )


# --- preflight: the reads go out together ---------------------------------------------------------


class BarrierSSM:
    """Every read waits at a barrier for ``parties`` reads in all: only reads made at the same time
    get through (one by one, the first would wait out the timeout and break the barrier)."""

    def __init__(self, parties: int, ping: str = "Online", parameter_missing: bool = False) -> None:
        self.barrier = threading.Barrier(parties, timeout=10)
        self.ping, self.parameter_missing = ping, parameter_missing

    def _meet(self) -> None:
        self.barrier.wait()

    def get_paginator(self, operation: str) -> Any:
        ssm = self

        class Pages:
            def paginate(self, **request: Any) -> Iterator[dict[str, Any]]:
                ssm._meet()
                ids = request["Filters"][0]["Values"]
                yield {"InstanceInformationList": [info(i, ssm.ping) for i in ids]}

        return Pages()

    def list_commands(self, **_: Any) -> dict[str, Any]:
        self._meet()
        return {"Commands": []}

    def list_command_invocations(self, **_: Any) -> dict[str, Any]:
        self._meet()
        return {"CommandInvocations": []}

    def get_command_invocation(self, **_: Any) -> dict[str, Any]:
        self._meet()
        return {}

    def get_parameters(self, Names: list[str], **_: Any) -> dict[str, Any]:
        self._meet()
        if self.parameter_missing:
            return {"Parameters": [], "InvalidParameters": Names}
        return {"Parameters": [{"Name": n, "Value": f"value-of-{n}"} for n in Names], "InvalidParameters": []}


class StatesEC2:
    """DescribeInstances answering ``states`` ({instance id: EC2 state}); any other instance is running."""

    def __init__(self, states: dict[str, str] | None = None) -> None:
        self.states = states or {}

    def get_paginator(self, operation: str) -> Any:
        assert operation == "describe_instances"
        return self

    def paginate(self, Filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ids = next(f["Values"] for f in Filters if f["Name"] == "instance-id")
        rows = [{"InstanceId": i, "State": {"Name": self.states.get(i, "running")}} for i in ids]
        return [{"Reservations": [{"Instances": rows}]}]


def run_preflight(ssm: Any, targeted: list[str], secrets: list[SecretRef], ec2: StatesEC2 | None = None) -> Redactor:
    """preflight() with ``ssm`` (and ``ec2``: every instance running); the redactor it masked the values with."""
    settings = make_settings(secrets=secrets, instance_ids=targeted)
    redactor = Redactor()
    clients = SimpleNamespace(ssm=ssm, ec2=ec2 or StatesEC2())
    ctx = SimpleNamespace(clients=clients, stops=StopRequests(), redactor=redactor)
    preflight(settings, targeted, ROLE, ctx)  # type: ignore[arg-type]
    return redactor


def test_preflight_reads_go_out_together() -> None:
    ids = [f"i-{n:017x}" for n in range(60)]  # two DescribeInstanceInformation batches
    secrets = [SecretRef("DB", "/app/db")]
    ssm = BarrierSSM(parties=2 + 3 + 1)  # the agents' batches, the three probes, the parameters
    redactor = run_preflight(ssm, ids, secrets)

    assert MASK in redactor.redact("value-of-/app/db")


def test_preflight_reports_problems_in_the_order_of_its_checks() -> None:
    secrets = [SecretRef("DB", "/app/missing")]
    ssm = BarrierSSM(parties=1 + 3 + 1, ping="ConnectionLost", parameter_missing=True)

    with pytest.raises(PipeError, match=r"INSTANCE_IDS: nothing was sent\. Instances SSM Agent not online"):
        run_preflight(ssm, [INSTANCE_A], secrets)


def test_instance_ids_not_running_in_ec2_are_refused_by_state_before_the_agents() -> None:
    """Attack 60: a stopped instance of INSTANCE_IDS is named stopped (its agent may still ping Online a moment
    after the stop), with both ways out; a terminated one only with the way out it has."""
    ssm = BarrierSSM(parties=1 + 3, ping="ConnectionLost")  # the agents' batch, the three probes: no SECRETS
    ec2 = StatesEC2({INSTANCE_A: "stopped", INSTANCE_B: "terminated"})

    with pytest.raises(PipeError) as refused:
        run_preflight(ssm, [INSTANCE_A, INSTANCE_B], [], ec2)

    message = str(refused.value)
    assert message.startswith(f"INSTANCE_IDS: nothing was sent. Not running in EC2: {INSTANCE_A} is stopped, ")
    assert f"{INSTANCE_B} is terminated" in message
    assert f"aws ec2 start-instances --instance-ids {INSTANCE_A} --region" in message
    assert "remove it from INSTANCE_IDS" in message and "SSM Agent not online" not in message
