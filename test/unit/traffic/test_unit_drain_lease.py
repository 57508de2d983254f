"""The drain lease of a target group (``lease.py``) against the lock tests' in-memory Parameter Store: taken in
the groups' name order and released after the batch, waited for while another deploy holds it, and the
messages when the wait ends or Parameter Store refuses."""

from __future__ import annotations

import datetime
import logging
from typing import Any

import pytest

from pipe.errors import DeployFailed
from pipe.traffic.target_groups import lease
from pipe.traffic.target_groups.lease import DrainLeases, lease_name
from unit.apply.test_unit_lock import HOLDER, OTHER_BUILD, FakeStore, error, record_of, ssm
from unit.unit_support import BUILD

BATCH = "batch 1/2 (1 instance(s))"


def leases(store: FakeStore, lost: list[str] | None = None) -> DrainLeases:
    return DrainLeases(ssm(store), ssm(store), HOLDER, BUILD, (lost if lost is not None else []).append)


def another_deploy_holds(store: FakeStore, group: str) -> None:
    now = datetime.datetime.now(datetime.UTC)
    store.write(lease_name(group), record_of(OTHER_BUILD, now, holder="arn:other").to_json())


def test_the_leases_are_taken_in_name_order_held_for_the_batch_and_released_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore()
    caplog.set_level(logging.INFO, "ssm-deploy")
    with leases(store).held(["web-b", "web-a", "web-b"], BATCH, 30, lambda: None):
        assert store.value(lease_name("web-a")) and store.value(lease_name("web-b"))
    created = [name for operation, name in store.calls if operation == "PutParameter"]
    assert created == [lease_name("web-a"), lease_name("web-b")]
    assert lease_name("web-a") == "/deploy-lock/target-group/web-a/drain"
    assert store.versions == {}
    assert caplog.messages == []  # one lease a batch: debug lines only


def test_a_lease_another_deploy_holds_is_waited_for_then_taken(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FakeStore()
    another_deploy_holds(store, "web")
    slept: list[float] = []

    def the_other_batch_comes_back(seconds: float) -> None:
        slept.append(seconds)
        store.versions.pop(lease_name("web"))

    monkeypatch.setattr("pipe.traffic.target_groups.lease.time.sleep", the_other_batch_comes_back)
    caplog.set_level(logging.INFO, "ssm-deploy")
    with leases(store).held(["web"], BATCH, 300, lambda: None):
        assert store.value(lease_name("web")) is not None
    assert slept == [lease.LEASE_POLL_SECONDS]
    assert caplog.messages[0].startswith(f"{BATCH}: waiting for the drain lease of web: Another deploy holds the lock")
    assert "commit fedcba9" in caplog.messages[0]  # the build that holds it
    assert caplog.messages[1].startswith(f"{BATCH}: took the drain lease of web after")


def test_a_lease_still_held_after_healthy_timeout_fails_the_batch_naming_the_group_and_holder() -> None:
    store = FakeStore()
    another_deploy_holds(store, "web")
    with pytest.raises(DeployFailed) as failed, leases(store).held(["web"], BATCH, 0, lambda: None):
        pytest.fail("the batch must not start")
    message = str(failed.value)
    assert message.startswith(f"{BATCH} was not started: another deploy has a batch out of web (the drain lease")
    assert "waited HEALTHY_TIMEOUT 0 s" in message and "one at a time" in message
    assert store.value(lease_name("web")) is not None  # the other deploy's, left alone


def test_a_refused_lease_fails_the_batch_with_the_permission_not_nothing_was_sent(monkeypatch: Any) -> None:
    store = FakeStore()
    store.before(
        "PutParameter", lambda _: True, lambda *_: (_ for _ in ()).throw(error("AccessDeniedException", "PutParameter"))
    )
    with pytest.raises(DeployFailed) as failed, leases(store).held(["web"], BATCH, 30, lambda: None):
        pytest.fail("the batch must not start")
    message = str(failed.value)
    assert message.startswith(f"{BATCH} was not started: the drain lease of web could not be taken:")
    assert "nothing was sent" not in message and "ssm:PutParameter" in message
