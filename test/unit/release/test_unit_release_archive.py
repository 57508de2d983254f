"""The ledger's archive in S3 when S3 refuses or cannot be reached: a warning naming the object and the
fix, never an exception (the deploy's verdict is decided before the archive is written or read)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from botocore.stub import ANY, Stubber
from mypy_boto3_s3 import S3Client

from pipe.release.ledger_archive import Archive, Version

BUCKET, FOLDER = "acme-deploy-artifacts", "web-api/ledger/web-api/prod/"


@pytest.fixture
def s3() -> Iterator[tuple[S3Client, Stubber]]:
    client = boto3.session.Session(
        aws_access_key_id="AKIAUNITTESTEXAMPLE", aws_secret_access_key="unit-test-secret-key", region_name="eu-west-1"
    ).client("s3", region_name="eu-west-1")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def listing(*numbers: int) -> dict[str, Any]:
    return {"Contents": [{"Key": f"{FOLDER}{number:010d}.json"} for number in numbers], "IsTruncated": False}


def test_only_the_versions_the_archive_lacks_are_copied_and_never_over_an_object(
    s3: tuple[S3Client, Stubber],
) -> None:
    client, stubber = s3
    stubber.add_response(
        "list_objects_v2", listing(7), {"Bucket": BUCKET, "Prefix": FOLDER, "StartAfter": f"{FOLDER}0000000006.json"}
    )
    stubber.add_response(
        "put_object",
        {},
        {
            "Bucket": BUCKET,
            "Key": f"{FOLDER}0000000008.json",
            "Body": b"eight",
            "ContentType": "application/json",
            "IfNoneMatch": "*",
            "Metadata": {"written-by": "arn:aws:iam::123456789012:role/deploy"},
        },
    )
    copied = Archive(client, BUCKET, FOLDER).keep(
        [Version(7, "seven"), Version(8, "eight", "arn:aws:iam::123456789012:role/deploy")], newest=8
    )
    assert copied == 1


def test_a_denied_listing_or_copy_is_a_warning_naming_the_action(
    s3: tuple[S3Client, Stubber], caplog: pytest.LogCaptureFixture
) -> None:
    client, stubber = s3
    stubber.add_client_error("list_objects_v2", "AccessDenied", "Access Denied", 403)
    stubber.add_response("list_objects_v2", listing(), {"Bucket": BUCKET, "Prefix": FOLDER, "StartAfter": ANY})
    stubber.add_client_error("put_object", "AccessDenied", "Access Denied", 403)
    archive = Archive(client, BUCKET, FOLDER)

    with caplog.at_level(logging.WARNING, logger="ssm-deploy"):
        assert archive.keep([Version(1, "one")], newest=1) == 0
        assert archive.keep([Version(1, "one"), Version(2, "two")], newest=2) == 0  # stops at the first refusal

    assert "could not be listed (AccessDenied: Access Denied): no version was copied there" in caplog.text
    assert f"Fix: allow s3:ListBucket on arn:aws:s3:::{BUCKET}" in caplog.text
    assert f"version 1 could not be copied to s3://{BUCKET}/{FOLDER}0000000001.json" in caplog.text
    assert f"Fix: allow s3:PutObject on arn:aws:s3:::{BUCKET}/{FOLDER}*" in caplog.text


def test_a_copy_another_deploy_made_meanwhile_is_no_problem(
    s3: tuple[S3Client, Stubber], caplog: pytest.LogCaptureFixture
) -> None:
    client, stubber = s3
    stubber.add_response("list_objects_v2", listing(), {"Bucket": BUCKET, "Prefix": FOLDER, "StartAfter": ANY})
    stubber.add_client_error("put_object", "PreconditionFailed", "At least one of the pre-conditions failed", 412)
    stubber.add_response(
        "put_object",
        {},
        {"Bucket": BUCKET, "Key": ANY, "Body": ANY, "ContentType": ANY, "IfNoneMatch": "*", "Metadata": {}},
    )
    with caplog.at_level(logging.WARNING, logger="ssm-deploy"):
        assert Archive(client, BUCKET, FOLDER).keep([Version(1, "one"), Version(2, "two")], newest=2) == 1
    assert caplog.text == ""


class Unreachable:
    """An S3 client whose every call fails to connect."""

    def __getattr__(self, name: str) -> Any:
        def fail(*_: Any, **__: Any) -> Any:
            raise EndpointConnectionError(endpoint_url="https://s3.eu-west-1.amazonaws.com")

        return fail


def test_s3_out_of_reach_warns_and_reads_nothing(caplog: pytest.LogCaptureFixture) -> None:
    archive = Archive(Unreachable(), BUCKET, FOLDER)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="ssm-deploy"):
        assert archive.keep([Version(1, "one")], newest=1) == 0
        assert list(archive.recorded_before(100)) == []
    assert caplog.text.count("Could not connect to the endpoint URL") == 2
