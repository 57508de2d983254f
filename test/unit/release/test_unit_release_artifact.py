"""pipe.release.artifact without AWS: every ARTIFACT refusal, deterministic packing, the key;
and the upload's AWS refusals with a stubbed S3 client."""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.stub import ANY, Stubber
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mypy_boto3_s3 import S3Client

from pipe.config.release import check_artifact_prefix
from pipe.errors import NothingSent
from pipe.release.artifact import (
    FIXED_MTIME,
    MAX_ARTIFACT_BYTES,
    Artifact,
    check_artifact_path,
    pack_directory,
    prepare_artifact,
    sha256_base64,
    upload_once,
)

BUCKET = "acme-deploy-artifacts"


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    folder = tmp_path / "clone"
    folder.mkdir()
    return folder


def tgz(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            source = path.parent / f".{name}.src"
            source.write_bytes(data)
            tar.add(source, arcname=name)
    return path


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


# --- check_artifact_path: what is accepted ---------------------------------------------------------


def test_an_archive_file_and_a_directory_are_accepted(clone: Path) -> None:
    tgz(clone / "web-api.tgz", {"index.js": b"ok"})
    tgz(clone / "web-api.tar.gz", {"index.js": b"ok"})
    with zipfile.ZipFile(clone / "web-api.zip", "w") as archive:
        archive.writestr("index.js", "ok")
    tree(clone / "dist", {"index.js": b"ok"})
    (clone / "sub").mkdir()
    (clone / "latest.tgz").symlink_to("web-api.tgz")  # a symlink that stays inside is fine

    names = ("web-api.tgz", "web-api.tar.gz", "web-api.zip", "latest.tgz", "dist", "./dist/", "sub/../dist")
    for name in (*names, str(clone / "dist")):
        assert check_artifact_path(name, str(clone)) is None, name


# --- check_artifact_path: every refusal --------------------------------------------------------------


def refusal(path_text: str, clone: Path) -> str:
    problem = check_artifact_path(path_text, str(clone))
    assert problem is not None, f"{path_text} was accepted"
    return problem


def test_refuses_an_empty_value(clone: Path) -> None:
    assert "is empty" in refusal("  ", clone)


def test_refuses_a_missing_path_and_says_how_artifacts_reach_the_step(clone: Path) -> None:
    problem = refusal("web-api.tgz", clone)
    assert "does not exist in the clone directory" in problem and "artifacts:" in problem


def test_refuses_a_symlink_to_nothing(clone: Path) -> None:
    (clone / "web-api.tgz").symlink_to(clone / "gone.tgz")
    assert "a symlink to" in refusal("web-api.tgz", clone)


def test_refuses_a_path_outside_the_clone_directory(clone: Path) -> None:
    tgz(clone.parent / "elsewhere.tgz", {"a": b"x"})
    assert "outside the clone directory" in refusal("../elsewhere.tgz", clone)
    assert "outside the clone directory" in refusal(str(clone.parent / "elsewhere.tgz"), clone)


def test_refuses_a_symlink_that_leads_outside(clone: Path) -> None:
    tgz(clone.parent / "elsewhere.tgz", {"a": b"x"})
    (clone / "web-api.tgz").symlink_to(clone.parent / "elsewhere.tgz")
    outside = tree(clone.parent / "outside", {"a": b"x"})
    (clone / "dist").symlink_to(outside)

    assert "through a symlink" in refusal("web-api.tgz", clone)
    assert "through a symlink" in refusal("dist", clone)


def test_refuses_a_file_that_is_not_an_archive(clone: Path) -> None:
    (clone / "web-api.tar").write_bytes(b"x")
    assert "is not a .tar.gz, .tgz or .zip file" in refusal("web-api.tar", clone)


def test_refuses_an_archive_name_on_other_content(clone: Path) -> None:
    (clone / "web-api.tgz").write_bytes(b"plain text, not gzip")
    with zipfile.ZipFile(clone / "empty.zip", "w"):
        pass  # an empty zip: only its end record
    assert "is not a gzip-compressed tar" in refusal("web-api.tgz", clone)
    assert "is not a zip archive with at least one file" in refusal("empty.zip", clone)


def test_refuses_an_empty_file_and_a_directory_without_files(clone: Path) -> None:
    (clone / "web-api.tgz").touch()
    (clone / "dist" / "empty" / "deeper").mkdir(parents=True)
    assert "is empty (0 bytes)" in refusal("web-api.tgz", clone)
    assert "no files in it" in refusal("dist", clone)


def test_refuses_a_file_or_directory_above_the_bound(clone: Path) -> None:
    with (clone / "web-api.tgz").open("wb") as sparse:  # sparse: no disk is used
        sparse.write(b"\x1f\x8b")
        sparse.truncate(MAX_ARTIFACT_BYTES + 1)
    (clone / "dist").mkdir()
    with (clone / "dist" / "big.bin").open("wb") as sparse:
        sparse.truncate(MAX_ARTIFACT_BYTES + 1)

    assert "above the pipe's bound of 5.0 GiB" in refusal("web-api.tgz", clone)
    assert "above the pipe's bound" in refusal("dist", clone)


def test_refuses_a_directory_holding_a_pipe_or_socket(clone: Path) -> None:
    tree(clone / "dist", {"index.js": b"ok"})
    os.mkfifo(clone / "dist" / "queue")
    problem = refusal("dist", clone)
    assert "dist holds an entry a release may not hold: queue is a FIFO (named pipe)" in problem
    assert "not a file, directory or symlink" in problem


# --- check_artifact_prefix ----------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "web-api/", "acme/web-api/builds/", "web_api.v2-(main)/"])
def test_prefixes_of_safe_characters_are_accepted(prefix: str) -> None:
    assert check_artifact_prefix(prefix) is None


@pytest.mark.parametrize("prefix", ["web api/", "/web-api/", "a//b/", "../up/", "a/./b/", "é/", "x" * 960])
def test_prefixes_s3_or_iam_would_trip_on_are_refused(prefix: str) -> None:
    assert check_artifact_prefix(prefix)


# --- packing: deterministic, faithful -----------------------------------------------------------------


def sample(root: Path) -> Path:
    tree(root, {"index.js": b"console.log(1)\n", "lib/util.js": b"module.exports = 2\n", "bin/start": b"#!/bin/sh\n"})
    (root / "bin" / "start").chmod(0o755)
    (root / "current-config").symlink_to("lib/util.js")
    (root / "empty-dir").mkdir()
    return root


def test_the_same_files_pack_to_the_same_bytes_whatever_their_times_modes_and_order(tmp_path: Path) -> None:
    first = sample(tmp_path / "one")
    second = tmp_path / "two"
    second.mkdir()
    (second / "empty-dir").mkdir()  # created in another order, other times and read bits
    (second / "current-config").symlink_to("lib/util.js")
    tree(second, {"lib/util.js": b"module.exports = 2\n", "bin/start": b"#!/bin/sh\n", "index.js": b"console.log(1)\n"})
    (second / "bin" / "start").chmod(0o700)
    (second / "index.js").chmod(0o600)
    os.utime(second / "index.js", (1_000_000, 1_000_000))

    one = pack_directory(first, tmp_path / "one.tar.gz")
    two = pack_directory(second, tmp_path / "two.tar.gz")

    assert one == two
    assert one[0] == hashlib.sha256((tmp_path / "one.tar.gz").read_bytes()).hexdigest()
    assert one[1] == (tmp_path / "one.tar.gz").stat().st_size


def test_content_and_the_executable_bit_change_the_digest(tmp_path: Path) -> None:
    base = pack_directory(sample(tmp_path / "base"), tmp_path / "base.tar.gz")[0]
    edited = sample(tmp_path / "edited")
    (edited / "index.js").write_bytes(b"console.log(2)\n")
    not_executable = sample(tmp_path / "plain")
    (not_executable / "bin" / "start").chmod(0o644)

    assert pack_directory(edited, tmp_path / "edited.tar.gz")[0] != base
    assert pack_directory(not_executable, tmp_path / "plain.tar.gz")[0] != base


def test_the_pack_unpacks_with_tar_as_it_was_and_without_warnings(tmp_path: Path) -> None:
    pack_directory(sample(tmp_path / "src"), tmp_path / "release.tar.gz")
    out = tmp_path / "out"
    out.mkdir()
    unpack = ["tar", "-xzf", str(tmp_path / "release.tar.gz"), "-C", str(out)]
    done = subprocess.run(unpack, capture_output=True, text=True, check=False)

    assert (done.returncode, done.stderr) == (0, "")
    assert (out / "lib" / "util.js").read_bytes() == b"module.exports = 2\n"
    assert os.access(out / "bin" / "start", os.X_OK) and not os.access(out / "index.js", os.X_OK)
    assert os.readlink(out / "current-config") == "lib/util.js"
    assert (out / "empty-dir").is_dir()
    assert (out / "index.js").stat().st_mtime == FIXED_MTIME


def test_the_gzip_header_carries_no_name_and_no_time(tmp_path: Path) -> None:
    pack_directory(sample(tmp_path / "src"), tmp_path / "release.tar.gz")
    header = (tmp_path / "release.tar.gz").read_bytes()[:10]
    assert header[3] & 0x08 == 0  # FNAME flag off
    assert header[4:8] == b"\0\0\0\0"  # MTIME zero
    with gzip.open(tmp_path / "release.tar.gz") as unzipped, tarfile.open(fileobj=unzipped) as tar:
        names = tar.getnames()
    assert names == ["bin", "bin/start", "current-config", "empty-dir", "index.js", "lib", "lib/util.js"]


NAMES = st.text(alphabet="abcdefghij-_.0123456789", min_size=1, max_size=12).filter(lambda n: n not in (".", ".."))
PATHS = st.lists(NAMES, min_size=1, max_size=3).map("/".join)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.dictionaries(PATHS, st.binary(max_size=200), min_size=1))
def test_packing_depends_only_on_the_files_property(
    tmp_path_factory: pytest.TempPathFactory, files: dict[str, bytes]
) -> None:
    # drop paths that are also a parent of another path: a name cannot be a file and a directory
    files = {name: data for name, data in files.items() if not any(other.startswith(name + "/") for other in files)}
    base = tmp_path_factory.mktemp("prop")
    forward = tree(base / "forward", files)
    backward = base / "backward"
    backward.mkdir()
    tree(backward, dict(reversed(list(files.items()))))

    assert pack_directory(forward, base / "f.tar.gz") == pack_directory(backward, base / "b.tar.gz")
    with tarfile.open(base / "f.tar.gz") as tar:
        assert {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()} == files  # type: ignore[union-attr]


