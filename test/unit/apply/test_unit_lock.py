"""The deploy lock's branches against an in-memory Parameter Store: taken and released, held, garbled,
stale and taken over, the takeover races, releases that find the lock changed or fail, the messages
a denial gives, the heartbeat's renewals (driven one by one with an injected clock, and in its own
thread) and the dry run's look at the lock."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import Stubber
from support import undated_times, wait_until

from pipe.apply.lock import (
    MARKER_TTL_SECONDS,
    Heartbeat,
    LockHeld,
    LockHolding,
    LockRecord,
    LockRequest,
    check_lock,
    deploy_lock,
)
from pipe.config.lock import lock_name
from pipe.errors import NothingSent
from pipe.runtime.interruption import Interrupted
from unit.unit_support import BUILD, REGION

NAME = "/deploy-lock/web/prod"
HOLDER = "arn:aws:sts::123456789012:assumed-role/deploy/ssm-deploy-app-42"
OTHER_BUILD = dataclasses.replace(BUILD, repo="team/other", build_number="7", commit="fedcba9876543210")
T0 = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)


def at(seconds: float = 0) -> Callable[[], datetime.datetime]:
    return lambda: T0 + datetime.timedelta(seconds=seconds)


def request(build: Any = BUILD, holder: str = HOLDER, ttl: int = 600) -> LockRequest:
    return LockRequest(name=NAME, holder=holder, build=build, expiry_seconds=ttl)


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
        "renewed_at": "2026-03-01T12:00:00Z",
        "expires_at": "2026-03-01T12:10:00Z",
    }
    assert f"Lock {NAME} taken until 2026-03-01 12:10:00 UTC, renewed every 30 s while this deploy runs" in (
        caplog.messages
    )
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
    assert "since 2026-03-01 12:00:00 UTC; it expires at 2026-03-01 12:10:00 UTC unless that deploy renews it" in (
        message
    )
    assert "a killed build's lock expires by itself 10 min after its last renewal" in message
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
    assert "last renewed it at 2026-03-01 10:00:00 UTC, it expired at 2026-03-01 10:10:00 UTC" in warning
    assert store.value(NAME) is None


def test_a_takeover_in_progress_elsewhere_fails_fast_and_keeps_its_marker() -> None:
    store, stale = stale_store()
    marker = f"{NAME}/takeover-{stale.lock_id}"
    note = json.dumps({"by": "another", "at": "2026-03-01T11:59:50Z"})
    store.write(marker, note)
    with pytest.raises(LockHeld) as raised, deploy_lock(ssm(store), request(), now=at()):
        pytest.fail("the body must not run")
    assert "expired at 2026-03-01 10:10:00 UTC, and another deploy is taking it over" in str(raised.value)
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


class Stoppable:
    """The deploy's client over ``store``: once ``stopped``, every call ends before it is made (Interrupted), as
    ``stop_between_attempts`` ends one before SendCommand; a call under way when the stop comes completes."""

    def __init__(self, store: FakeStore) -> None:
        self.store, self.stopped, self.meta = store, False, store.meta

    def __getattr__(self, operation: str) -> Callable[..., dict[str, Any]]:
        call: Callable[..., dict[str, Any]] = getattr(self.store, operation)

        def attempt(**request: Any) -> dict[str, Any]:
            if self.stopped:
                raise Interrupted("Received SIGTERM: the pipeline was stopped")
            return call(**request)

        return attempt


@pytest.mark.parametrize(
    ("operation", "when"),
    [
        ("PutParameter", lambda r: r["Name"] == NAME and r["Overwrite"]),  # then the read of what it replaced
        ("GetParameter", lambda r: r["Name"] == f"{NAME}:1"),  # then the write back
    ],
    ids=["during the overwrite", "during the read of what it replaced"],
)
def test_a_stop_after_the_overwrite_of_a_lock_taken_meanwhile_gives_it_back_and_never_deletes_it(
    operation: str, when: Callable[[dict[str, Any]], bool]
) -> None:
    """The stale holder released and a new deploy locked between the re-read and the overwrite (as above), and
    SIGTERM comes during the takeover's overwrite or its read of the version before. Before the fix the next call
    went through the deploy's client and ended with the stop, and the clean-up of the failed acquisition deleted
    the lock, which held this deploy's id: the new deploy's lock was gone. Review finding M1 (issue #17)."""
    store, _ = stale_store()
    fresh = record_of(OTHER_BUILD, T0, holder="arn:fresh")
    deploys = Stoppable(store)

    def stale_holder_releases_and_a_new_deploy_locks(fake: FakeStore, _: dict[str, Any]) -> None:
        fake.versions.pop(NAME)
        fake.write(NAME, fresh.to_json())

    def stop(fake: FakeStore, request: dict[str, Any]) -> None:
        deploys.stopped = True

    store.before(
        "PutParameter", lambda r: r["Name"] == NAME and r["Overwrite"], stale_holder_releases_and_a_new_deploy_locks
    )
    store.before(operation, when, stop)
    with (
        pytest.raises(LockHeld) as raised,
        deploy_lock(cast(Any, deploys), request(), now=at(), release_ssm=ssm(store)),
    ):
        pytest.fail("the body must not run")
    assert "as arn:fresh" in str(raised.value)
    assert held_by(store) == fresh
    assert ("DeleteParameter", NAME) not in store.calls
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
    assert "It expires at 2026-03-01 12:10:00 UTC" in warning
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


# --- the heartbeat -------------------------------------------------------------------------------------


def holding_in(store: FakeStore, expiry: int = 180) -> LockHolding:
    """A lock this deploy took at T0 (expiring ``expiry`` s later), as the store holds it."""
    record = LockRecord.new(request(ttl=expiry), T0)
    store.write(NAME, record.to_json())
    return LockHolding(NAME, record)


def beat(store: FakeStore, holding: LockHolding, seconds: float, lost: list[str] | None = None) -> Heartbeat:
    sink = lost if lost is not None else []
    return Heartbeat(ssm(store), holding, 180, now=at(seconds), on_lost=sink.append)


def test_a_renewal_moves_the_expiry_forward_and_proves_the_write_replaced_this_deploys_value() -> None:
    store = FakeStore()
    holding = holding_in(store)
    heartbeat = beat(store, holding, 150)

    assert heartbeat.renew() is True

    renewed = held_by(store)
    assert renewed.lock_id == holding.record.lock_id and renewed.acquired_at == T0
    assert renewed.renewed_at == T0 + datetime.timedelta(seconds=150)
    assert renewed.expires_at == T0 + datetime.timedelta(seconds=150 + 180)
    assert heartbeat.holding.record == renewed
    assert store.calls == [("GetParameter", NAME), ("PutParameter", NAME), ("GetParameter", f"{NAME}:1")]
    assert json.loads(store.value(NAME) or "")["renewed_at"] == "2026-03-01T12:02:30Z"


def test_a_lock_taken_over_is_lost_reported_and_never_written_over(caplog: pytest.LogCaptureFixture) -> None:
    store, lost = FakeStore(), list[str]()
    holding = holding_in(store)
    taker = record_of(OTHER_BUILD, T0 + datetime.timedelta(minutes=4), holder="arn:taker")
    store.write(NAME, taker.to_json())
    heartbeat = beat(store, holding, 240, lost)

    assert heartbeat.renew() is False

    assert held_by(store) == taker
    assert ("PutParameter", NAME) not in store.calls
    assert heartbeat.lost is not None and "taken over by build https://bitbucket.org/team/other" in heartbeat.lost
    assert lost == [f"The deploy lock {NAME} was lost ({heartbeat.lost}), so the deploy was stopped"]
    error_line = next(record for record in caplog.records if record.levelno == logging.ERROR)
    assert error_line.getMessage().startswith(f"Lock {NAME} lost: it was taken over by build")
    assert "at 2026-03-01 12:04:00 UTC" in error_line.getMessage()
    assert "this deploy stops at its next safe point" in error_line.getMessage()


def test_a_lock_deleted_by_hand_is_lost_and_not_created_again() -> None:
    store, lost = FakeStore(), list[str]()
    holding = holding_in(store)
    store.versions.pop(NAME)

    assert beat(store, holding, 30, lost).renew() is False

    assert store.value(NAME) is None
    assert len(lost) == 1 and "it was deleted" in lost[0]


def test_a_lock_taken_between_the_renewals_read_and_write_is_given_back_and_lost() -> None:
    store, lost = FakeStore(), list[str]()
    holding = holding_in(store)
    taker = record_of(OTHER_BUILD, T0, holder="arn:taker")
    store.before("PutParameter", lambda r: r["Overwrite"], lambda fake, _: fake.write(NAME, taker.to_json()))

    assert beat(store, holding, 30, lost).renew() is False

    assert held_by(store) == taker  # written back over the renewal
    assert len(lost) == 1 and "taken over by build https://bitbucket.org/team/other" in lost[0]


def test_a_lock_deleted_between_the_renewals_read_and_write_is_not_left_created() -> None:
    store, lost = FakeStore(), list[str]()
    holding = holding_in(store)
    store.before("PutParameter", lambda r: r["Overwrite"], lambda fake, _: fake.versions.pop(NAME))

    assert beat(store, holding, 30, lost).renew() is False

    assert store.value(NAME) is None
    assert len(lost) == 1 and "it was deleted" in lost[0]


def test_a_renewal_that_fails_warns_with_the_dated_expiry_and_the_heartbeat_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, lost = FakeStore(), list[str]()
    holding = holding_in(store)

    def unreachable(fake: FakeStore, _: dict[str, Any]) -> None:
        raise EndpointConnectionError(endpoint_url="https://ssm.eu-west-1.amazonaws.com")

    store.before("GetParameter", lambda r: True, unreachable)
    heartbeat = beat(store, holding, 30, lost)

    assert heartbeat.renew() is True
    assert lost == [] and heartbeat.lost is None
    warning = next(m for m in caplog.messages if "could not be renewed" in m)
    assert "It expires at 2026-03-01 12:03:00 UTC unless a later renewal (every 30 s) succeeds" in warning

    assert heartbeat.renew() is True  # the next beat renews it
    assert held_by(store).expires_at == T0 + datetime.timedelta(seconds=30 + 180)


def test_the_heartbeat_renews_in_its_own_thread_until_stopped() -> None:
    store = FakeStore()
    holding = holding_in(store)
    seconds = itertools.count(1)
    heartbeat = Heartbeat(
        ssm(store), holding, 180, now=lambda: T0 + datetime.timedelta(seconds=next(seconds)), every=0.001
    )
    heartbeat.start()
    wait_until(lambda: held_by(store).renewed_at >= T0 + datetime.timedelta(seconds=3), "three renewals", 30)

    last = heartbeat.stop()

    assert not heartbeat.running
    assert held_by(store) == last.record
    writes = len(store.versions[NAME])
    assert heartbeat.stop() == last  # stopping again is harmless
    assert len(store.versions[NAME]) == writes


def test_deploy_lock_renews_while_held_and_releases_the_renewed_lock(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()
    caplog.set_level(logging.INFO, "ssm-deploy")
    seconds = itertools.count(0, 10)
    clock = lambda: T0 + datetime.timedelta(seconds=next(seconds))  # noqa: E731
    with deploy_lock(ssm(store), request(ttl=180), now=clock, renew_every=0.001) as holding:
        wait_until(lambda: held_by(store).renewed_at > holding.record.renewed_at, "a renewal", 30)
    assert store.value(NAME) is None
    assert f"Lock {NAME} released" in caplog.messages


def test_a_lost_lock_stops_the_deploy_through_on_lost_and_is_not_released() -> None:
    store, lost = FakeStore(), list[str]()
    taker = record_of(OTHER_BUILD, T0, holder="arn:taker")
    with deploy_lock(ssm(store), request(), now=at(), on_lost=lost.append, renew_every=0.001):
        store.write(NAME, taker.to_json())
        wait_until(lambda: bool(lost), "the heartbeat to find the lock lost", 30)
    assert held_by(store) == taker
    assert ("DeleteParameter", NAME) not in store.calls


def test_a_lock_of_a_pipe_version_without_the_heartbeat_is_read_as_renewed_when_taken() -> None:
    document = json.loads(record_of(OTHER_BUILD, T0).to_json())
    del document["renewed_at"]
    record = LockRecord.from_json(json.dumps(document))
    assert record.renewed_at == record.acquired_at == T0


# --- the dry run ---------------------------------------------------------------------------------------


def test_a_dry_run_reads_a_free_lock_and_writes_nothing() -> None:
    store = FakeStore()
    line = check_lock(ssm(store), request(), now=at())
    assert line == f"  lock:      {NAME} is free: the deploy takes it before reading the fleet"
    assert store.calls == [("GetParameter", NAME)]


def test_a_dry_run_is_refused_by_a_live_lock_as_a_deploy_is() -> None:
    store = FakeStore()
    store.write(NAME, record_of(OTHER_BUILD, T0).to_json())
    with pytest.raises(LockHeld) as raised:
        check_lock(ssm(store), request(), now=at(60))
    assert "Another deploy holds the lock" in str(raised.value)
    assert store.calls == [("GetParameter", NAME)]


def test_a_dry_run_names_a_stale_lock_it_would_take_over_and_leaves_it() -> None:
    store, stale = stale_store()
    line = check_lock(ssm(store), request(), now=at())
    assert "was left by build https://bitbucket.org/team/other/pipelines/results/7" in line
    assert "expired at 2026-03-01 10:10:00 UTC: the deploy would take it over" in line
    assert held_by(store) == stale and store.calls == [("GetParameter", NAME)]


# --- every time in a message has its date --------------------------------------------------------------


def test_undated_times_finds_a_time_without_its_date() -> None:
    assert undated_times("taken (until 13:56:40 UTC)") == ["taken (until 13:56:40"]
    assert undated_times("until 2026-12-06 13:56:40 UTC, since 2026-12-06T13:56:40Z") == []


def test_every_time_in_the_locks_messages_carries_its_date(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "ssm-deploy")
    messages: list[str] = []
    store = FakeStore()
    with deploy_lock(ssm(store), request(), now=at()) as holding:  # taken
        with pytest.raises(LockHeld) as held, deploy_lock(ssm(store), request(OTHER_BUILD), now=at(5)):
            pass
        messages.append(str(held.value))
        beat(store, holding, 30).renew()

        def throttled(fake: FakeStore, _: dict[str, Any]) -> None:
            raise error("ThrottlingException", "GetParameter")

        store.before("GetParameter", lambda r: True, throttled)
        beat(store, holding, 60).renew()  # could not be renewed
    stale, _ = stale_store()
    with deploy_lock(ssm(stale), request(), now=at()):  # taken over
        pass
    messages.append(check_lock(ssm(stale_store()[0]), request(), now=at()))
    messages += caplog.messages
    assert any("could not be renewed" in m for m in messages) and any("was stale" in m for m in messages)
    assert [m for m in messages if undated_times(m)] == []
