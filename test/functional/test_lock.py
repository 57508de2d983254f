"""The deploy lock against the stand-in's Parameter Store, in process: deploys in turn, deploys at the
same moment (exactly one wins), a stale lock taken over by one of several takers, a lock taken
between a taker's check and its write given back (through a real version selector), the release
on an exception and on a stop, and the heartbeat's renewals (real versions) and a lost lock."""

from __future__ import annotations

import dataclasses
import datetime
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from standin import StandIn
from support import wait_until

from pipe.apply.lock import Heartbeat, LockHeld, LockHolding, LockRecord, LockRequest, deploy_lock
from pipe.config.build_context import BuildContext
from pipe.config.lock import lock_name
from pipe.runtime.interruption import Interrupted, StopRequests, stop_between_attempts

BUILD = BuildContext(
    repo="acme/web-api",
    build_number="42",
    commit="0123456789abcdef0123456789abcdef01234567",
    branch="main",
    triggerer="",
    deployment_environment="production",
)
HOLDER = "arn:aws:sts::123456789012:assumed-role/deploy/ssm-deploy-web-api-42"


def fresh_name() -> str:
    return lock_name(f"svc-{uuid.uuid4().hex[:10]}", "production")


def request_for(name: str, build_number: str = "42") -> LockRequest:
    return LockRequest(name, HOLDER, dataclasses.replace(BUILD, build_number=build_number))


def value_of(ssm: Any, name: str) -> str | None:
    try:
        return str(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    except ssm.exceptions.ParameterNotFound:
        return None


def names_under(ssm: Any, path: str) -> list[str]:
    pages = ssm.get_paginator("get_parameters_by_path").paginate(Path=path, Recursive=True)
    return [parameter["Name"] for page in pages for parameter in page["Parameters"]]


def all_at_once(count: int, attempt: Callable[[int], object]) -> list[object]:
    """Run ``attempt(i)`` in ``count`` threads released together; each result or exception."""
    start = threading.Barrier(count)
    results: list[object] = [None] * count

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = attempt(index)
        except Exception as error:  # the test inspects what each thread ended with
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_deploys_in_turn_the_second_waits_for_the_first(standin: StandIn) -> None:
    ssm, name = standin.client("ssm"), fresh_name()
    with deploy_lock(ssm, request_for(name, "41")) as first:
        with pytest.raises(LockHeld) as raised, deploy_lock(ssm, request_for(name, "42")):
            pytest.fail("the second deploy must not run while the first holds the lock")
        assert "https://bitbucket.org/acme/web-api/pipelines/results/41" in str(raised.value)
        assert f"aws ssm delete-parameter --name {name} --region {standin.region}" in str(raised.value)
        assert LockRecord.from_json(value_of(ssm, name) or "") == first.record
    assert value_of(ssm, name) is None
    with deploy_lock(ssm, request_for(name, "42")) as second:
        assert LockRecord.from_json(value_of(ssm, name) or "").build_number == "42"
        assert second.record.lock_id != first.record.lock_id
    assert value_of(ssm, name) is None


def test_of_deploys_locking_at_once_exactly_one_wins(standin: StandIn) -> None:
    name, count = fresh_name(), 6
    everyone_tried = threading.Barrier(count)

    def attempt(index: int) -> LockHolding:
        ssm = standin.client("ssm")
        try:
            with deploy_lock(ssm, request_for(name, str(100 + index))) as holding:
                everyone_tried.wait(30)  # hold the lock until every other deploy has tried
                return holding
        except LockHeld:
            everyone_tried.wait(30)
            raise

    results = all_at_once(count, attempt)
    winners = [result for result in results if isinstance(result, LockHolding)]
    assert len(winners) == 1, results
    assert all(isinstance(result, LockHeld) for result in results if result is not winners[0]), results
    assert value_of(standin.client("ssm"), name) is None


def test_a_stale_lock_is_taken_over_by_exactly_one_of_several_takers(standin: StandIn) -> None:
    ssm, name, count = standin.client("ssm"), fresh_name(), 4
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=3)
    stale = LockRecord.new(request_for(name, "7"), long_ago)
    ssm.put_parameter(Name=name, Value=stale.to_json(), Type="String")
    everyone_tried = threading.Barrier(count)

    def attempt(index: int) -> LockHolding:
        client = standin.client("ssm")
        try:
            with deploy_lock(client, request_for(name, str(200 + index))) as holding:
                everyone_tried.wait(30)  # hold the lock until every other taker has tried
                assert LockRecord.from_json(value_of(client, name) or "").lock_id == holding.record.lock_id
                return holding
        except LockHeld:
            everyone_tried.wait(30)
            raise

    results = all_at_once(count, attempt)
    winners = [result for result in results if isinstance(result, LockHolding)]
    assert len(winners) == 1, results
    assert winners[0].took_over == stale
    assert all(isinstance(result, LockHeld) for result in results if result is not winners[0]), results
    assert names_under(ssm, name) == []  # no takeover marker left behind
    assert value_of(ssm, name) is None