# --- prepare_artifact ---------------------------------------------------------------------------------


def test_an_archive_is_uploaded_as_it_is_under_a_content_key(clone: Path, tmp_path: Path) -> None:
    archive = tgz(clone / "web-api.tgz", {"index.js": b"ok"})
    artifact = prepare_artifact("web-api.tgz", str(clone), "web-api/", tmp_path)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()

    assert artifact == Artifact(archive.resolve(), digest, archive.stat().st_size, "tar.gz", f"web-api/{digest}.tar.gz")
    assert artifact.prefix == "web-api/"


def test_a_directory_is_packed_into_the_work_directory(clone: Path, tmp_path: Path) -> None:
    sample(clone / "dist")
    work = tmp_path / "work"
    work.mkdir()
    artifact = prepare_artifact("dist", str(clone), "", work)

    assert artifact.path.parent == work.resolve() and artifact.archive_format == "tar.gz"
    assert artifact.key == f"{artifact.sha256}.tar.gz"
    assert artifact.sha256 == hashlib.sha256(artifact.path.read_bytes()).hexdigest()


def test_prepare_refuses_what_validation_refuses_naming_the_variable(clone: Path, tmp_path: Path) -> None:
    tgz(clone / "web-api.tgz", {"index.js": b"ok"})
    with pytest.raises(NothingSent, match=r"^ARTIFACT: nothing was sent\. missing\.tgz does not exist"):
        prepare_artifact("missing.tgz", str(clone), "web-api/", tmp_path)
    with pytest.raises(NothingSent, match=r"^ARTIFACT_PREFIX: nothing was sent\."):
        prepare_artifact("web-api.tgz", str(clone), "web api/", tmp_path)


