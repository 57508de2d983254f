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


def format_seconds(seconds: float) -> str:
    """``75.2`` -> ``1 min 15 s``; ``3725`` -> ``1 h 2 min 5 s``."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    parts.append(f"{secs} s" if secs or not whole else "")
    return " ".join(part for part in parts if part)
