"""Traffic managers: what takes a batch out of service before its deploy and puts it back after.

A manager is planned first, with reads only (``Planner``: it finds what it manages, refuses what
cannot work, and may reshape the batches), then wraps each batch of the rollout (``around``), left
on every path, a failure or a stop included. A planner may also hand over a ``RolloutScope``: entered
once around the whole rollout (what must hold from the first batch to the last, as an Auto Scaling
group's processes), asked which instances left the fleet while a batch ran, and, once the planned
batches are done, which joined it (launched by their group during the rollout) and still need the
deploy. The managers are ELBv2 target groups (``target_groups/``) and Auto Scaling groups
(``auto_scaling/``); another is a package with its planner and one line in ``managers.py``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from pipe.aws.clients import Clients
from pipe.config.settings import DeploySettings
from pipe.execution import Execution
from pipe.model import Batch

BatchHook = Callable[[Execution, Batch], AbstractContextManager[None]]


class TrafficManager(Protocol):
    def around(self, run: Execution, batch: Batch) -> AbstractContextManager[None]:
        """Out of service before the batch's deploy, back in service after it, on every path."""
        ...

    def room(self, run: Execution, instance_ids: Sequence[str]) -> int | None:
        """How many of ``instance_ids`` may be out of service at once now (None: no bound of this
        manager's); how ROLLBACK_BATCH_SIZE's largest batches are sized."""
        ...


class RolloutScope(Protocol):
    def holding(self, run: Execution) -> AbstractContextManager[None]:
        """Held from before the first batch until after the last (the rollback included), released on
        every path."""
        ...

    def departed(self, run: Execution, instance_ids: Sequence[str]) -> dict[str, str]:
        """Which of ``instance_ids`` left the fleet on purpose (terminated by their group), and how: not
        failures of the deploy, unless the scope says too few are left (DeployFailed)."""
        ...

    def joined(self, run: Execution, covered: Sequence[str]) -> dict[str, str]:
        """The instances in service now that joined the fleet during the rollout and are not in ``covered``
        (the instances the rollout deployed or planned), and how; it first waits, up to its bound, for
        those still being launched. DeployFailed naming those still launching at the bound."""
        ...


@dataclass(frozen=True)
class Planned:
    """What a planner found: its manager (None when there is nothing to take out of service, as for
    TARGET_GROUPS 'auto' on instances in no group), the batches to deploy, the plan's lines, and what
    it holds around the whole rollout (``scope``)."""

    manager: TrafficManager | None
    batches: list[Batch]
    lines: list[str] = field(default_factory=list)
    scope: RolloutScope | None = None


# Reads only; raises NothingSent when the rollout cannot work. None: not configured for this deploy.
Planner = Callable[[DeploySettings, Clients, list[Batch]], Planned | None]


def around_each(managers: Sequence[TrafficManager]) -> BatchHook:
    """The hook around each batch: every manager's ``around``, entered in order and left in reverse."""

    @contextmanager
    def hook(run: Execution, batch: Batch) -> Iterator[None]:
        with ExitStack() as stack:
            for manager in managers:
                stack.enter_context(manager.around(run, batch))
            yield

    return hook


def room(managers: Sequence[TrafficManager], run: Execution, instance_ids: Sequence[str]) -> int | None:
    """The fewest instances any manager lets out of service at once now; None when none bounds it."""
    bounds = [bound for manager in managers if (bound := manager.room(run, instance_ids)) is not None]
    return min(bounds, default=None)


@contextmanager
def holding_all(scopes: Sequence[RolloutScope], run: Execution) -> Iterator[None]:
    """Every scope held around the whole rollout, entered in order and released in reverse."""
    with ExitStack() as stack:
        for scope in scopes:
            stack.enter_context(scope.holding(run))
        yield


def departed(scopes: Sequence[RolloutScope], run: Execution, instance_ids: Sequence[str]) -> dict[str, str]:
    """The instances among ``instance_ids`` that some scope says left the fleet, and how."""
    found: dict[str, str] = {}
    for scope in scopes:
        found |= scope.departed(run, instance_ids)
    return found


def joined(scopes: Sequence[RolloutScope], run: Execution, covered: Sequence[str]) -> dict[str, str]:
    """The instances that some scope says joined the fleet during the rollout and are not ``covered``."""
    found: dict[str, str] = {}
    for scope in scopes:
        found |= scope.joined(run, [*covered, *found])
    return found


@contextmanager
def no_hook(run: Execution, batch: Batch) -> Iterator[None]:
    """Around a batch that nothing takes out of service (the rollback's, or a deploy without a manager)."""
    yield