def test_prepare_never_packs_into_the_directory_it_packs(clone: Path) -> None:
    sample(clone / "dist")
    with pytest.raises(ValueError, match="inside the directory to pack"):
        prepare_artifact("dist", str(clone), "", clone / "dist")


# --- upload_once: AWS refusals (stubbed S3) -------------------------------------------------------------


@pytest.fixture
def s3() -> Iterator[tuple[S3Client, Stubber]]:
    client = boto3.session.Session(
        aws_access_key_id="AKIAUNITTESTEXAMPLE", aws_secret_access_key="unit-test-secret-key", region_name="eu-west-1"
    ).client("s3", region_name="eu-west-1")
    with Stubber(client) as stubber:
        yield client, stubber


def small_artifact(tmp_path: Path) -> Artifact:
    path = tmp_path / "a.tgz"
    path.write_bytes(b"\x1f\x8bdata")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Artifact(path, digest, path.stat().st_size, "tar.gz", f"web-api/{digest}.tar.gz")


def test_a_forbidden_head_names_get_object_and_list_bucket(s3: tuple[S3Client, Stubber], tmp_path: Path) -> None:
    client, stubber = s3
    stubber.add_client_error("head_object", "403", "Forbidden", 403)
    with pytest.raises(NothingSent) as refused:
        upload_once(client, BUCKET, small_artifact(tmp_path))
    message = str(refused.value)

    assert message.startswith("ARTIFACT_BUCKET: nothing was sent.")
    assert f"s3:GetObject on arn:aws:s3:::{BUCKET}/web-api/*" in message
    assert f"s3:ListBucket on arn:aws:s3:::{BUCKET}" in message


