"""After the planned batches: the instances that joined the fleet while the rollout ran (an Auto Scaling
group launched them, ``traffic/auto_scaling/joined.py``) get the deploy too, in batches of their own as
large as the rollout's largest, through the same hook (drained, deployed, checked, registered). Each round
asks the scopes again, as more may have joined meanwhile; a fleet still growing after MAX_ROUNDS rounds
is named and the deploy does not declare success."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pipe.apply.run import Run
from pipe.errors import DeployFailed
from pipe.model import Batch
from pipe.report.instances import named
from pipe.traffic import joined

log = logging.getLogger("ssm-deploy")
MAX_ROUNDS = 5  # rounds of batches for instances that joined, after the planned ones


class Joiners:
    """The rounds of batches for the instances that joined the fleet, after the ``planned`` batches."""

    def __init__(self, planned: Sequence[Batch]) -> None:
        self.size = max((len(batch.instance_ids) for batch in planned), default=1) or 1
        self.rounds = 0

    def batches(self, run: Run, ran: Sequence[Batch]) -> list[Batch]:
        """The next round: the instances that joined the fleet since the rollout began and are in none of
        ``ran`` (every batch run so far), ``size`` at a time; none without a scope that tells. DeployFailed
        when a scope cannot tell, or when some joined again after MAX_ROUNDS rounds."""
        if not run.plan.scopes:
            return []
        found = joined(run.plan.scopes, run, [i for batch in ran for i in batch.instance_ids])
        if not found:
            return []
        self.rounds += 1
        if self.rounds > MAX_ROUNDS:
            raise DeployFailed(
                f"The fleet kept growing during the rollout: after {MAX_ROUNDS} rounds of batches for the instances "
                f"launched meanwhile, {named(list(found))} joined again and did not get this release. Deploy "
                "again once the group's size is steady."
            )
        for instance_id, how in found.items():
            log.info(f"{instance_id} joined the fleet, {how}: it gets the deploy before the deploy can succeed")
        run.outcome.joined.update(found)
        ids = list(found)
        chunks = [tuple(ids[start : start + self.size]) for start in range(0, len(ids), self.size)]
        count = len(ran) + len(chunks)
        return [Batch(len(ran) + n, count, chunk) for n, chunk in enumerate(chunks, 1)]
