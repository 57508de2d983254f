"""The Docker image: built from the Dockerfile on a local base, run against the stand-in.

These tests never skip: when the engine or the build is missing they fail, in CI as locally.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from standin import StandIn
from standin.instance_app import RESTART
from support import ROOT, PipeRun, plain

# Where Docker Hub is reachable (Bitbucket Pipelines), set PIPE_TEST_BASE_IMAGE=python:3.12-slim.
BASE_IMAGE = os.environ.get("PIPE_TEST_BASE_IMAGE", "ssm-deploy-test-base:bookworm")
LOCAL_BASE = BASE_IMAGE.startswith("ssm-deploy-test-base:")
IMAGE = "ssm-deploy:test"
HOST_ONLY = {"PATH", "LANG"}

# one pytest-xdist worker runs them all (./dev test uses --dist loadgroup): the image is built once
pytestmark = [pytest.mark.image, pytest.mark.xdist_group("image")]


def _run(*command: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def image() -> Iterator[str]:
    steps = [
        ["bash", "scripts/build-test-base-image.sh", BASE_IMAGE] if LOCAL_BASE else ["docker", "pull", BASE_IMAGE],
        ["docker", "build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", IMAGE, "."],
    ]
    for step in steps:
        done = _run(*step)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(step)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    yield IMAGE


def run_image(image: str, env: dict[str, str], timeout: float = 120, clone: Path | None = None) -> PipeRun:
    """``docker run`` the pipe with ``env``; ``clone`` is mounted and made the working directory, as
    Bitbucket mounts the clone directory."""
    flags = [f"--env={name}={value}" for name, value in plain(env).items() if name not in HOST_ONLY]
    if clone is not None:
        flags += [f"--volume={clone}:{clone}", f"--workdir={clone}"]
    done = subprocess.run(
        ["docker", "run", "--rm", "--network", "host", *flags, image],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    return PipeRun(done.returncode, done.stdout)


def test_image_deploys_to_two_instances(image: str, standin: StandIn) -> None:
    ids = standin.launch(2)
    key = standin.create_key("image test key")
    standin.put_secret("/deploy/image/db_password", "image-secret-value", key)
    env = standin.pipe_env(
        ENVIRONMENT="image",
        ROLE_ARN="arn:aws:iam::123456789012:role/deploy-{environment}",
        INSTANCE_IDS=" ".join(ids),
        SECRETS="DB_PASSWORD=/deploy/{environment}/db_password",
        COMMANDS='echo "release on $(basename "$HOME") with ${#DB_PASSWORD}-char password"',
    )
    run = run_image(image, env)

    assert run.returncode == 0, run.output
    for instance_id in ids:
        assert f"{instance_id} | release on {instance_id} with 18-char password" in run.output
    assert "image-secret-value" not in run.output
    assert "/deploy-image/" in standin.sent_commands()[-1].caller_arn


def test_image_runs_the_pipe_from_bytecode_compiled_when_it_was_built(image: str) -> None:
    """Each run is a new container and the image sets PYTHONDONTWRITEBYTECODE: without bytecode made
    at build time, every run compiles every module of /pipe again."""
    done = _run(
        "docker",
        "run",
        "--rm",
        "--entrypoint",
        "python3",
        image,
        "-v",
        "-c",
        "import sys; sys.path[0] = '/'; import pipe.main",
    )

    assert done.returncode == 0, done.stderr
    modules = re.findall(r"^import '(pipe(?:\.\w+)*)' # <\S*SourceFileLoader", done.stderr, re.MULTILINE)
    from_bytecode = re.findall(r"^# code object from '/pipe/\S+\.pyc'$", done.stderr, re.MULTILINE)
    assert "pipe.main" in modules and "pipe.aws.authenticate" in modules
    assert len(from_bytecode) == len(modules)


def test_image_fails_the_step_when_an_instance_fails(image: str, standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    run = run_image(image, standin.pipe_env(INSTANCE_IDS=instance_id, COMMANDS="exit 4"))

    assert run.returncode == 1, run.output
    assert f"{instance_id}: Failed (exit 4)" in run.output


def test_image_reports_bad_variables_without_traceback(image: str, standin: StandIn) -> None:
    run = run_image(image, standin.pipe_env(INSTANCE_IDS="web-1", COMMANDS="true"))

    assert run.returncode == 1, run.output
    assert "INSTANCE_IDS:" in run.output
    assert "Traceback" not in run.output


def test_image_writes_the_result_into_a_root_owned_clone_directory(
    image: str, standin: StandIn, tmp_path: Path
) -> None:
    """Bitbucket mounts the clone directory (owned by root, mode 755) and runs the pipe in it."""
    clone = tmp_path / "build"
    clone.mkdir(mode=0o755)
    (instance_id,) = standin.launch(1)
    env = standin.pipe_env(INSTANCE_IDS=instance_id, COMMANDS="echo done", BITBUCKET_CLONE_DIR=str(clone))
    done = run_image(image, env, clone=clone)

    assert done.returncode == 0, done.output
    result = json.loads((clone / "ssm-deploy-result.json").read_text())
    assert result["status"] == "succeeded"
    assert [row["instance_id"] for row in result["instances"]] == [instance_id]
    assert "SSM_DEPLOY_STATUS='succeeded'" in (clone / "ssm-deploy-result.json.env").read_text()


def test_image_ships_a_release_and_switches_current(image: str, standin: StandIn, tmp_path: Path) -> None:
    """Release mode from the image: the artifact in the mounted clone directory is uploaded from the
    container, installed on the instances and made live."""
    clone = tmp_path / "build"
    clone.mkdir(mode=0o755)
    data = b"image release\n"
    with tarfile.open(clone / "app.tgz", "w:gz") as archive:
        info = tarfile.TarInfo("version.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    bucket = f"image-{uuid.uuid4().hex[:8]}"
    standin.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": standin.region})
    (instance_id,) = standin.launch(1)
    env = standin.pipe_env(
        INSTANCE_IDS=instance_id,
        ENVIRONMENT="image",
        ARTIFACT="app.tgz",
        ARTIFACT_BUCKET=bucket,
        APP_DIR="/srv/image-app",
        ACTIVATE_COMMANDS="cat version.txt",
        BITBUCKET_CLONE_DIR=str(clone),
    )
    done = run_image(image, env, timeout=180, clone=clone)

    assert done.returncode == 0, done.output
    assert f"{instance_id} | image release" in done.output
    current = standin.instance_path(instance_id, "/srv/image-app/current")
    assert (current.parent / os.readlink(current) / "version.txt").read_text() == "image release\n"


def test_image_rolls_out_behind_the_load_balancer_without_failed_requests(image: str, standin: StandIn) -> None:
    """The README's zero-downtime example from the image: batches drained, deployed, registered again."""
    standin.elb_time_scale = 0.1
    ids = standin.launch(4)
    for instance_id in ids:
        standin.app_up(instance_id)
    group = f"image-{uuid.uuid4().hex[:8]}"
    arn = standin.create_target_group(group, ids, deregistration_delay=20)
    standin.wait_target_states(arn, ids, "healthy", timeout=30)
    alarm = f"{group}-5xx"
    standin.create_alarm(alarm)
    env = standin.pipe_env(
        INSTANCE_IDS=" ".join(ids),
        ENVIRONMENT="image",
        TARGET_GROUPS="auto",
        BATCH_SIZE="2",
        MIN_HEALTHY="50%",
        ALARMS=alarm,
        SERVICE=group,
        COMMANDS=RESTART,
    )
    with standin.traffic(arn) as traffic:
        run = run_image(image, env, timeout=180)

    assert run.returncode == 0, run.output
    assert traffic.failures == [], traffic.failures[:5]
    assert "batch 2/2 (2 instance(s)): healthy in the load balancer" in run.output
    assert f"Lock /deploy-lock/{group}/image released" in run.output
    assert set(standin.target_states(arn).values()) == {"healthy"}
