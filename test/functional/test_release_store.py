"""The release artifact and ledger against the stand-in's S3 and Parameter Store, in process: uploaded
once per content, multipart for a large file, S3 checking what it received, nothing secret in a
request, and the ledger's history resolving "live" and "previous" across Parameter Store's paging."""

from __future__ import annotations

import hashlib
import os
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from s3transfer.manager import TransferConfig
from standin import StandIn

from pipe.config.release import release_id
from pipe.errors import NothingSent
from pipe.stages.release.artifact import prepare_artifact, sha256_base64, upload_once
from pipe.stages.release.ledger import (
    LedgerEntry,
    Outcomes,
    find_release,
    ledger_name,
    live_release,
    read_history,
    record,
    release_before_live,
    utc_timestamp,
)

SECRET = "s3cr3t-Db-Passw0rd-7f1c"
SMALL_PARTS = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)


@dataclass
class Seen:
    """What an S3 client sent: operation names, and each request's URL and headers (no bodies)."""

    operations: list[str] = field(default_factory=list)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def __call__(self, request: Any, event_name: str, **_: Any) -> None:
        self.operations.append(event_name.rsplit(".", 1)[-1])
        headers = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in request.headers.items()}
        self.requests.append((request.url, headers))

    def headers_of(self, operation: str) -> list[dict[str, str]]:
        return [headers for name, (_, headers) in zip(self.operations, self.requests, strict=True) if name == operation]


@pytest.fixture
def s3(standin: StandIn) -> Iterator[tuple[Any, Seen]]:
    client = standin.client("s3")
    seen = Seen()
    client.meta.events.register("before-send.s3", seen)
    yield client, seen


@pytest.fixture
def bucket(standin: StandIn) -> str:
    name = f"artifacts-{uuid.uuid4().hex[:10]}"
    standin.client("s3").create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": standin.region})
    return name


def build(clone: Path, version: str) -> Path:
    dist = clone / "dist"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "index.js").write_text(f"console.log('{version}')\n")
    (dist / "package.json").write_text('{"name": "web-api"}\n')
    return dist


# --- artifacts ---------------------------------------------------------------------------------------------


