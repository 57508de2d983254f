"""What one run of the pipe does, ACTION: the names, and what the read-only ``status`` reads.

The entry points themselves are registered in ``pipe/actions`` (one line each); validation knows only
the names, so config never imports a stage."""

from __future__ import annotations

DEPLOY = "deploy"  # the default: today's deploy
STATUS = "status"  # read-only: the ledger's releases, what each instance runs, and the drift between them
ACTION_NAMES: tuple[str, ...] = (DEPLOY, STATUS)
