"""Secrets pinned to the version the pipe read before sending.

The instances read SECRETS and PARAMETERS_PATH themselves, when their command runs: in a rolling deploy
that is once per batch, minutes apart. A parameter rotated between two batches would leave the fleet
split between the old and the new value although the deploy ships one configuration. So each reference
the pipe read is sent as ``name:version`` (a label, which can move, becomes the version it named then):
every instance of the deploy, and every instance the group launches during it, reads the same value."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pipe.model import SecretRef


def pins_of(parameters: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """{reference: the same parameter at the version read} from GetParameters(ByPath) answers.

    A name or ARN asked without a selector is answered with the parameter's newest version, which no
    answer for the same parameter exceeds: it is pinned to the highest version among them, whichever
    answer is whose. A label is pinned only by an answer that names it as its ``Selector``; a version
    needs no pin."""
    newest: dict[str, int] = {}
    pins: dict[str, str] = {}
    for parameter in parameters:
        version = parameter.get("Version")
        if not isinstance(version, int):
            continue
        selector = str(parameter.get("Selector") or "").lstrip(":")
        for base in {str(parameter.get(key) or "") for key in ("Name", "ARN")} - {""}:
            newest[base] = max(version, newest.get(base, version))
            if selector and not selector.isdigit():
                pins[f"{base}:{selector}"] = f"{base}:{version}"
    return {base: f"{base}:{version}" for base, version in newest.items()} | pins


def pinned(secrets: Sequence[SecretRef], pins: Mapping[str, str]) -> list[SecretRef]:
    """``secrets``, each read at the version in ``pins`` (unchanged where the pipe read no version)."""
    return [SecretRef(ref.env_name, pins.get(ref.parameter, ref.parameter)) for ref in secrets]
