"""Client traffic through a target group, to see whether a rolling deploy drops requests.

A thread sends one "request" every 20-50 ms (random) to a random target the load balancer has in
service at that moment (``LoadBalancerModel.in_service``: the healthy targets, or every registered
target that is not draining when none is healthy). A request fails when no target is in service,
or when it reaches an instance whose app does not answer at that moment (``APP_UP`` missing). A
request is one ``stat`` call and a lookup in the model: cheap enough to run for minutes.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from standin.load_balancer import LoadBalancerModel

NO_TARGET = "no target in service"
APP_DOWN = "the app did not answer"
INTERVAL = (0.02, 0.05)  # seconds between requests


@dataclass(frozen=True)
class Failure:
    at: float  # time.monotonic() of the request
    instance_id: str | None  # None: no target was in service
    reason: str


class TrafficSimulator:
    """A context manager: traffic runs from ``__enter__`` (or ``start``) to ``__exit__`` (``stop``)."""

    def __init__(
        self, model: LoadBalancerModel, group_arn: str, app_answers: Callable[[str], bool], seed: int | None = None
    ) -> None:
        self._model = model
        self._group_arn = group_arn
        self._app_answers = app_answers
        self._random = random.Random(seed)
        self.requests = 0
        self.failures: list[Failure] = []
        self.per_instance: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"traffic-{group_arn[-8:]}", daemon=True)

    def start(self) -> TrafficSimulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def __enter__(self) -> TrafficSimulator:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def send_one(self) -> None:
        """One request, now."""
        now = time.monotonic()
        targets = self._model.in_service(self._group_arn)
        self.requests += 1
        if not targets:
            self.failures.append(Failure(now, None, NO_TARGET))
            return
        instance_id = self._random.choice(targets)
        self.per_instance[instance_id] += 1
        if not self._app_answers(instance_id):
            self.failures.append(Failure(now, instance_id, APP_DOWN))

    def _run(self) -> None:
        while not self._stop.wait(self._random.uniform(*INTERVAL)):
            self.send_one()
