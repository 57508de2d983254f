"""The hook around each batch of a rollout: where taking a batch out of a load balancer and putting it
back plugs in. It is entered before the batch's deploy and left on every path, a failure or a stop
included."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from pipe.execution import Execution
from pipe.model import Batch

BatchHook = Callable[[Execution, Batch], AbstractContextManager[None]]


@contextmanager
def no_hook(run: Execution, batch: Batch) -> Iterator[None]:
    yield
