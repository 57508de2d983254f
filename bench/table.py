"""The benches' one way of printing a table: columns padded to their widest cell."""

from __future__ import annotations

from collections.abc import Sequence

HEADER = ("measure", "ssm-deploy", "baseline", "target")


def print_table(rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
