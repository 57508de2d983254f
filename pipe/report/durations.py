"""Durations as SSM reports them (ISO 8601), made readable."""

from __future__ import annotations


def format_duration(elapsed: str) -> str:
    """``PT1M2.5S`` (ISO 8601, as SSM reports it) -> ``1m 2.5s``; empty when unknown."""
    if not elapsed.startswith("PT"):
        return "-"
    text, out, number = elapsed[2:], [], ""
    for char in text:
        if char.isdigit() or char == ".":
            number += char
        elif number:
            out.append(f"{float(number):g}{char.lower()}")
            number = ""
    return " ".join(out) or "-"