def test_a_lock_taken_between_the_takers_check_and_its_write_is_given_back(standin: StandIn) -> None:
    ssm, other, name = standin.client("ssm", own=True), standin.client("ssm"), fresh_name()
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=3)
    ssm.put_parameter(Name=name, Value=LockRecord.new(request_for(name, "7"), long_ago).to_json(), Type="String")
    fresh = LockRecord.new(request_for(name, "8"), datetime.datetime.now(datetime.UTC))
    played: list[bool] = []

    def stale_holder_releases_and_another_deploy_locks(params: dict[str, Any], **_: Any) -> None:
        if params.get("Name") == name and params.get("Overwrite") and not played:
            played.append(True)
            other.delete_parameter(Name=name)
            other.put_parameter(Name=name, Value=fresh.to_json(), Type="String")

    ssm.meta.events.register("before-parameter-build.ssm.PutParameter", stale_holder_releases_and_another_deploy_locks)
    with pytest.raises(LockHeld) as raised, deploy_lock(ssm, request_for(name, "9")):
        pytest.fail("the taker must not run over the new holder")
    assert played
    assert "results/8" in str(raised.value)
    assert value_of(other, name) == fresh.to_json()
    assert names_under(other, name) == []


def test_the_lock_is_released_when_the_deploy_raises(standin: StandIn) -> None:
    ssm, name = standin.client("ssm"), fresh_name()
    with pytest.raises(RuntimeError, match="boom"), deploy_lock(ssm, request_for(name)):
        assert value_of(ssm, name) is not None
        raise RuntimeError("boom")
    assert value_of(ssm, name) is None


def test_a_stop_does_not_keep_the_lock_when_the_release_has_its_own_client(
    standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    stops = StopRequests()
    deploy_ssm = standin.client("ssm", own=True)
    stop_between_attempts(deploy_ssm, stops)  # as pipe/deploy.py prepares the deploy's clients
    name = fresh_name()
    with pytest.raises(Interrupted), deploy_lock(deploy_ssm, request_for(name), release_ssm=standin.client("ssm")):
        stops.signal_name = "SIGTERM"
        stops.raise_if_requested()
    assert value_of(standin.client("ssm"), name) is None

    # on the deploy's own client the release is cut by the same stop: a warning, and the lock stays
    stops.signal_name = None
    other = fresh_name()
    with pytest.raises(Interrupted), deploy_lock(deploy_ssm, request_for(other)):
        stops.signal_name = "SIGTERM"
        stops.raise_if_requested()
    assert value_of(standin.client("ssm"), other) is not None
    assert any(f"Lock {other} could not be released" in message for message in caplog.messages)


def test_the_heartbeat_renews_the_lock_version_by_version_while_it_is_held(standin: StandIn) -> None:
    ssm, name = standin.client("ssm"), fresh_name()
    with deploy_lock(ssm, request_for(name), release_ssm=standin.client("ssm"), renew_every=0.05) as holding:
        wait_until(lambda: ssm.get_parameter(Name=name)["Parameter"]["Version"] >= 3, "two renewals", 60)
        renewed = LockRecord.from_json(value_of(ssm, name) or "")
        assert renewed.lock_id == holding.record.lock_id
        assert renewed.expires_at >= holding.record.expires_at
        history = ssm.get_parameter_history(Name=name)["Parameters"]
        assert {LockRecord.from_json(entry["Value"]).lock_id for entry in history} == {holding.record.lock_id}
    assert value_of(ssm, name) is None


def test_a_lock_overwritten_while_held_is_lost_and_left_to_its_new_holder(standin: StandIn) -> None:
    ssm, name = standin.client("ssm"), fresh_name()
    lost: list[str] = []
    with deploy_lock(ssm, request_for(name, "41"), on_lost=lost.append, renew_every=0.05) as holding:
        other = LockRecord.new(request_for(name, "43"), datetime.datetime.now(datetime.UTC))
        ssm.put_parameter(Name=name, Value=other.to_json(), Type="String", Overwrite=True)
        wait_until(lambda: bool(lost), "the heartbeat to find the lock lost", 60)
    assert "taken over by build https://bitbucket.org/acme/web-api/pipelines/results/43" in lost[0]
    assert LockRecord.from_json(value_of(ssm, name) or "") == other
    assert other.lock_id != holding.record.lock_id
    ssm.delete_parameter(Name=name)


def test_a_heartbeat_renewal_proves_its_write_through_the_real_version_selector(standin: StandIn) -> None:
    ssm, other, name = standin.client("ssm", own=True), standin.client("ssm"), fresh_name()
    mine = LockRecord.new(request_for(name, "41"), datetime.datetime.now(datetime.UTC))
    ssm.put_parameter(Name=name, Value=mine.to_json(), Type="String")
    taker = LockRecord.new(request_for(name, "44"), datetime.datetime.now(datetime.UTC))

    def taken_over_between_the_read_and_the_write(params: dict[str, Any], **_: Any) -> None:
        if params.get("Name") == name and params.get("Overwrite") and params["Value"] != taker.to_json():
            other.put_parameter(Name=name, Value=taker.to_json(), Type="String", Overwrite=True)

    ssm.meta.events.register("before-parameter-build.ssm.PutParameter", taken_over_between_the_read_and_the_write)
    lost: list[str] = []
    assert Heartbeat(ssm, LockHolding(name, mine), 180, on_lost=lost.append).renew() is False
    assert "results/44" in lost[0]
    assert value_of(other, name) == taker.to_json()  # given back over the renewal
    other.delete_parameter(Name=name)
