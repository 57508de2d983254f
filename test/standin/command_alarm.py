"""SendCommand's ``AlarmConfiguration``: a CloudWatch alarm that stops a command's rollout.

What AWS documents, and how the stand-in applies it:

* SendCommand API reference, ``AlarmConfiguration``: "The CloudWatch alarm you want to apply to
  your command". ``AlarmConfiguration`` API reference: ``Alarms`` is an array with a "fixed number
  of 1 item" (another count is refused: ValidationException); ``IgnorePollAlarmFailure`` (default
  false): "When this value is true, your automation or command continues to run in cases where we
  can't retrieve alarm status information from CloudWatch. In cases where we successfully retrieve
  an alarm status of OK or INSUFFICIENT_DATA, the automation or command continues to run,
  regardless of this value."
* User guide, "Running commands from the console": "Note that if your alarm activates, any pending
  command invocations do not run." Invocations already dispatched run to their end.
* ``Command`` API reference: ``AlarmConfiguration`` ("The details for the CloudWatch alarm applied
  to your command") and ``TriggeredAlarms`` ("The CloudWatch alarm that was invoked by the
  command"), a list of ``AlarmStateInformation`` whose ``State`` is ``ALARM`` or ``UNKNOWN``.

So Systems Manager polls the alarm while the command is active (here: before every dispatch, and
every ``POLL`` seconds): in ``ALARM`` (at SendCommand time too: then nothing runs), or when its
state cannot be read (no such alarm) unless ``IgnorePollAlarmFailure``, the command's
``TriggeredAlarms`` becomes ``[{"Name": <alarm>, "State": "ALARM" | "UNKNOWN"}]`` and every
invocation not yet dispatched ends at once. AWS does not document the status those invocations
get; the stand-in gives them ``Cancelled`` / ``Cancelled`` (what CancelCommand gives a pending
invocation), so the command ends ``Cancelled`` (``rollout.command_status``). An alarm that goes
back to OK does not undo that. SendCommand and ListCommands echo ``AlarmConfiguration`` (with
``IgnorePollAlarmFailure`` filled in) and ``TriggeredAlarms``.

Not modelled: the ``iam:CreateServiceLinkedRole`` permission the user guide says the caller needs
to attach an alarm.
"""

from __future__ import annotations

import threading
from typing import Any

from standin.moto_bridge import MotoCommand, ServiceError
from standin.rollout import Rollout

POLL = 0.05  # seconds between two reads of the alarm while the command is active


def check_configuration(configuration: Any) -> None:
    """ValidationException for an AlarmConfiguration the API refuses (not exactly one alarm)."""
    if configuration is None:
        return
    alarms = configuration.get("Alarms") if isinstance(configuration, dict) else None
    if not isinstance(alarms, list) or len(alarms) != 1 or not str(alarms[0].get("Name") or "").strip():
        raise ServiceError(
            "ValidationException",
            f"1 validation error detected: Value '{alarms}' at 'alarmConfiguration.alarms' failed to satisfy "
            "constraint: Member must have length less than or equal to 1 and greater than or equal to 1",
        )


class AlarmWatch:
    """The one alarm of a command's AlarmConfiguration, read from CloudWatch (moto)."""

    def __init__(self, command: MotoCommand, configuration: dict[str, Any]) -> None:
        self._command = command
        self.name = str(configuration["Alarms"][0]["Name"])
        self.ignore_poll_failure = bool(configuration.get("IgnorePollAlarmFailure", False))
        self.triggered: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def stops_command(self) -> bool:
        """Read the alarm now: True (and TriggeredAlarms set) when the command must stop."""
        state = self._command.alarm_state(self.name)
        if state == "ALARM":
            found = "ALARM"
        elif state is None and not self.ignore_poll_failure:
            found = "UNKNOWN"
        else:
            return False
        with self._lock:
            if not self.triggered:
                self.triggered = [{"Name": self.name, "State": found}]
                self._command.set_triggered_alarms(self.triggered)
        return True


def watch(rollout: Rollout, alarm: AlarmWatch) -> threading.Thread:
    """Poll ``alarm`` every ``POLL`` seconds while the rollout is active, stopping it when it fires."""

    def run() -> None:
        while rollout.active():
            if alarm.stops_command():
                rollout.halt()
            if rollout.wait_final(POLL):
                return

    thread = threading.Thread(target=run, name=f"alarm-{alarm.name}", daemon=True)
    thread.start()
    return thread
