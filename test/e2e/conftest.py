"""Fixtures the end-to-end tests share: release mode's service name and artifact bucket."""

from __future__ import annotations

import uuid

import pytest
from standin import StandIn


@pytest.fixture
def service() -> str:
    """A SERVICE name of its own, so each test has its own release ledger and lock."""
    return f"svc{uuid.uuid4().hex[:8]}"


@pytest.fixture
def bucket(standin: StandIn) -> str:
    """A new, empty ARTIFACT_BUCKET in the stand-in's S3."""
    name = f"artifacts-{uuid.uuid4().hex[:8]}"
    standin.client("s3").create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": standin.region})
    return name
