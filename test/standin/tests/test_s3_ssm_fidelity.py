"""The stand-in's S3 checksums and Parameter Store limits, through boto3 over HTTP, as AWS documents them.

S3 (User Guide, "Checking object integrity"): a checksum sent with PutObject or UploadPart is checked
against the body (400 BadDigest on a mismatch) and kept with the object; HeadObject with ChecksumMode
ENABLED returns it with its ChecksumType, a multipart object's composite value ending in
``-<number of parts>``; a write with ``If-None-Match: *`` fails with 412 PreconditionFailed when the
key exists ("How to prevent object overwrites with conditional writes"). Parameter Store: a
standard-tier value holds at most 4 KB (8 KB advanced), the 100 newest versions are kept ("Parameter
Store retains the 100 most recently created versions of a parameter"), and GetParameterHistory pages
by at most 50.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from standin import StandIn

PART = 5 * 1024 * 1024  # S3's smallest part but the last


def b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@pytest.fixture
def bucket(standin: StandIn) -> str:
    name = f"fidelity-{uuid.uuid4().hex[:10]}"
    standin.client("s3").create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": standin.region})
    return name


def head(standin: StandIn, bucket: str, key: str) -> dict[str, Any]:
    return dict(standin.client("s3").head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED"))


def test_put_object_refuses_a_body_that_does_not_match_its_sha256(standin: StandIn, bucket: str) -> None:
    s3 = standin.client("s3")
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key="k", Body=b"the body", ChecksumSHA256=b64_sha256(b"another body"))

    assert refused.value.response["Error"]["Code"] == "BadDigest"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_a_precomputed_sha256_is_kept_and_head_object_returns_it_as_full_object(standin: StandIn, bucket: str) -> None:
    body = b"release bytes" * 100
    standin.client("s3").put_object(Bucket=bucket, Key="k", Body=body, ChecksumSHA256=b64_sha256(body))
    found = head(standin, bucket, "k")

    assert (found["ChecksumSHA256"], found["ChecksumType"]) == (b64_sha256(body), "FULL_OBJECT")


def test_put_object_if_none_match_never_overwrites_an_existing_key(standin: StandIn, bucket: str) -> None:
    s3 = standin.client("s3")
    s3.put_object(Bucket=bucket, Key="k", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key="k", Body=b"second", IfNoneMatch="*")

    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"first"


def test_upload_part_refuses_a_part_that_does_not_match_its_sha256(standin: StandIn, bucket: str) -> None:
    s3 = standin.client("s3")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="SHA256")["UploadId"]
    with pytest.raises(ClientError) as refused:
        s3.upload_part(
            Bucket=bucket, Key="k", UploadId=upload, PartNumber=1, Body=b"x" * PART, ChecksumSHA256=b64_sha256(b"y")
        )

    assert refused.value.response["Error"]["Code"] == "BadDigest"
    assert s3.list_parts(Bucket=bucket, Key="k", UploadId=upload).get("Parts", []) == []


def test_a_multipart_sha256_is_composite_with_the_part_count(standin: StandIn, bucket: str) -> None:
    s3 = standin.client("s3")
    parts = [b"a" * PART, b"b" * 1000]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="SHA256")["UploadId"]
    done = []
    for number, data in enumerate(parts, start=1):
        answer = s3.upload_part(
            Bucket=bucket, Key="k", UploadId=upload, PartNumber=number, Body=data, ChecksumSHA256=b64_sha256(data)
        )
        done.append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": answer["ChecksumSHA256"]})
    s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload, MultipartUpload={"Parts": done})
    found = head(standin, bucket, "k")

    of_parts = base64.b64encode(hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()).decode()
    assert (found["ChecksumSHA256"], found["ChecksumType"]) == (f"{of_parts}-2", "COMPOSITE")


def parameter_name() -> str:
    return f"/fidelity/{uuid.uuid4().hex[:10]}"


def test_a_standard_parameter_value_holds_at_most_4096_characters(standin: StandIn) -> None:
    ssm = standin.client("ssm")
    name = parameter_name()
    ssm.put_parameter(Name=name, Value="x" * 4096, Type="String")
    with pytest.raises(ClientError) as refused:
        ssm.put_parameter(Name=name, Value="x" * 4097, Type="String", Overwrite=True)

    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert "maximum parameter value of 4096 characters" in refused.value.response["Error"]["Message"]
    assert ssm.get_parameter(Name=name)["Parameter"]["Version"] == 1


def test_an_advanced_parameter_holds_8192_and_keeps_its_tier_on_overwrite(standin: StandIn) -> None:
    ssm = standin.client("ssm")
    name = parameter_name()
    ssm.put_parameter(Name=name, Value="x" * 8192, Type="String", Tier="Advanced")
    ssm.put_parameter(Name=name, Value="y" * 5000, Type="String", Overwrite=True)  # no Tier: stays advanced
    with pytest.raises(ClientError) as refused:
        ssm.put_parameter(Name=name, Value="z" * 8193, Type="String", Overwrite=True)

    assert refused.value.response["Error"]["Code"] == "ValidationException"


def test_parameter_history_keeps_the_newest_100_versions_in_pages_of_at_most_50(standin: StandIn) -> None:
    ssm = standin.client("ssm")
    name = parameter_name()
    for version in range(1, 121):
        ssm.put_parameter(Name=name, Value=f"v{version}", Type="String", Overwrite=True)
    first = ssm.get_parameter_history(Name=name, MaxResults=50)
    pages = list(ssm.get_paginator("get_parameter_history").paginate(Name=name, PaginationConfig={"PageSize": 50}))
    with pytest.raises(ClientError) as refused:
        ssm.get_parameter_history(Name=name, MaxResults=51)

    assert len(first["Parameters"]) == 50 and first.get("NextToken")
    versions = [p["Version"] for page in pages for p in page["Parameters"]]
    assert sorted(versions) == list(range(21, 121))
    assert refused.value.response["Error"]["Code"] == "ValidationException"


def test_a_parameter_asked_by_version_or_label_is_answered_with_its_selector(standin: StandIn) -> None:
    """API Reference, Parameter: ``Selector`` is "either the version number or the label used to retrieve
    the parameter value"; a name asked without one is answered without it."""
    ssm = standin.client("ssm")
    name = f"/fidelity/{uuid.uuid4().hex[:8]}/db_password"
    ssm.put_parameter(Name=name, Value="one", Type="SecureString")
    ssm.put_parameter(Name=name, Value="two", Type="SecureString", Overwrite=True)
    ssm.label_parameter_version(Name=name, ParameterVersion=1, Labels=["live"])
    arn = ssm.get_parameter(Name=name)["Parameter"]["ARN"]

    answers = ssm.get_parameters(Names=[f"{name}:2", f"{name}:live", f"{arn}:live"], WithDecryption=True)["Parameters"]
    plain = ssm.get_parameter(Name=name)["Parameter"]

    assert sorted((a["Version"], a["Selector"]) for a in answers) == [(1, ":live"), (1, ":live"), (2, ":2")]
    assert ssm.get_parameter(Name=f"{name}:live")["Parameter"]["Selector"] == ":live"
    assert "Selector" not in plain
    missing = [f"{name}:9", f"{name}:gone"]  # a version or label that does not exist: invalid, not an error
    assert ssm.get_parameters(Names=missing)["InvalidParameters"] == missing
