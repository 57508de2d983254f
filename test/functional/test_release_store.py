"""The release artifact and ledger against the stand-in's S3 and Parameter Store, in process: uploaded
once per content, multipart for a large file, S3 checking what it received, nothing secret in a
request, and the ledger's history resolving "live" and "previous" across Parameter Store's paging."""

from __future__ import annotations

import hashlib
import logging
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
from pipe.release.artifact import prepare_artifact, sha256_base64, upload_once
from pipe.release.ledger import Groups, LedgerEntry, ReleaseInfo, RunInfo, ledger_name, utc_timestamp
from pipe.release.ledger_archive import Archive, Recorded, Version
from pipe.release.ledger_store import read_history, record

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
    client = standin.client("s3", own=True)
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
    identity = release_id(str(build_number), commit)
    run = RunInfo(
        str(build_number),
        commit,
        f"https://bitbucket.org/acme/web-api/pipelines/results/{build_number}",
        "{5f1c2a3b-0000-4000-8000-000000000001}",
    )
    return LedgerEntry(
        release=ReleaseInfo(identity, commit, str(build_number), f"web-api/{digest}.tar.gz", digest),
        run=run,
        action="deploy",
        status=status,
        fleet=Groups.of({f"i-{n:017x}": identity for n in range(instances)}),
        instances=Groups.of({f"i-{n:017x}": status for n in range(instances)}),
        time=utc_timestamp(),
        previous_release=previous,
    )


@pytest.fixture
def ledger() -> str:
    return ledger_name(f"web-api-{uuid.uuid4().hex[:8]}", "production")


def write(ssm: Any, name: str, entries: list[LedgerEntry], archive: Archive | None = None) -> list[int]:
    """Record each entry as a deploy does: the parameter, then its copy in the archive."""
    written = []
    for item in entries:
        value = item.to_json()
        written.append(record(ssm, name, value))
        if archive is not None:
            archive.keep([Version(written[-1], value)], newest=written[-1])
    return written


def test_each_deploy_is_a_version_and_previous_resolves_to_the_release_before(standin: StandIn, ledger: str) -> None:
    ssm = standin.client("ssm")
    a, b, c = deploy(1), deploy(2), deploy(3, "rolled back")

    assert read_history(ssm, ledger).live() is None and read_history(ssm, ledger).previous().found is None
    assert write(ssm, ledger, [a, b, c]) == [1, 2, 3]
    history = read_history(ssm, ledger)
    assert history.live() == Recorded(2, b, history.live().written_by)  # type: ignore[union-attr]
    assert history.previous().found is not None and history.previous().found.entry == a  # type: ignore[union-attr]
    assert history.release(c.release.id).entry == c  # type: ignore[union-attr]
    assert [item.number for item in history.versions] == [1, 2, 3]
    described = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [ledger]}])["Parameters"]
    assert (described[0]["Type"], described[0]["Tier"]) == ("String", "Standard")


def test_the_history_spans_pages_and_the_archive_keeps_what_the_100_versions_forget(
    standin: StandIn, ledger: str, bucket: str
) -> None:
    ssm, s3 = standin.client("ssm"), standin.client("s3")
    archive = Archive(s3, bucket, "web-api/ledger/web-api/production/")
    entries = [deploy(n) for n in range(1, 121)]
    write(ssm, ledger, entries, archive)

    parameter_only = read_history(ssm, ledger)
    assert [item.number for item in parameter_only.versions] == list(range(21, 121))
    assert parameter_only.live().entry == entries[-1]  # type: ignore[union-attr]
    assert parameter_only.release(entries[5].release.id) is None  # older than the 100 kept

    history = read_history(ssm, ledger, Archive(s3, bucket, "web-api/ledger/web-api/production/"))
    assert history.previous().found.entry == entries[-2]  # type: ignore[union-attr]
    assert history.release(entries[5].release.id).entry == entries[5]  # type: ignore[union-attr]
    assert history.release(entries[30].release.id).version == 31  # type: ignore[union-attr]


def test_the_archive_never_overwrites_a_copy_and_copies_what_it_lacks(
    standin: StandIn, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    s3 = standin.client("s3")
    archive = Archive(s3, bucket, "web-api/ledger/svc/prod/")
    s3.put_object(Bucket=bucket, Key=archive.key(2), Body=b"the old parameter's version 2")

    with caplog.at_level(logging.WARNING, logger="ssm-deploy"):
        copied = archive.keep([Version(1, "one", "arn:writer"), Version(2, "two"), Version(3, "three")], newest=3)
        again = archive.keep([Version(1, "changed"), Version(2, "changed"), Version(3, "changed")], newest=3)

    def body(version: int) -> bytes:
        return bytes(s3.get_object(Bucket=bucket, Key=archive.key(version))["Body"].read())

    assert (copied, again) == (2, 0)
    assert (body(1), body(2), body(3)) == (b"one", b"the old parameter's version 2", b"three")
    assert s3.head_object(Bucket=bucket, Key=archive.key(1))["Metadata"] == {"written-by": "arn:writer"}
    assert archive.key(3) == "web-api/ledger/svc/prod/0000000003.json"
    assert "already holds s3://" in caplog.text and "version 3 was not copied" in caplog.text
    with pytest.raises(ClientError, match="PreconditionFailed"):  # as S3 answers If-None-Match: * on a key
        s3.put_object(Bucket=bucket, Key=archive.key(1), Body=b"x", IfNoneMatch="*")


def test_a_garbled_copy_in_the_archive_is_skipped_naming_it(
    standin: StandIn, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    s3 = standin.client("s3")
    archive = Archive(s3, bucket, "web-api/ledger/svc/prod/")
    archive.keep([Version(1, deploy(1).to_json()), Version(2, "[" * 5000)])
    s3.put_object(Bucket=bucket, Key=archive.key(3), Body=b"\xff\xfe" * 10)

    with caplog.at_level(logging.WARNING, logger="ssm-deploy"):
        found = list(archive.recorded_before(10))

    assert [item.version for item in found] == [1]
    assert f"Release ledger s3://{bucket}/web-api/ledger/svc/prod/0000000002.json: version 2 skipped" in caplog.text
    assert "version 3 skipped" in caplog.text


def test_a_deploy_to_2000_instances_is_recorded_in_the_standard_tier(standin: StandIn, ledger: str) -> None:
    ssm = standin.client("ssm")
    big = deploy(9, instances=2000)
    record(ssm, ledger, big.to_json())  # the stand-in refuses a standard value over 4096 characters, as AWS does

    stored = ssm.get_parameter(Name=ledger)["Parameter"]["Value"]
    assert len(stored.encode()) < 4096
    assert LedgerEntry.from_json(stored).instances.counts == {"succeeded": 2000}
    assert LedgerEntry.from_json(stored).fleet.counts == {big.release.id: 2000}


def test_the_ledger_root_is_one_parameter_store_accepts(standin: StandIn) -> None:
    """AWS refuses a parameter path whose first segment starts with "ssm" (or "aws"), as the stand-in does."""
    ssm = standin.client("ssm")
    with pytest.raises(ClientError, match="prefixed with"):
        ssm.put_parameter(Name="/ssm-deploy/web-api/production/release", Value="x", Type="String")
    assert record(ssm, ledger_name("web-api-root", "production"), deploy(1).to_json()) >= 1
