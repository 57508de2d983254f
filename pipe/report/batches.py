"""The per-batch table printed at the end of a rollout the pipe drives."""

from __future__ import annotations

from collections.abc import Sequence

from pipe.model import BatchRecord

# the timings' columns, in BatchRecord.timings() order; out of service: deregistered until healthy again
COLUMNS = ("Batch", "Instances", "Drain", "Deploy", "Healthy", "Out of service", "Bake", "Outcome")


def batch_table(records: Sequence[BatchRecord]) -> list[str]:
    """``Batch  Instances  Drain  Deploy ...`` lines, one row per batch; [] without batches."""
    if not records:
        return []
    count = len(records)
    rows = [
        (
            f"{r.number}/{count}",
            str(len(r.instance_ids)),
            *(_seconds(value) for value in r.timings().values()),
            r.outcome,
        )
        for r in records
    ]
    widths = [max(len(COLUMNS[i]), *(len(row[i]) for row in rows)) for i in range(len(COLUMNS))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    return ["Batches:", line(COLUMNS), *(line(row) for row in rows)]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"