def test_the_same_build_is_uploaded_once_and_a_new_one_again(s3: tuple[Any, Seen], bucket: str, tmp_path: Path) -> None:
    client, seen = s3
    clone = tmp_path / "clone"
    build(clone, "A")
    first = prepare_artifact("dist", str(clone), "web-api/", tmp_path)
    os.utime(clone / "dist" / "index.js", (2_000_000_000, 2_000_000_000))  # a re-run: same files, new times
    again = prepare_artifact("dist", str(clone), "web-api/", tmp_path)

    assert upload_once(client, bucket, first) is True
    assert again.key == first.key
    uploads_before = seen.operations.count("PutObject")
    assert upload_once(client, bucket, again) is False
    assert seen.operations.count("PutObject") == uploads_before

    build(clone, "B")
    assert upload_once(client, bucket, prepare_artifact("dist", str(clone), "web-api/", tmp_path)) is True
    keys = sorted(item["Key"] for item in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert len(keys) == 2 and all(key.startswith("web-api/") and key.endswith(".tar.gz") for key in keys)


def test_a_single_put_is_checked_by_s3_and_keeps_the_full_object_sha256(
    s3: tuple[Any, Seen], bucket: str, tmp_path: Path
) -> None:
    client, seen = s3
    artifact = prepare_artifact("dist", str(build(tmp_path / "clone", "A").parent), "web-api/", tmp_path)
    upload_once(client, bucket, artifact)
    found = client.head_object(Bucket=bucket, Key=artifact.key, ChecksumMode="ENABLED")

    (put,) = seen.headers_of("PutObject")
    assert put["x-amz-checksum-sha256"] == sha256_base64(artifact.sha256)
    assert (found["ChecksumSHA256"], found["ChecksumType"]) == (sha256_base64(artifact.sha256), "FULL_OBJECT")
    assert found["Metadata"] == {"sha256": artifact.sha256}
    assert found["ContentType"] == "application/gzip"


def test_a_large_file_goes_multipart_with_a_sha256_per_part(s3: tuple[Any, Seen], bucket: str, tmp_path: Path) -> None:
    client, seen = s3
    clone = tmp_path / "clone"
    clone.mkdir()
    noise = clone / "noise.bin"
    noise.write_bytes(os.urandom(11 * 1024 * 1024))  # random: the .tgz stays above two 5 MiB parts
    with tarfile.open(clone / "big.tgz", "w:gz") as archive:
        archive.add(noise, arcname="noise.bin")
    artifact = prepare_artifact("big.tgz", str(clone), "web-api/", tmp_path)

    assert upload_once(client, bucket, artifact, SMALL_PARTS) is True
    (create,) = seen.headers_of("CreateMultipartUpload")
    parts = seen.headers_of("UploadPart")
    found = client.head_object(Bucket=bucket, Key=artifact.key, ChecksumMode="ENABLED")
    body = client.get_object(Bucket=bucket, Key=artifact.key)["Body"].read()

    assert create["x-amz-checksum-algorithm"] == "SHA256" and "x-amz-checksum-type" not in create
    assert len(parts) == 3 and all("x-amz-checksum-sha256" in part for part in parts)
    assert found["ChecksumType"] == "COMPOSITE" and found["ChecksumSHA256"].endswith("-3")
    assert found["Metadata"] == {"sha256": artifact.sha256}
    assert hashlib.sha256(body).hexdigest() == artifact.sha256
    assert upload_once(client, bucket, artifact, SMALL_PARTS) is False  # the composite checksum is no obstacle


def test_an_object_that_only_claims_the_digest_is_replaced(s3: tuple[Any, Seen], bucket: str, tmp_path: Path) -> None:
    client, _ = s3
    artifact = prepare_artifact("dist", str(build(tmp_path / "clone", "A").parent), "web-api/", tmp_path)
    forged = b"\x1f\x8b" + b"x" * (artifact.size - 2)  # same size and metadata, other bytes
    client.put_object(
        Bucket=bucket, Key=artifact.key, Body=forged, Metadata={"sha256": artifact.sha256}, ChecksumAlgorithm="SHA256"
    )

    assert upload_once(client, bucket, artifact) is True
    body = client.get_object(Bucket=bucket, Key=artifact.key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == artifact.sha256


def test_a_file_changed_after_hashing_is_refused_by_s3(s3: tuple[Any, Seen], bucket: str, tmp_path: Path) -> None:
    client, _ = s3
    clone = tmp_path / "clone"
    clone.mkdir()
    with tarfile.open(clone / "web-api.tgz", "w:gz") as archive:
        archive.add(build(clone, "A"), arcname=".")
    artifact = prepare_artifact("web-api.tgz", str(clone), "web-api/", tmp_path)
    data = (clone / "web-api.tgz").read_bytes()
    (clone / "web-api.tgz").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, other bytes

    with pytest.raises(NothingSent, match=r"^ARTIFACT: nothing was sent\. S3 received bytes whose SHA-256"):
        upload_once(client, bucket, artifact)
    with pytest.raises(ClientError):
        client.head_object(Bucket=bucket, Key=artifact.key)


def test_a_missing_bucket_is_named(s3: tuple[Any, Seen], tmp_path: Path) -> None:
    client, _ = s3
    artifact = prepare_artifact("dist", str(build(tmp_path / "clone", "A").parent), "web-api/", tmp_path)
    with pytest.raises(NothingSent, match=r"^ARTIFACT_BUCKET: nothing was sent\. The bucket no-such-bucket-x does not"):
        upload_once(client, "no-such-bucket-x", artifact)


def test_no_secret_and_no_file_name_reaches_s3_and_no_acl_is_sent(
    s3: tuple[Any, Seen], bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, seen = s3
    monkeypatch.setenv("DB_PASSWORD", SECRET)
    clone = tmp_path / f"clone-{SECRET}"
    dist = build(clone, "A")
    (dist / ".env.example").write_text(f"DB_PASSWORD={SECRET}\n")  # in the bytes, never in names or headers
    named = clone / f"build-{SECRET}"
    dist.rename(named)
    artifact = prepare_artifact(named.name, str(clone), "web-api/", tmp_path)
    upload_once(client, bucket, artifact)
    found = client.head_object(Bucket=bucket, Key=artifact.key)
    grants = client.get_object_acl(Bucket=bucket, Key=artifact.key)["Grants"]

    assert SECRET not in artifact.key and "build-" not in artifact.key
    assert all(SECRET not in url and SECRET not in str(headers) for url, headers in seen.requests)
    assert all("x-amz-acl" not in headers and "x-amz-grant-read" not in headers for _, headers in seen.requests)
    assert SECRET not in str(found["Metadata"])
    assert [grant["Permission"] for grant in grants] == ["FULL_CONTROL"]  # the owner only: private


# --- the ledger --------------------------------------------------------------------------------------------


def deploy(build_number: int, status: str = "succeeded", previous: str = "", instances: int = 3) -> LedgerEntry:
    commit = hashlib.sha1(str(build_number).encode()).hexdigest()
    digest = hashlib.sha256(str(build_number).encode()).hexdigest()
    return LedgerEntry(
        release_id=release_id(str(build_number), commit),
        commit=commit,
        build_number=str(build_number),
        build_url=f"https://bitbucket.org/acme/web-api/pipelines/results/{build_number}",
        triggered_by="{5f1c2a3b-0000-4000-8000-000000000001}",
        artifact_key=f"web-api/{digest}.tar.gz",
        sha256=digest,
        status=status,
        instances=Outcomes.of({f"i-{n:017x}": status for n in range(instances)}),
        time=utc_timestamp(),
        previous_release=previous,
    )


@pytest.fixture
def ledger() -> str:
    return ledger_name(f"web-api-{uuid.uuid4().hex[:8]}", "production")


def test_each_deploy_is_a_version_and_previous_resolves_to_the_release_before(standin: StandIn, ledger: str) -> None:
    ssm = standin.client("ssm")
    a, b, c = deploy(1), deploy(2), deploy(3, "rolled back")

    assert live_release(ssm, ledger) is None and release_before_live(ssm, ledger) is None
    assert [record(ssm, ledger, item) for item in (a, b, c)] == [1, 2, 3]
    assert live_release(ssm, ledger) == b  # C was rolled back: B is what runs
    assert release_before_live(ssm, ledger) == a
    assert find_release(ssm, ledger, c.release_id) == c
    assert [item.version for item in read_history(ssm, ledger)] == [1, 2, 3]
    described = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [ledger]}])["Parameters"]
    assert (described[0]["Type"], described[0]["Tier"]) == ("String", "Standard")


