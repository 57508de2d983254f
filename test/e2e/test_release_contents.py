"""What a release may hold, end to end against the stand-in: a build holding a FIFO, a device node, a
setuid file, a ``../`` or absolute path, or a hard link out is refused before anything is uploaded or
sent; an archive the pipe did not check (uploaded by an older pipe, or replaced in S3 together with
the ledger's SHA-256) is refused on the instance before anything is unpacked, and the release that
was live stays live."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest
from e2e.test_releases import APP_DIR, release_env
from standin import StandIn
from support import run_pipe
from unit.release_support import Member, tar_member, write_tgz

from pipe.release.remote import ReleaseExit

FIRST, OLD_BUILD = "000001-0123456", "000002-0123456"


@pytest.mark.parametrize(
    ("member", "named"),
    [
        (
            tar_member("run/queue", tarfile.FIFOTYPE),
            "run/queue is a FIFO (named pipe), not a file, directory or symlink",
        ),
        (tar_member("dev/null", tarfile.CHRTYPE), "dev/null is a character device, not a file, directory or symlink"),
        (tar_member("bin/helper", mode=0o4755, data="x"), "bin/helper has the setuid bit (mode 4755)"),
        (
            tar_member("../cron.d/job", data="x"),
            "../cron.d/job has a .. component, which would lead outside the release",
        ),
        (tar_member("/etc/profile.d/x.sh", data="x"), "/etc/profile.d/x.sh is an absolute path"),
        (tar_member("passwd", tarfile.LNKTYPE, 0o644, "/etc/passwd"), "passwd is a hard link to /etc/passwd, outside"),
    ],
    ids=["fifo", "device", "setuid", "dotdot", "absolute", "hard-link-out"],
)
def test_a_tgz_holding_what_a_release_may_not_is_refused_before_upload_naming_the_entry(
    standin: StandIn, tmp_path: Path, bucket: str, service: str, member: Member, named: str
) -> None:
    (instance_id,) = standin.launch(1)
    write_tgz(tmp_path / "web-api.tgz", [tar_member("version.txt", data="A\n"), member])
    before = standin.calls_snapshot(include_instances=False)
    run = run_pipe(release_env(standin, [instance_id], tmp_path, bucket, service, ARTIFACT="web-api.tgz"))
    calls = standin.calls_snapshot(include_instances=False) - before

    assert run.returncode == 1, run.output
    assert "ARTIFACT: nothing was sent. web-api.tgz holds an entry a release may not hold: " + named in run.output
    assert "(fix: " in run.output and "Traceback" not in run.output
    assert calls["s3:PutObject"] == 0 and calls["s3:CreateMultipartUpload"] == 0
    assert calls["ssm:SendCommand"] == 0
    assert standin.client("s3").list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert not standin.instance_path(instance_id, APP_DIR).exists()


def test_an_unchecked_archive_is_refused_on_the_instance_and_the_live_release_stays(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    (instance_id,) = standin.launch(1)
    write_tgz(tmp_path / "web-api.tgz", [tar_member("version.txt", data="A\n")])
    first = run_pipe(
        release_env(
            standin, [instance_id], tmp_path, bucket, service, ARTIFACT="web-api.tgz", BITBUCKET_BUILD_NUMBER="1"
        )
    )
    assert first.returncode == 0, first.output
    # A build the pipe never checked, as an older version of the pipe uploaded and recorded it (or as
    # someone who can write the bucket and the ledger replaced one): its SHA-256 matches the ledger.
    hostile = write_tgz(
        tmp_path / "old-build.tgz",
        [
            tar_member("version.txt", data="H\n"),
            tar_member("run/queue", tarfile.FIFOTYPE),
            tar_member("bin/helper", mode=0o4755, data="x"),
            tar_member("node", tarfile.SYMTYPE, 0o777, "/usr/bin/node"),
        ],
    )
    _record_unchecked_build(standin, bucket, service, hostile, OLD_BUILD)
    artifacts_before = _artifact_keys(standin, bucket)

    run = run_pipe(release_env(standin, [instance_id], tmp_path, bucket, service, RELEASE=OLD_BUILD))

    assert run.returncode == 1, run.output
    # a release the ledger recorded as live before: going back to it is a rollback
    assert f"Rollback to {OLD_BUILD} in {APP_DIR}/releases; live before: {FIRST}" in run.output
    assert _artifact_keys(standin, bucket) == artifacts_before  # nothing uploaded (the ledger's copies aside)
    assert f"Exit 91 on {instance_id}: {ReleaseExit.ARTIFACT_REFUSED.meaning}." in run.output
    assert "ssm-deploy: refused: run/queue is a FIFO (named pipe)" in run.output
    assert "ssm-deploy: refused: bin/helper has the setuid bit (mode 4755)" in run.output
    assert "ssm-deploy: refused: node is a symlink to /usr/bin/node, outside the release" in run.output
    assert "activated H" not in run.output
    app_dir = standin.instance_path(instance_id, APP_DIR)
    assert os.readlink(app_dir / "current") == f"releases/{FIRST}"
    assert (app_dir / "current" / "version.txt").read_text() == "A\n"
    assert sorted(path.name for path in (app_dir / "releases").iterdir()) == [FIRST]
    assert not list((app_dir / ".ssm-deploy").glob("tmp.*"))
    special = [p for p in app_dir.rglob("*") if not (p.is_symlink() or p.is_dir() or p.is_file())]
    assert special == []
    assert not [p for p in app_dir.rglob("*") if p.lstat().st_mode & (stat.S_ISUID | stat.S_ISGID)]


def _artifact_keys(standin: StandIn, bucket: str) -> set[str]:
    listed = standin.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])
    return {item["Key"] for item in listed if "/ledger/" not in item["Key"]}


def _record_unchecked_build(standin: StandIn, bucket: str, service: str, archive: Path, release_id: str) -> None:
    """Put ``archive`` in the bucket under its content key and record it in the ledger as a deploy that
    was rolled back, as an older pipe would have done (the entry copies the last one the pipe wrote):
    the live release stays the last one, and RELEASE can name this one."""
    data = archive.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    ssm, name = standin.client("ssm"), f"/release-ledger/{service}/prod/release"
    entry = json.loads(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    prefix = entry["artifact"][: -len(f"{entry['sha256']}.tar.gz")]
    key = f"{prefix}{sha256}.tar.gz"
    standin.client("s3").put_object(Bucket=bucket, Key=key, Body=data, Metadata={"sha256": sha256})
    entry.update(release=release_id, artifact=key, sha256=sha256, previous=entry["release"], status="rolled back")
    ssm.put_parameter(Name=name, Value=json.dumps(entry), Type="String", Overwrite=True)
