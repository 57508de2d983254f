"""Release mode end to end: ship the build, switch atomically, roll back by switching back, remember
every deploy in the ledger. The instances' APP_DIR is a real folder per instance (the stand-in maps
/srv), so ``current``, the releases and pruning are checked on disk."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from e2e.release_support import build_bare
from standin import StandIn
from standin.users import AppUser
from support import run_pipe

APP_DIR = "/srv/web-api"


def release_env(
    standin: StandIn, ids: list[str], clone: Path, bucket: str, service: str, **extra: str
) -> dict[str, str]:
    variables = {
        "INSTANCE_IDS": " ".join(ids),
        "ENVIRONMENT": "prod",
        "SERVICE": service,
        "ARTIFACT_BUCKET": bucket,
        "APP_DIR": APP_DIR,
        "ACTIVATE_COMMANDS": 'echo "activated $(cat version.txt)"',
        "BITBUCKET_CLONE_DIR": str(clone),
    }
    return standin.pipe_env(**(variables | extra))


def live(standin: StandIn, instance_id: str) -> str:
    current = standin.instance_path(instance_id, f"{APP_DIR}/current")
    return (current.parent / os.readlink(current) / "version.txt").read_text().strip()


def releases(standin: StandIn, instance_id: str) -> list[str]:
    return sorted(path.name for path in standin.instance_path(instance_id, f"{APP_DIR}/releases").iterdir())


def ledger_copies(standin: StandIn, bucket: str) -> int:
    """Objects of the ledger's archive in the bucket: each run copies its ledger version there."""
    listed = standin.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])
    return sum("/ledger/" in item["Key"] for item in listed)


def ledger(standin: StandIn, service: str) -> list[dict[str, object]]:
    history = standin.client("ssm").get_parameter_history(Name=f"/release-ledger/{service}/prod/release")
    return [json.loads(version["Value"]) for version in history["Parameters"]]


