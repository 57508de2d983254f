"""Real HTTP traffic (test/standin/load_generator.py): what it counts is what real targets, and
HAProxy in front of them, answered."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from standin.haproxy import HaproxyDataPlane
from standin.load_balancer import READY, Server
from standin.load_generator import CONNECTION, STATUS, TIMEOUT, LoadGenerator, Second, Summary
from standin.tests.test_haproxy import DEADLINE, GROUP, Targets, plane, targets, wait_for

__all__ = ["plane", "targets"]  # fixtures


def url(targets: Targets, name: str) -> str:
    app = targets.apps[name]
    return f"http://{app.address}:{app.port}"


@pytest.fixture
def app_url(targets: Targets) -> Iterator[str]:
    targets.add("a")
    yield url(targets, "a")


def run(generator: LoadGenerator) -> Summary:
    """Start ``generator``, wait until it stops by itself, and summarize."""
    with generator:
        assert generator.wait(DEADLINE), "the traffic did not stop by itself"
    return generator.summary()


def test_answers_are_counted_by_status_release_and_target(targets: Targets, app_url: str) -> None:
    summary = run(LoadGenerator(app_url, workers=2, max_requests=40, pause=0))

    assert summary.requests == summary.ok == 40
    assert summary.failed == summary.connection_errors == summary.timeouts == 0
    assert summary.statuses == {200: 40}
    assert summary.releases == {"v1": 40}
    assert summary.served_by == {targets.apps["a"].address: 40}
    assert len(targets.apps["a"].requests) == 40


def test_a_status_that_is_not_2xx_fails_the_request(targets: Targets, app_url: str) -> None:
    targets.apps["a"].status = 500

    generator = LoadGenerator(app_url, workers=1, max_requests=5)
    summary = run(generator)

    assert (summary.requests, summary.ok, summary.failed) == (5, 0, 5)
    assert summary.statuses == {500: 5}
    assert summary.releases == {"v1": 5}  # the app answered, with a failure
    assert [(f.kind, f.detail, f.served_by) for f in generator.failures] == [
        (STATUS, "500 Internal Server Error", targets.apps["a"].address)
    ] * 5


def test_a_refused_connection_is_a_connection_error(targets: Targets, app_url: str) -> None:
    targets.apps["a"].stop()

    generator = LoadGenerator(app_url, workers=2, max_requests=6)
    summary = run(generator)

    assert (summary.requests, summary.failed, summary.connection_errors) == (6, 6, 6)
    assert summary.statuses == {} and summary.releases == {}
    assert {f.kind for f in generator.failures} == {CONNECTION}
    assert all("ConnectionRefusedError" in f.detail for f in generator.failures)


def test_no_answer_in_time_is_a_timeout(targets: Targets, app_url: str) -> None:
    targets.apps["a"].hang = True

    generator = LoadGenerator(app_url, workers=2, max_requests=2, timeout=0.3)
    summary = run(generator)

    assert (summary.requests, summary.failed, summary.timeouts, summary.connection_errors) == (2, 2, 2, 0)
    assert [f.kind for f in generator.failures] == [TIMEOUT, TIMEOUT]


def test_through_haproxy_a_target_that_refuses_is_a_503_from_haproxy_not_a_connection_error(
    plane: HaproxyDataPlane, targets: Targets
) -> None:
    down, up = targets.add("down"), targets.add("up", release="v2")
    down.stop()
    plane.apply(GROUP, {n: Server(targets.apps[n].address, targets.port, READY) for n in ("down", "up")})

    generator = LoadGenerator(plane.url(GROUP), workers=2, max_requests=40)
    summary = run(generator)

    assert summary.requests == 40
    assert summary.statuses[503] == summary.failed > 0  # HAProxy answers for the target it could not reach
    assert summary.statuses[200] == summary.ok == summary.releases["v2"] == summary.served_by[up.address]
    assert summary.connection_errors == summary.timeouts == 0
    assert {(f.kind, f.detail, f.served_by) for f in generator.failures} == {(STATUS, "503 Service Unavailable", None)}


def test_some_workers_keep_their_connection_and_the_others_open_one_per_request(targets: Targets, app_url: str) -> None:
    app = targets.apps["a"]

    run(LoadGenerator(app_url, workers=1, keepalive=1.0, max_requests=10))
    kept = app.connections
    run(LoadGenerator(app_url, workers=1, keepalive=0.0, max_requests=10))
    fresh = app.connections - kept
    run(LoadGenerator(app_url, workers=4, keepalive=0.5, max_requests=40, pause=0))
    mixed = app.connections - kept - fresh

    assert (kept, fresh) == (1, 10)
    assert 2 < mixed < 40  # two keep-alive workers, two that connect for every request


def test_the_traffic_stops_by_itself_after_its_duration(app_url: str) -> None:
    generator = LoadGenerator(app_url, workers=2, duration=0.5, max_requests=10**9)

    summary = run(generator)

    assert not generator.running
    assert summary.duration >= 0.5
    assert 0 < summary.requests < 10**9


def test_the_timeline_counts_each_second_s_answers_by_release(targets: Targets, app_url: str) -> None:
    app = targets.apps["a"]
    generator = LoadGenerator(app_url, workers=2, duration=60, max_requests=10**9)

    with generator:
        wait_for(lambda: generator.summary().releases.get("v1", 0) >= 20, "answers from v1")
        app.release = "v2"
        wait_for(lambda: generator.summary().releases.get("v2", 0) >= 20, "answers from v2")
    summary = generator.summary()

    assert sum(b.requests for b in summary.timeline) == summary.requests
    assert sum(b.releases.get("v1", 0) for b in summary.timeline) == summary.releases["v1"]
    assert sum(b.releases.get("v2", 0) for b in summary.timeline) == summary.releases["v2"]
    assert [b.second for b in summary.timeline] == list(range(len(summary.timeline)))
    assert summary.shares()[0][1]["v1"] > 0  # the first answers came from v1, the last ones from v2
    assert summary.shares()[-1][1]["v2"] > 0


def test_shares_and_render_show_each_release_s_part_of_every_second() -> None:
    summary = Summary(
        requests=9,
        ok=8,
        failed=1,
        statuses={200: 8, 503: 1},
        connection_errors=0,
        timeouts=0,
        releases={"v1": 5, "v2": 3},
        served_by={},
        timeline=[Second(0, 4, {"v1": 4}, 0), Second(1, 0, {}, 0), Second(2, 5, {"v1": 1, "v2": 3}, 1)],
        duration=3.0,
    )

    assert summary.shares() == [(0, {"v1": 1.0}), (2, {"v1": 0.25, "v2": 0.75})]
    assert summary.render().splitlines() == [
        "   0s     4 requests  v1 100.0%  failed 0",
        "   1s     0 requests    failed 0",
        "   2s     5 requests  v1  25.0%  v2  75.0%  failed 1",
    ]


@pytest.mark.parametrize("bad", ["http://10.0.0.5:80/", "http://example.com/", "https://127.0.0.1/", "ftp://::1/"])
def test_traffic_goes_to_loopback_addresses_only(bad: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        LoadGenerator(bad)


@pytest.mark.parametrize("good", ["http://127.0.0.1:8080/health", "http://localhost/", "http://[::1]:81/"])
def test_loopback_urls_are_accepted(good: str) -> None:
    LoadGenerator(good)  # not started: nothing to stop
