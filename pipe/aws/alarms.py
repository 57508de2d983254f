"""ALARMS: the CloudWatch alarms that gate the rollout. None may be in ALARM when it starts; they are
read before each batch and all through the bake; SendCommand carries the first one, so SSM itself
stops a command when it fires (``AlarmConfiguration`` takes exactly one alarm)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipe.aws.errors import error_code, error_message, is_access_denied
from pipe.errors import NothingSent

log = logging.getLogger("ssm-deploy")
IN_ALARM = "ALARM"
ALARM_TYPES = ["MetricAlarm", "CompositeAlarm"]


@dataclass(frozen=True)
class AlarmState:
    name: str
    state: str  # OK, ALARM, INSUFFICIENT_DATA
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.name}: {self.state}" + (f" ({self.reason})" if self.reason and self.state == IN_ALARM else "")


class AlarmsUnreadable(Exception):
    """DescribeAlarms failed: the message says why and, for a denial, which permission is missing."""


def alarm_states(cloudwatch: Any, names: tuple[str, ...]) -> dict[str, AlarmState]:
    """Each named alarm's state (metric and composite alarms); a missing name is absent."""
    found: dict[str, AlarmState] = {}
    try:
        pages = cloudwatch.get_paginator("describe_alarms").paginate(AlarmNames=list(names), AlarmTypes=ALARM_TYPES)
        for page in pages:
            for kind in ("MetricAlarms", "CompositeAlarms"):
                for alarm in page.get(kind, []):
                    name = str(alarm.get("AlarmName", ""))
                    found[name] = AlarmState(name, str(alarm.get("StateValue", "")), str(alarm.get("StateReason", "")))
    except ClientError as error:
        if is_access_denied(error):
            raise AlarmsUnreadable(
                f"the deploy role may not call DescribeAlarms: allow cloudwatch:DescribeAlarms ({error_message(error)})"
            ) from None
        raise AlarmsUnreadable(f"DescribeAlarms refused: {error_code(error)}: {error_message(error)}") from None
    except BotoCoreError as error:
        raise AlarmsUnreadable(f"DescribeAlarms failed: {error}") from None
    return found


def firing(cloudwatch: Any, names: tuple[str, ...]) -> list[AlarmState]:
    """The alarms in ALARM now; raises AlarmsUnreadable when CloudWatch cannot tell (a gate that
    cannot be read is closed)."""
    states = alarm_states(cloudwatch, names)
    gone = [name for name in names if name not in states]
    if gone:
        raise AlarmsUnreadable(f"alarm {', '.join(repr(name) for name in gone)} no longer exists")
    return [states[name] for name in names if states[name].state == IN_ALARM]


def check_before_start(cloudwatch: Any, names: tuple[str, ...]) -> dict[str, AlarmState]:
    """Refuse to start when an alarm is missing, unreadable or in ALARM; return their states."""
    try:
        states = alarm_states(cloudwatch, names)
    except AlarmsUnreadable as error:
        raise NothingSent("ALARMS", str(error)) from None
    missing = [name for name in names if name not in states]
    if missing:
        raise NothingSent(
            "ALARMS",
            f"there is no CloudWatch alarm {', '.join(repr(m) for m in missing)} in this account and Region",
            "check the alarm names (they are case-sensitive) and AWS_DEFAULT_REGION",
        )
    on = [states[name] for name in names if states[name].state == IN_ALARM]
    if on:
        raise NothingSent(
            "ALARMS",
            f"{'; '.join(map(str, on))}: the deploy does not start while an alarm is in ALARM",
            "wait until it is OK again (or fix what it reports), then run the step again",
        )
    return states
