"""PARAMETERS_PATH: every parameter under a path becomes an environment variable on the instance.

The pipe lists the path before sending (GetParametersByPath) and turns each parameter into a
SECRETS entry, so the instance reads the values itself, exactly as for SECRETS. The variable name
is the last path segment, upper-cased, with anything but letters and digits turned into ``_``.
Whoever may write parameters under the path chooses those names, so a name that would change how
the shell, the loader or an interpreter on the instances behaves (``bash_env`` -> ``BASH_ENV``) is
refused before anything is sent: see pipe/config/env_names.py.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from botocore.exceptions import ClientError

from pipe.aws.errors import error_message, is_access_denied
from pipe.config.env_names import reserved_reason
from pipe.errors import NothingSent
from pipe.model import SecretRef
from pipe.plan.pinned import pinned, pins_of
from pipe.runtime.redaction import Redactor

log = logging.getLogger("ssm-deploy")


def env_name(parameter: str) -> str:
    """The variable a parameter becomes: its last segment, upper-cased, other characters as ``_``."""
    name = re.sub(r"[^A-Za-z0-9]", "_", parameter.rstrip("/").rsplit("/", 1)[-1]).upper()
    return f"_{name}" if name[:1].isdigit() else name


def resolve_path(ssm: Any, path: str, taken: set[str], redactor: Redactor, role: str) -> list[SecretRef]:
    """SecretRefs for the parameters directly under ``path``; refuses name collisions."""
    refs: list[SecretRef] = []
    listed: list[dict[str, Any]] = []
    try:
        pages = ssm.get_paginator("get_parameters_by_path").paginate(Path=path, WithDecryption=True)
        for page in pages:
            for parameter in page.get("Parameters", []):
                redactor.add(parameter.get("Value"), name=f"PARAMETERS_PATH parameter {parameter.get('Name')}")
                refs.append(SecretRef(env_name(parameter["Name"]), parameter["Name"]))
                listed.append(parameter)
    except ClientError as error:
        what = (
            "decrypt them (kms:Decrypt in the key policy)"
            if "kms" in error_message(error).lower()
            else (f"list them (ssm:GetParametersByPath on {path}*)")
        )
        reason = "not allowed to " + what if is_access_denied(error) else error_message(error)
        raise NothingSent("PARAMETERS_PATH", f"{role} is {reason} ({error_message(error)})") from None
    if not refs:
        raise NothingSent("PARAMETERS_PATH", f"No parameter under {path}", "check the path and region")
    reserved = _reserved_problems(refs)
    if reserved:
        raise NothingSent("PARAMETERS_PATH", "; ".join(reserved))
    clashes: dict[str, list[str]] = {}
    for ref in refs:
        clashes.setdefault(ref.env_name, []).append(ref.parameter)
    problems = [f"{name} from {', '.join(names)}" for name, names in clashes.items() if len(names) > 1]
    problems += [
        f"{ref.env_name} from {ref.parameter} is also set by SECRETS or VARIABLES"
        for ref in refs
        if ref.env_name in taken
    ]
    if problems:
        raise NothingSent("PARAMETERS_PATH", f"Names collide: {'; '.join(problems)}", "rename one of them")
    log.info(f"PARAMETERS_PATH {path}: {', '.join(f'{r.env_name} <- {r.parameter}' for r in refs)}")
    return pinned(refs, pins_of(listed))  # each read at the version listed now, on every instance


def _reserved_problems(refs: list[SecretRef]) -> list[str]:
    problems = []
    for ref in refs:
        why = reserved_reason(ref.env_name, from_parameter_name=True)
        if why is not None:
            problems.append(
                f"{ref.parameter} would be exported as {ref.env_name}, a reserved name ({why}): rename the "
                f"parameter, or read it with SECRETS under a name of your own (e.g. MY_{ref.env_name}={ref.parameter})"
            )
    return problems
