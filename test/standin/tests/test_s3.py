"""S3 in the stand-in: calls counted by operation, and the instances' AWS CLI reaching it with the
instance role, like their other AWS calls."""

from __future__ import annotations

import collections
import uuid
from typing import Any

import pytest

from standin import StandIn, s3_api
from standin.tests.invoke import run_one


def bucket(standin: StandIn) -> str:
    name = f"standin-{uuid.uuid4().hex[:12]}"
    standin.client("s3").create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": standin.region})
    return name


def s3_calls(counts: collections.Counter[str]) -> collections.Counter[str]:
    return collections.Counter({key: value for key, value in counts.items() if key.startswith("s3:")})


def test_s3_calls_are_counted_under_the_operation_botocore_sent(standin: StandIn) -> None:
    s3: Any = standin.client("s3", own=True)  # its own: the handler below must not stay on the shared one
    sent: list[str] = []
    s3.meta.events.register("before-call.s3", lambda model, **_: sent.append(f"s3:{model.name}"))
    before = standin.calls_snapshot(include_instances=False)
    name = f"standin-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": standin.region})
    s3.put_object(Bucket=name, Key="app/a.tgz", Body=b"release a")
    s3.head_object(Bucket=name, Key="app/a.tgz")
    s3.get_object(Bucket=name, Key="app/a.tgz")["Body"].read()
    s3.list_objects_v2(Bucket=name, Prefix="app/")
    s3.copy_object(Bucket=name, Key="app/b.tgz", CopySource={"Bucket": name, "Key": "app/a.tgz"})
    upload = s3.create_multipart_upload(Bucket=name, Key="app/big.tgz")["UploadId"]
    part = s3.upload_part(Bucket=name, Key="app/big.tgz", UploadId=upload, PartNumber=1, Body=b"x" * 1024)
    s3.list_parts(Bucket=name, Key="app/big.tgz", UploadId=upload)
    s3.complete_multipart_upload(
        Bucket=name,
        Key="app/big.tgz",
        UploadId=upload,
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )
    s3.delete_object(Bucket=name, Key="app/b.tgz")
    s3.get_bucket_location(Bucket=name)
    counted = s3_calls(standin.calls_snapshot(include_instances=False) - before)

    assert counted == collections.Counter(sent)
    assert counted["s3:PutObject"] == 1 and counted["s3:UploadPart"] == 1  # a multipart upload is told apart


@pytest.mark.parametrize(
    ("request_line", "expected"),
    [
        (("PUT", True, True, set(), set()), "PutObject"),
        (("PUT", True, True, {"uploadId", "partNumber"}, set()), "UploadPart"),
        (("PUT", True, True, {"uploadId", "partNumber"}, {"x-amz-copy-source"}), "UploadPartCopy"),
        (("PUT", True, True, set(), {"x-amz-copy-source"}), "CopyObject"),
        (("POST", True, True, {"uploads"}, set()), "CreateMultipartUpload"),
        (("POST", True, True, {"uploadId"}, set()), "CompleteMultipartUpload"),
        (("DELETE", True, True, {"uploadId"}, set()), "AbortMultipartUpload"),
        (("GET", True, False, {"list-type", "prefix"}, set()), "ListObjectsV2"),
        (("GET", True, False, {"prefix"}, set()), "ListObjects"),
        (("GET", False, False, set(), set()), "ListBuckets"),
        (("HEAD", True, False, set(), set()), "HeadBucket"),
        (("PATCH", True, True, set(), set()), "UnknownPATCH"),
    ],
)
def test_an_s3_request_is_named_by_the_most_specific_operation_it_fits(
    request_line: tuple[str, bool, bool, set[str], set[str]], expected: str
) -> None:
    assert s3_api.operation(*request_line) == expected


def test_an_instance_downloads_from_s3_with_the_instance_role(standin: StandIn) -> None:
    name = bucket(standin)
    standin.client("s3").put_object(Bucket=name, Key="web-api/abc.tar.gz", Body=b"release bytes")
    (instance_id,) = standin.launch(1)
    before, before_ours = standin.calls_snapshot(), standin.calls_snapshot(include_instances=False)
    answer = run_one(
        standin,
        instance_id,
        f"mkdir -p /srv/web-api\naws s3 cp --region {standin.region} --only-show-errors "
        f"s3://{name}/web-api/abc.tar.gz /srv/web-api/abc.tar.gz",
    )
    from_instances = s3_calls(standin.calls_snapshot() - before) - s3_calls(
        standin.calls_snapshot(include_instances=False) - before_ours
    )

    assert answer["Status"] == "Success", answer["StandardErrorContent"]
    assert standin.instance_path(instance_id, "/srv/web-api/abc.tar.gz").read_bytes() == b"release bytes"
    assert from_instances["s3:GetObject"] == 1


def test_the_instances_s3_calls_are_allowed_or_denied_by_the_instance_roles_policy(standin: StandIn) -> None:
    name = bucket(standin)
    standin.client("s3").put_object(Bucket=name, Key="web-api/abc.tar.gz", Body=b"release bytes")
    (instance_id,) = standin.launch(1)
    download = f"aws s3 cp --region {standin.region} --only-show-errors s3://{name}/web-api/abc.tar.gz /srv/abc.tar.gz"
    suffix = uuid.uuid4().hex[:6]
    with standin.iam_enforced():
        allowed = standin.create_user(
            f"instance-role-{suffix}",
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{name}/*"}],
            },
        )
        denied = standin.create_user(
            f"other-role-{suffix}",
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": "*"}],
            },
        )
        standin.agent_keys = allowed  # what the instances' processes sign with
        granted = run_one(standin, instance_id, download)
        standin.agent_keys = denied
        refused = run_one(standin, instance_id, download.replace("/srv/abc", "/srv/refused"))

    assert granted["Status"] == "Success", granted["StandardErrorContent"]
    assert refused["Status"] == "Failed"
    assert "403" in refused["StandardErrorContent"] or "AccessDenied" in refused["StandardErrorContent"]
    assert not standin.instance_path(instance_id, "/srv/refused.tar.gz").exists()