def test_the_history_spans_pages_and_keeps_the_last_100_deploys(standin: StandIn, ledger: str) -> None:
    ssm = standin.client("ssm")
    entries = [deploy(n) for n in range(1, 121)]
    for item in entries:
        record(ssm, ledger, item)

    found = read_history(ssm, ledger)
    assert [item.version for item in found] == list(range(21, 121))
    assert live_release(ssm, ledger) == entries[-1]
    assert release_before_live(ssm, ledger) == entries[-2]
    assert find_release(ssm, ledger, entries[30].release_id) == entries[30]
    assert find_release(ssm, ledger, entries[5].release_id) is None  # older than the 100 kept


def test_a_deploy_to_2000_instances_is_recorded_in_the_standard_tier(standin: StandIn, ledger: str) -> None:
    ssm = standin.client("ssm")
    big = deploy(9, instances=2000)
    record(ssm, ledger, big)  # the stand-in refuses a standard value over 4096 characters, as AWS does

    stored = ssm.get_parameter(Name=ledger)["Parameter"]["Value"]
    assert len(stored.encode()) < 4096
    assert LedgerEntry.from_json(stored).instances.counts == {"succeeded": 2000}


def test_the_ledger_root_is_one_parameter_store_accepts(standin: StandIn) -> None:
    """AWS refuses a parameter path whose first segment starts with "ssm" (or "aws"), as the stand-in does."""
    ssm = standin.client("ssm")
    with pytest.raises(ClientError, match="prefixed with"):
        ssm.put_parameter(Name="/ssm-deploy/web-api/production/release", Value="x", Type="String")
    assert record(ssm, ledger_name("web-api-root", "production"), deploy(1)) >= 1
