"""The deploy lock's branches against an in-memory Parameter Store: taken and released, held, garbled,
stale and taken over, the takeover races, releases that find the lock changed or fail, and the
messages a denial gives."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import Stubber
from unit.unit_support import BUILD, REGION

from pipe.config.lock import lock_name
from pipe.errors import NothingSent
from pipe.runtime.interruption import Interrupted
from pipe.stages.lock import (
    MARKER_TTL_SECONDS,
    LockHeld,
    LockRecord,
    LockRequest,
    deploy_lock,
)

NAME = "/deploy-lock/web/prod"
HOLDER = "arn:aws:sts::123456789012:assumed-role/deploy/ssm-deploy-app-42"
OTHER_BUILD = dataclasses.replace(BUILD, repo="team/other", build_number="7", commit="fedcba9876543210")
T0 = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)


def at(seconds: float = 0) -> Callable[[], datetime.datetime]:
    return lambda: T0 + datetime.timedelta(seconds=seconds)


def request(build: Any = BUILD, holder: str = HOLDER, ttl: int = 600) -> LockRequest:
    return LockRequest(name=NAME, holder=holder, build=build, ttl_seconds=ttl)


def record_of(build: Any, acquired: datetime.datetime, ttl: int = 600, holder: str = "arn:other") -> LockRecord:
    return LockRecord.new(request(build, holder=holder, ttl=ttl), acquired)


def error(code: str, operation: str, status: int = 400) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, operation)


Hook = Callable[["FakeStore", dict[str, Any]], object]


class FakeStore:
    """Parameter Store's versions and conditional create, with hooks that run before a call so a
    test can play another deploy at that exact moment."""

    def __init__(self) -> None:
        self.versions: dict[str, list[str]] = {}
        self.calls: list[tuple[str, str]] = []
        self.hooks: list[tuple[str, Callable[[dict[str, Any]], bool], Hook]] = []
        self.meta = SimpleNamespace(region_name=REGION)

    def before(self, operation: str, when: Callable[[dict[str, Any]], bool], hook: Hook) -> None:
        """Run ``hook`` once, before the first ``operation`` call whose request matches ``when``."""
        self.hooks.append((operation, when, hook))

    def _call(self, operation: str, request: dict[str, Any]) -> None:
        self.calls.append((operation, request["Name"]))
        for entry in list(self.hooks):
            if entry[0] == operation and entry[1](request):
                self.hooks.remove(entry)
                entry[2](self, request)

    # what another deploy (or a person) does, bypassing the hooks
    def write(self, name: str, value: str) -> None:
        self.versions.setdefault(name, []).append(value)

    def value(self, name: str) -> str | None:
        versions = self.versions.get(name)
        return versions[-1] if versions else None

    # --- the client calls the lock makes -----------------------------------------------------
    def put_parameter(self, **request: Any) -> dict[str, Any]:
        self._call("PutParameter", request)
        name = request["Name"]
        if self.versions.get(name) and not request.get("Overwrite"):
            raise error("ParameterAlreadyExists", "PutParameter")
        self.write(name, request["Value"])
        return {"Version": len(self.versions[name]), "Tier": "Standard"}

    def get_parameter(self, **request: Any) -> dict[str, Any]:
        self._call("GetParameter", request)
        name, _, selector = request["Name"].partition(":")
        versions = self.versions.get(name)
        if not versions:
            raise error("ParameterNotFound", "GetParameter")
        version = int(selector) if selector else len(versions)
        if not 1 <= version <= len(versions):
            raise error("ParameterVersionNotFound", "GetParameter")
        return {"Parameter": {"Name": name, "Value": versions[version - 1], "Version": version}}

    def delete_parameter(self, **request: Any) -> dict[str, Any]:
        self._call("DeleteParameter", request)
        if not self.versions.pop(request["Name"], None):
            raise error("ParameterNotFound", "DeleteParameter")
        return {}


def ssm(store: FakeStore) -> Any:
    return cast(Any, store)


def held_by(store: FakeStore) -> LockRecord:
    value = store.value(NAME)
    assert value is not None
    return LockRecord.from_json(value)


# --- taken and released --------------------------------------------------------------------------------


def test_a_free_lock_is_created_then_deleted_with_both_progress_lines(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()
    caplog.set_level(logging.INFO, "ssm-deploy")
    with deploy_lock(ssm(store), request(), now=at()) as holding:
        document = json.loads(store.value(NAME) or "")
        assert held_by(store).lock_id == holding.record.lock_id
    assert store.value(NAME) is None
    assert document == {
        "v": 1,
        "id": holding.record.lock_id,
        "holder": HOLDER,
        "repo": "team/app",
        "build": "42",
        "build_url": "https://bitbucket.org/team/app/pipelines/results/42",
        "commit": "0123456789abcdef0123",
        "acquired_at": "2026-03-01T12:00:00Z",
        "expires_at": "2026-03-01T12:10:00Z",
    }
    assert f"Lock {NAME} taken (until 12:10:00 UTC)" in caplog.messages
    assert f"Lock {NAME} released" in caplog.messages
    assert holding.took_over is None


def test_the_lock_is_created_only_if_absent_as_a_standard_string() -> None:
    store = FakeStore()
    seen: list[dict[str, Any]] = []
    store.before("PutParameter", lambda r: True, lambda _, r: seen.append(r))
    with deploy_lock(ssm(store), request(), now=at()):
        pass
    assert seen[0]["Overwrite"] is False
    assert (seen[0]["Type"], seen[0]["Tier"]) == ("String", "Standard")


def test_the_lock_is_released_when_the_deploy_raises() -> None:
    store = FakeStore()
    with pytest.raises(Interrupted), deploy_lock(ssm(store), request(), now=at()):
        raise Interrupted("Received SIGTERM: the pipeline was stopped")
    assert store.value(NAME) is None


def test_a_create_that_botocore_retried_after_it_succeeded_is_ours() -> None:
    store = FakeStore()

    def first_attempt_lands(fake: FakeStore, request: dict[str, Any]) -> None:
        fake.write(request["Name"], request["Value"])  # the first attempt's answer was lost

    store.before("PutParameter", lambda r: r["Name"] == NAME, first_attempt_lands)
    with deploy_lock(ssm(store), request(), now=at()) as holding:
        assert held_by(store).lock_id == holding.record.lock_id
    assert store.value(NAME) is None


def test_a_lock_released_between_the_create_and_the_read_is_created_again() -> None:
    store = FakeStore()
    store.write(NAME, record_of(OTHER_BUILD, T0).to_json())
    store.before("GetParameter", lambda r: r["Name"] == NAME, lambda fake, _: fake.versions.pop(NAME))
    with deploy_lock(ssm(store), request(), now=at()) as holding:
        assert held_by(store).lock_id == holding.record.lock_id


# --- held ----------------------------------------------------------------------------------------------


def test_a_live_lock_fails_fast_naming_its_build_and_the_delete_command() -> None:
    store = FakeStore()
    theirs = record_of(OTHER_BUILD, T0, holder="arn:aws:sts::123456789012:assumed-role/deploy/other-7")
    store.write(NAME, theirs.to_json())
    with pytest.raises(LockHeld) as raised, deploy_lock(ssm(store), request(), now=at(60)):
        pytest.fail("the body must not run")
    message = str(raised.value)
    assert message.startswith("LOCK: nothing was sent. Another deploy holds the lock /deploy-lock/web/prod: ")
    assert "build https://bitbucket.org/team/other/pipelines/results/7" in message
    assert "commit fedcba9" in message and "as arn:aws:sts::123456789012:assumed-role/deploy/other-7" in message
    assert "since 2026-03-01T12:00:00Z and until 2026-03-01T12:10:00Z" in message
    assert "wait for that deploy to end" in message
    assert f"aws ssm delete-parameter --name {NAME} --region {REGION}" in message
    assert isinstance(raised.value, NothingSent)
    assert held_by(store) == theirs
    assert ("DeleteParameter", NAME) not in store.calls


def test_an_unreadable_lock_counts_as_held_and_is_left_alone() -> None:
    store = FakeStore()
    store.write(NAME, "someone wrote this by hand")
    with pytest.raises(LockHeld) as raised, deploy_lock(ssm(store), request(), now=at()):
        pytest.fail("the body must not run")
    assert "exists but holds no lock this pipe wrote" in str(raised.value)
    assert "counts as held" in str(raised.value)
    assert f"aws ssm delete-parameter --name {NAME}" in str(raised.value)
    assert store.value(NAME) == "someone wrote this by hand"


# --- stale takeover ------------------------------------------------------------------------------------


def stale_store() -> tuple[FakeStore, LockRecord]:
    store = FakeStore()
    stale = record_of(OTHER_BUILD, T0 - datetime.timedelta(hours=2))
    store.write(NAME, stale.to_json())
    return store, stale


def test_a_stale_lock_is_taken_over_with_a_warning_and_the_marker_removed(caplog: pytest.LogCaptureFixture) -> None:
    store, stale = stale_store()
    with deploy_lock(ssm(store), request(), now=at()) as holding:
        assert held_by(store).lock_id == holding.record.lock_id
        assert holding.took_over == stale
        assert [name for name in store.versions if "takeover" in name] == []
    marker = f"{NAME}/takeover-{stale.lock_id}"
    assert ("PutParameter", marker) in store.calls and ("DeleteParameter", marker) in store.calls
    warning = next(m for m in caplog.messages if "was stale" in m)
    assert "build https://bitbucket.org/team/other/pipelines/results/7" in warning
    assert "until 2026-03-01T10:10:00Z" in warning
    assert store.value(NAME) is None


def test_a_takeover_in_progress_elsewhere_fails_fast_and_keeps_its_marker() -> None:
    store, stale = stale_store()
    marker = f"{NAME}/takeover-{stale.lock_id}"
    note = json.dumps({"by": "another", "at": "2026-03-01T11:59:50Z"})
    store.write(marker, note)
    with pytest.raises(LockHeld) as raised, deploy_lock(ssm(store), request(), now=at()):
        pytest.fail("the body must not run")
    assert "expired at 2026-03-01T10:10:00Z, and another deploy is taking it over" in str(raised.value)
    assert held_by(store) == stale
    assert store.value(marker) == note


def test_a_marker_left_by_a_taker_that_died_is_replaced() -> None:
    store, stale = stale_store()
    marker = f"{NAME}/takeover-{stale.lock_id}"
    started = T0 - datetime.timedelta(seconds=MARKER_TTL_SECONDS + 1)
    store.write(marker, json.dumps({"by": "dead", "at": started.strftime("%Y-%m-%dT%H:%M:%SZ")}))
    with deploy_lock(ssm(store), request(), now=at()) as holding:
        assert holding.took_over == stale
    assert store.value(marker) is None


def test_a_taker_that_finds_the_lock_already_taken_over_names_the_new_holder() -> None:
    store, _ = stale_store()
    winner = record_of(OTHER_BUILD, T0, holder="arn:winner")
    # between our first read and the re-read behind the marker, another taker finished
    store.before("PutParameter", lambda r: "takeover" in r["Name"], lambda fake, _: fake.write(NAME, winner.to_json()))
    with pytest.raises(LockHeld) as raised, deploy_lock(ssm(store), request(), now=at()):
        pytest.fail("the body must not run")
    assert "as arn:winner" in str(raised.value)
    assert held_by(store) == winner
    assert [name for name in store.versions if "takeover" in name] == []


def test_a_lock_created_between_the_reread_and_the_overwrite_is_given_back() -> None:
    store, _ = stale_store()
    fresh = record_of(OTHER_BUILD, T0, holder="arn:fresh")

    def stale_holder_releases_and_a_new_deploy_locks(fake: FakeStore, _: dict[str, Any]) -> None:
        fake.versions.pop(NAME)
        fake.write(NAME, fresh.to_json())

    store.before(
        "PutParameter", lambda r: r["Name"] == NAME and r["Overwrite"], stale_holder_releases_and_a_new_deploy_locks
    )
    with pytest.raises(LockHeld) as raised, deploy_lock(ssm(store), request(), now=at()):
        pytest.fail("the body must not run")
    assert "as arn:fresh" in str(raised.value)
    assert held_by(store) == fresh
    assert ("GetParameter", f"{NAME}:1") in store.calls
    assert [name for name in store.versions if "takeover" in name] == []


def test_a_stale_lock_deleted_just_before_the_overwrite_is_simply_ours() -> None:
    store, _ = stale_store()
    store.before(
        "PutParameter", lambda r: r["Name"] == NAME and r["Overwrite"], lambda fake, _: fake.versions.pop(NAME)
    )
    with deploy_lock(ssm(store), request(), now=at()) as holding:
        assert held_by(store).lock_id == holding.record.lock_id


# --- release -------------------------------------------------------------------------------------------


def test_a_lock_taken_over_meanwhile_is_left_in_place_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()
    taker = record_of(OTHER_BUILD, T0, holder="arn:taker")
    with deploy_lock(ssm(store), request(ttl=30), now=at()):
        store.write(NAME, taker.to_json())
    assert held_by(store) == taker
    assert ("DeleteParameter", NAME) not in store.calls
    assert any("was taken over by build https://bitbucket.org/team/other" in m for m in caplog.messages)


def test_a_lock_deleted_by_hand_meanwhile_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()
    with deploy_lock(ssm(store), request(), now=at()):
        store.versions.pop(NAME)
    assert any("was already gone" in m for m in caplog.messages)


def test_a_release_that_fails_warns_with_the_command_and_keeps_the_deploys_verdict(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore()

    def denied(fake: FakeStore, _: dict[str, Any]) -> None:
        raise error("AccessDeniedException", "DeleteParameter", 400)

    store.before("DeleteParameter", lambda r: r["Name"] == NAME, denied)
    with pytest.raises(RuntimeError, match="the deploy failed"), deploy_lock(ssm(store), request(), now=at()):
        raise RuntimeError("the deploy failed")
    warning = next(m for m in caplog.messages if "could not be released" in m)
    assert "Fix: allow ssm:DeleteParameter" in warning
    assert "It expires at 2026-03-01T12:10:00Z" in warning
    assert f"aws ssm delete-parameter --name {NAME} --region {REGION}" in warning


def test_a_release_cut_by_a_stop_is_only_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()

    def stopped(fake: FakeStore, _: dict[str, Any]) -> None:
        raise Interrupted("Received SIGTERM: the pipeline was stopped")

    store.before("GetParameter", lambda r: r["Name"] == NAME, stopped)
    with deploy_lock(ssm(store), request(), now=at()):
        pass
    assert any("could not be released: Received SIGTERM" in m for m in caplog.messages)


def test_the_release_uses_the_release_client() -> None:
    deploy_store, release_store = FakeStore(), FakeStore()
    with deploy_lock(ssm(deploy_store), request(), now=at(), release_ssm=ssm(release_store)):
        release_store.versions[NAME] = list(deploy_store.versions[NAME])
    assert release_store.value(NAME) is None
    assert ("DeleteParameter", NAME) not in deploy_store.calls


def test_a_lock_created_by_a_call_that_then_failed_is_not_left_behind() -> None:
    store = FakeStore()

    def lands_then_connection_lost(fake: FakeStore, request: dict[str, Any]) -> None:
        fake.write(request["Name"], request["Value"])
        raise EndpointConnectionError(endpoint_url="https://ssm.eu-west-1.amazonaws.com")

    store.before("PutParameter", lambda r: r["Name"] == NAME, lands_then_connection_lost)
    with pytest.raises(NothingSent) as raised, deploy_lock(ssm(store), request(), now=at()):
        pytest.fail("the body must not run")
    assert str(raised.value).startswith("LOCK: nothing was sent. Parameter Store could not be reached")
    assert store.value(NAME) is None


# --- refusals ------------------------------------------------------------------------------------------


def test_a_denied_create_names_the_action_the_parameter_arn_and_the_policy() -> None:
    client = boto3.client("ssm", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y")
    with Stubber(client) as stubber:
        stubber.add_client_error(
            "put_parameter", "AccessDeniedException", "not authorized to perform: ssm:PutParameter", 400
        )
        stubber.add_client_error("get_parameter", "AccessDeniedException", "not authorized", 400)  # the clean-up
        with pytest.raises(NothingSent) as raised, deploy_lock(client, request(), now=at()):
            pytest.fail("the body must not run")
    assert str(raised.value) == (
        "LOCK: nothing was sent. The deploy role may not use ssm:PutParameter on "
        "arn:aws:ssm:eu-west-1:123456789012:parameter/deploy-lock/web/prod "
        "(AccessDeniedException: not authorized to perform: ssm:PutParameter). "
        "Fix: allow ssm:PutParameter, ssm:GetParameter, ssm:DeleteParameter on "
        "arn:aws:ssm:eu-west-1:123456789012:parameter/deploy-lock/*."
    )
    assert not isinstance(raised.value, LockHeld)


def test_a_denied_read_of_a_held_lock_names_get_parameter() -> None:
    store = FakeStore()
    store.write(NAME, record_of(OTHER_BUILD, T0).to_json())

    def denied(fake: FakeStore, _: dict[str, Any]) -> None:
        raise error("AccessDeniedException", "GetParameter")

    store.before("GetParameter", lambda r: True, denied)
    with pytest.raises(NothingSent) as raised, deploy_lock(ssm(store), request(), now=at()):
        pytest.fail("the body must not run")
    assert "may not use ssm:GetParameter on arn:aws:ssm:eu-west-1:123456789012:parameter/deploy-lock/web/prod" in str(
        raised.value
    )


# --- names and values ----------------------------------------------------------------------------------


def test_lock_names_per_service_and_environment() -> None:
    assert lock_name("web", "prod") == "/deploy-lock/web/prod"
    assert lock_name("web", None) == "/deploy-lock/web/_"
    assert lock_name("web", "") == "/deploy-lock/web/_"
    with pytest.raises(ValueError, match="environment 'prod/eu'"):
        lock_name("web", "prod/eu")
    with pytest.raises(ValueError, match="service ''"):
        lock_name("", "prod")


def test_a_lock_value_stays_small_and_ascii_whatever_the_build() -> None:
    build = dataclasses.replace(BUILD, repo="tëam/" + "a" * 5000, commit="c" * 500, build_number="9" * 50)
    text = LockRecord.new(request(build, holder="arn:" + "h" * 5000), T0).to_json()
    assert text.isascii() and len(text) < 1500
    assert LockRecord.from_json(text).repo.startswith("t?am/")


@pytest.mark.parametrize(
    "text",
    [
        '{"v": 2}',
        "[]",
        '{"v": 1, "id": "x"}',
        '{"v":1,"id":"x","holder":"","repo":"","build":"","build_url":"",'
        '"commit":"","acquired_at":"2026-03-01T12:00:00","expires_at":"2026-03-01T12:00:00Z"}',
    ],
)
def test_values_that_are_not_locks_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        LockRecord.from_json(text)