def test_a_denied_upload_names_put_object_on_the_prefix(s3: tuple[S3Client, Stubber], tmp_path: Path) -> None:
    client, stubber = s3
    stubber.add_client_error("head_object", "404", "Not Found", 404)
    stubber.add_client_error("put_object", "AccessDenied", "User is not authorized to perform: s3:PutObject", 403)
    with pytest.raises(NothingSent, match=rf"Fix: allow s3:PutObject on arn:aws:s3:::{BUCKET}/web-api/\*"):
        upload_once(client, BUCKET, small_artifact(tmp_path))


def test_a_kms_refusal_names_the_key_permissions(s3: tuple[S3Client, Stubber], tmp_path: Path) -> None:
    client, stubber = s3
    stubber.add_client_error("head_object", "404", "Not Found", 404)
    stubber.add_client_error(
        "put_object", "AccessDenied", "User is not authorized to perform: kms:GenerateDataKey on resource: key", 403
    )
    with pytest.raises(NothingSent, match="allow kms:GenerateDataKey and kms:Decrypt on that key"):
        upload_once(client, BUCKET, small_artifact(tmp_path))


def test_a_single_put_carries_the_precomputed_sha256_and_no_acl(s3: tuple[S3Client, Stubber], tmp_path: Path) -> None:
    client, stubber = s3
    artifact = small_artifact(tmp_path)
    stubber.add_client_error("head_object", "404", "Not Found", 404)
    stubber.add_response(
        "put_object",
        {"ETag": '"x"'},
        {
            "Bucket": BUCKET,
            "Key": artifact.key,
            "Body": ANY,
            "Metadata": {"sha256": artifact.sha256},
            "ContentType": "application/gzip",
            "ChecksumSHA256": sha256_base64(artifact.sha256),
        },
    )
    assert upload_once(client, BUCKET, artifact) is True
    stubber.assert_no_pending_responses()