def test_release_a_then_b_goes_live_everywhere_and_is_recorded(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    ids = standin.launch(3)
    artifact = build_bare(tmp_path, "A")
    first = run_pipe(
        release_env(standin, ids, tmp_path, bucket, service, ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="7")
    )
    assert first.returncode == 0, first.output
    build_bare(tmp_path, "B")
    before, copies = standin.calls_snapshot(include_instances=False), ledger_copies(standin, bucket)
    second = run_pipe(
        release_env(standin, ids, tmp_path, bucket, service, ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="8")
    )
    puts = (standin.calls_snapshot(include_instances=False) - before)["s3:PutObject"]
    uploads = puts - (ledger_copies(standin, bucket) - copies)

    assert second.returncode == 0, second.output
    assert uploads == 1
    assert "live before: 000007-0123456" in second.output
    for instance_id in ids:
        assert live(standin, instance_id) == "B"
        assert releases(standin, instance_id) == ["000007-0123456", "000008-0123456"]
        assert f"{instance_id} | activated B" in second.output
    entries = ledger(standin, service)
    assert [entry["release"] for entry in entries] == ["000007-0123456", "000008-0123456"]
    assert [entry["status"] for entry in entries] == ["succeeded", "succeeded"]
    document = json.loads((tmp_path / "ssm-deploy-result.json").read_text())
    assert (document["release"], document["previous_release"]) == ("000008-0123456", "000007-0123456")

    again = run_pipe(
        release_env(standin, ids, tmp_path, bucket, service, ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="8")
    )
    assert again.returncode == 0, again.output
    assert "nothing uploaded" in again.output  # the same build again: uploaded once per content


def test_a_failed_health_check_switches_back_to_the_release_that_was_live(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    good, sick = standin.launch(2)
    artifact = build_bare(tmp_path, "A")
    env = release_env(standin, [good, sick], tmp_path, bucket, service, ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="1")
    assert run_pipe(env).returncode == 0
    build_bare(tmp_path, "B")
    env = release_env(
        standin,
        [good, sick],
        tmp_path,
        bucket,
        service,
        ARTIFACT=artifact,
        BITBUCKET_BUILD_NUMBER="2",
        HEALTHCHECK_COMMANDS=f'[ "$AWS_SSM_INSTANCE_ID" != "{sick}" ] || {{ echo "503"; exit 1; }}',
        HEALTHCHECK_RETRIES="1",
    )
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert f"the health check failed on 1 of 2 instance(s): {sick}" in run.output
    assert "Switching 2 instance(s) back to the release that was live before" in run.output
    for instance_id in (good, sick):
        assert live(standin, instance_id) == "A"
        assert f"{instance_id} | activated A" in run.output  # the activation ran again on A
    assert ledger(standin, service)[-1]["status"] == "rolled back"


def test_a_corrupted_artifact_is_refused_on_the_instances_and_nothing_switches(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    ids = standin.launch(2)
    artifact = build_bare(tmp_path, "A")
    assert run_pipe(release_env(standin, ids, tmp_path, bucket, service, ARTIFACT=artifact)).returncode == 0
    build_bare(tmp_path, "B")
    s3 = standin.client("s3")
    env = release_env(standin, ids, tmp_path, bucket, service, ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="43")
    dry = run_pipe({**env, "DRY_RUN": "true"})
    key = next(line for line in dry.output.split() if line.startswith(f"s3://{bucket}/")).split("/", 3)[3]
    data = (tmp_path / artifact).read_bytes()
    corrupted = bytes([data[0] ^ 1]) + data[1:]  # same size, other bytes, same recorded digest
    sha256 = key.rsplit("/", 1)[-1].split(".", 1)[0]
    s3.put_object(Bucket=bucket, Key=key, Body=corrupted, Metadata={"sha256": sha256})
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert "Failed (exit 82)" in run.output
    assert "nothing was unpacked or switched" in run.output
    for instance_id in ids:
        assert live(standin, instance_id) == "A"


def test_release_previous_goes_back_without_uploading_and_fetches_what_an_instance_lacks(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    ids = standin.launch(2)
    artifact = build_bare(tmp_path, "A")
    run_pipe(release_env(standin, ids, tmp_path, bucket, service, ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="1"))
    build_bare(tmp_path, "B")
    run_pipe(release_env(standin, ids, tmp_path, bucket, service, ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="2"))
    lacking = standin.instance_path(ids[1], f"{APP_DIR}/releases/000001-0123456")
    os.system(f"rm -rf '{lacking}'")
    before, copies = standin.calls_snapshot(include_instances=False), ledger_copies(standin, bucket)
    run = run_pipe(release_env(standin, ids, tmp_path, bucket, service, RELEASE="previous"))

    assert run.returncode == 0, run.output
    puts = (standin.calls_snapshot(include_instances=False) - before)["s3:PutObject"]
    assert puts - (ledger_copies(standin, bucket) - copies) == 0  # the ledger's copy only: nothing uploaded
    assert all(live(standin, instance_id) == "A" for instance_id in ids)
    assert f"{ids[1]} | ssm-deploy: downloading" in run.output


def test_keep_releases_two_after_four_deploys_leaves_the_live_one_the_one_before_and_the_one_before_that(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    (instance_id,) = standin.launch(1)
    for number, version in enumerate("ABCD", 1):
        artifact = build_bare(tmp_path, version)
        env = release_env(
            standin,
            [instance_id],
            tmp_path,
            bucket,
            service,
            ARTIFACT=artifact,
            BITBUCKET_BUILD_NUMBER=str(number),
            KEEP_RELEASES="2",
        )
        assert run_pipe(env).returncode == 0

    # and the one before that: where RELEASE: previous went as D's deploy began, and still goes had it failed
    assert releases(standin, instance_id) == ["000002-0123456", "000003-0123456", "000004-0123456"]
    assert live(standin, instance_id) == "D"


def test_run_as_runs_the_commands_as_that_user_with_its_login_path(
    standin: StandIn, tmp_path: Path, bucket: str, service: str, app_user: AppUser
) -> None:
    (instance_id,) = standin.launch(1)
    env = release_env(
        standin,
        [instance_id],
        tmp_path,
        bucket,
        service,
        ARTIFACT=build_bare(tmp_path, "A"),
        RUN_AS=app_user.name,
        COMMANDS='echo "prepared by $(id -un)" > prepared.txt',
        ACTIVATE_COMMANDS="standin-login-check; id -un",
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert f"{instance_id} | login environment of {app_user.name}" in run.output
    release = standin.instance_path(instance_id, f"{APP_DIR}/releases/000042-0123456")
    assert (release / "prepared.txt").read_text() == f"prepared by {app_user.name}\n"
    assert (release / "prepared.txt").stat().st_uid == app_user.uid


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"ARTIFACT": "missing.tgz"}, "ARTIFACT"),
        ({"ARTIFACT": "web-api.tgz", "APP_DIR": "relative/dir"}, "APP_DIR"),
        ({"ARTIFACT": "web-api.tgz", "RELEASE": "previous"}, "RELEASE"),
        ({"ARTIFACT": "web-api.tgz", "RUN_AS": "no such user"}, "RUN_AS"),
        ({"ARTIFACT": "web-api.tgz", "KEEP_RELEASES": "1"}, "KEEP_RELEASES"),
        ({"ARTIFACT": "web-api.tgz", "SHARED_PATHS": "../etc"}, "SHARED_PATHS"),
        ({"ARTIFACT": "web-api.tgz", "ROLLBACK_COMMANDS": "undo"}, "ROLLBACK_COMMANDS"),
        ({"RELEASE": "latest"}, "RELEASE"),
        ({"APP_DIR": "/srv/x"}, "APP_DIR"),
    ],
)
def test_bad_release_input_is_refused_by_name_and_nothing_is_sent_or_uploaded(
    standin: StandIn, tmp_path: Path, bucket: str, service: str, variables: dict[str, str], named: str
) -> None:
    (instance_id,) = standin.launch(1)
    build_bare(tmp_path, "A")
    env = release_env(standin, [instance_id], tmp_path, bucket, service)
    env.pop("APP_DIR") if "APP_DIR" in variables else None
    env.update(variables)
    before = standin.calls_snapshot(include_instances=False)
    run = run_pipe(env)
    calls = standin.calls_snapshot(include_instances=False) - before

    assert run.returncode == 1, run.output
    assert f"{named}:" in run.output
    assert "Traceback" not in run.output
    assert calls["ssm:SendCommand"] == 0 and calls["s3:PutObject"] == 0


def test_the_readme_user_data_installs_the_live_release_on_a_new_instance(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """The README's user-data block, run as cloud-init would on an instance launched after the deploy."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("**A new instance installs the live release**", 1)[1]
    script = section.split("```bash\n", 1)[1].split("```", 1)[0]
    script = re.sub(r"(?m)^LEDGER=.*$", f"LEDGER=/release-ledger/{service}/prod/release", script)
    script = re.sub(r"(?m)^BUCKET=.*$", f"BUCKET={bucket}", script)
    script = re.sub(r"(?m)^ACTIVATE=.*$", "ACTIVATE='echo \"activated $(cat version.txt)\"'", script)
    (deployed,) = standin.launch(1)
    artifact = build_bare(tmp_path, "A")
    env = release_env(standin, [deployed], tmp_path, bucket, service, ARTIFACT=artifact, BITBUCKET_BUILD_NUMBER="5")
    assert run_pipe(env).returncode == 0
    failed = release_env(
        standin,
        [deployed],
        tmp_path,
        bucket,
        service,
        ARTIFACT=build_bare(tmp_path, "B"),
        BITBUCKET_BUILD_NUMBER="6",
        HEALTHCHECK_COMMANDS="exit 1",
        HEALTHCHECK_RETRIES="1",
    )
    assert run_pipe(failed).returncode == 1  # B was rolled back: A stays the live release

    (fresh,) = standin.launch(1)
    done = standin.run_on_instance(fresh, script)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "activated A" in done.stdout
    assert live(standin, fresh) == "A"
    assert releases(standin, fresh) == ["000005-0123456"]


def test_an_activation_that_fails_switches_back_and_runs_the_activation_again(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    ids = standin.launch(2)
    artifact = build_bare(tmp_path, "A")
    assert run_pipe(release_env(standin, ids, tmp_path, bucket, service, ARTIFACT=artifact)).returncode == 0
    build_bare(tmp_path, "B")
    env = release_env(
        standin,
        ids,
        tmp_path,
        bucket,
        service,
        ARTIFACT=artifact,
        BITBUCKET_BUILD_NUMBER="43",
        ACTIVATE_COMMANDS=f'echo "activated $(cat version.txt)"; [ "$(cat version.txt)" = A ] || '
        f'[ "$AWS_SSM_INSTANCE_ID" != "{ids[1]}" ] || exit 3',
    )
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert f"{ids[1]}: Failed (exit 85)" in run.output  # activation failed, current is back on A there
    assert f"{ids[1]} | activated A" in run.output  # and the activation ran again on A
    assert "Switching 1 instance(s) back to the release that was live before" in run.output  # the other one
    assert all(live(standin, instance_id) == "A" for instance_id in ids)
    assert ledger(standin, service)[-1]["status"] == "rolled back"


def test_no_secret_reaches_the_artifact_key_the_ledger_the_result_file_or_the_log(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    secret = "release-secret-Value-42"
    key = standin.create_key("release secrets")
    standin.put_secret(f"/deploy/{service}/db_password", secret, key)
    (instance_id,) = standin.launch(1)
    env = release_env(
        standin,
        [instance_id],
        tmp_path,
        bucket,
        service,
        ARTIFACT=build_bare(tmp_path, "A"),
        SECRETS=f"DB_PASSWORD=/deploy/{service}/db_password",
        COMMANDS='echo "db password is $DB_PASSWORD"',
        ACTIVATE_COMMANDS='echo "activated with ${#DB_PASSWORD} characters"',
        DEBUG="true",
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert f"{instance_id} | activated with {len(secret)} characters" in run.output  # the commands had it
    assert "db password is ****" in run.output
    keys = [item["Key"] for item in standin.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]
    history = standin.client("ssm").get_parameter_history(Name=f"/release-ledger/{service}/prod/release")
    sent = [json.dumps(command.request) for command in standin.sent_commands()]
    for text in [run.output, *keys, *(v["Value"] for v in history["Parameters"]), *sent]:
        assert secret not in text
    for result in tmp_path.glob("ssm-deploy-result.json*"):
        assert secret not in result.read_text()
