"""The deploy lock's name in Parameter Store (one per service and environment) and its timing (pure, no AWS)."""

from __future__ import annotations

from pipe.config.release import ARN_ALLOWANCE, SEGMENT
from pipe.limits import PARAMETER_NAME_MAX

# Not /ssm-deploy/...: Parameter Store refuses a name prefixed with "aws" or "ssm", case-insensitive
# (PutParameter API Reference, Name: "Naming Constraints").
LOCK_ROOT = "/deploy-lock"
NO_ENVIRONMENT = "_"  # the environment segment of a deploy without a deployment environment

# A running deploy renews its lock every LOCK_RENEW_SECONDS, each time to expire LOCK_EXPIRY_SECONDS
# later: the lock of a build that was killed (no release) can be taken over at most that long after
# its last renewal, and five renewals in a row may fail before a live deploy's lock expires.
LOCK_EXPIRY_SECONDS = 180
LOCK_RENEW_SECONDS = 30


def lock_name_problem(service: str, environment: str | None) -> str | None:
    """What keeps (service, environment) from naming a lock parameter, or None."""
    for what, value in (("service", service), ("environment", environment or NO_ENVIRONMENT)):
        if not SEGMENT.fullmatch(value):
            return f"the lock's {what} {value!r} must be 1-128 letters, digits or _.- (a Parameter Store path segment)"
    name = lock_path(service, environment)
    if len(name) + ARN_ALLOWANCE > PARAMETER_NAME_MAX:
        return f"the lock name {name} is too long for Parameter Store"
    return None


def lock_path(service: str, environment: str | None) -> str:
    """``/deploy-lock/<service>/<environment>``; ``_`` stands for no environment."""
    return f"{LOCK_ROOT}/{service}/{environment or NO_ENVIRONMENT}"


def lock_name(service: str, environment: str | None) -> str:
    """The lock parameter's name; ValueError for a name Parameter Store would refuse."""
    problem = lock_name_problem(service, environment)
    if problem:
        raise ValueError(problem)
    return lock_path(service, environment)
