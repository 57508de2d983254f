"""SSM State Manager associations in the stand-in (moto 5.2.5 has none): CreateAssociation,
UpdateAssociation, DescribeAssociation and ListAssociations, and the runs AWS documents for them.

- "For dynamic targets, such as an AWS resource group or an AWS autoscaling group, State Manager applies
  the configuration when new managed nodes are added to the group" (CreateAssociation): each instance that
  comes online (``instance_online``: an Auto Scaling group launched it) and matches the Targets runs the
  association's document with its Parameters.
- "By default, when you create a new association, the system runs it immediately after it is created"
  and "when you update an association, the system runs it immediately after it is updated"
  (ApplyOnlyAtCronInterval): both run it on every matching target, unless ApplyOnlyAtCronInterval.
- UpdateAssociation makes a new AssociationVersion; "the system removes all optional parameters from the
  request and overwrites the association with null values for those parameters" (UpdateAssociation), so
  what is not sent is cleared here too.
- A run is a Run Command execution of the document on the instance (as the stand-in's Run Command runs
  it: ``runs`` lists them, with the association version and the command id). Targets: ``tag:<key>`` and
  ``InstanceIds``. Schedules are stored, never run."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Send = Callable[[dict[str, Any]], str]  # a SendCommand request -> its command id
TagsOf = Callable[[str], dict[str, str]]  # an instance's EC2 tags

OPTIONAL = (
    "Parameters",
    "DocumentVersion",
    "ScheduleExpression",
    "OutputLocation",
    "AssociationName",
    "MaxErrors",
    "MaxConcurrency",
    "ComplianceSeverity",
    "ApplyOnlyAtCronInterval",
)


class AssociationError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Association:
    association_id: str
    name: str  # the document
    targets: list[dict[str, Any]]
    version: int = 1
    fields: dict[str, Any] = field(default_factory=dict)  # the optional parameters as last sent

    def description(self) -> dict[str, Any]:
        return {
            "AssociationId": self.association_id,
            "Name": self.name,
            "Targets": self.targets,
            "AssociationVersion": str(self.version),
            "Overview": {"Status": "Success"},
            **{k: v for k, v in self.fields.items() if v is not None},
        }


@dataclass(frozen=True)
class AssociationRun:
    association_id: str
    version: int
    instance_id: str
    command_id: str


class Associations:
    def __init__(self, send: Send, tags_of: TagsOf, managed: Callable[[], list[str]]) -> None:
        self._send = send
        self._tags_of = tags_of
        self._managed = managed
        self._items: dict[str, Association] = {}
        self.runs: list[AssociationRun] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # --- the API ---------------------------------------------------------------------------------
    def create(self, request: dict[str, Any]) -> dict[str, Any]:
        targets = _targets(request)
        name = str(request.get("Name") or "")
        if not name:
            raise AssociationError("ValidationException", "Name is required")
        wanted = request.get("AssociationName")
        with self._lock:
            if wanted and any(a.fields.get("AssociationName") == wanted for a in self._items.values()):
                raise AssociationError("AssociationAlreadyExists", "The specified association already exists.")
            association = Association(str(uuid.uuid4()), name, targets, fields={k: request.get(k) for k in OPTIONAL})
            self._items[association.association_id] = association
        self._apply_now(association)
        return association.description()

    def update(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            association = self._get(request)
            if request.get("Name"):
                association.name = str(request["Name"])
            if request.get("Targets"):
                association.targets = _targets(request)
            association.fields = {k: request.get(k) for k in OPTIONAL}
            association.version += 1
        self._apply_now(association)
        return association.description()

    def describe(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            return self._get(request).description()

    def listed(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        wanted = {str(f.get("key")): str(f.get("value")) for f in request.get("AssociationFilterList") or []}
        rows = []
        with self._lock:
            for a in self._items.values():
                if "AssociationName" in wanted and a.fields.get("AssociationName") != wanted["AssociationName"]:
                    continue
                if "Name" in wanted and a.name != wanted["Name"]:
                    continue
                rows.append(
                    {
                        "AssociationId": a.association_id,
                        "Name": a.name,
                        "Targets": a.targets,
                        "AssociationVersion": str(a.version),
                        **({"AssociationName": a.fields["AssociationName"]} if a.fields.get("AssociationName") else {}),
                    }
                )
        return rows

    def _get(self, request: dict[str, Any]) -> Association:
        found = self._items.get(str(request.get("AssociationId") or ""))
        if found is None:
            raise AssociationError("AssociationDoesNotExist", "The specified association does not exist.")
        return found

    # --- runs ------------------------------------------------------------------------------------
    def instance_online(self, instance_id: str) -> None:
        """A new managed instance: every association whose targets match it runs on it."""
        self._later(lambda: self._run_matching(instance_id))

    def _run_matching(self, instance_id: str) -> None:
        with self._lock:
            associations = list(self._items.values())
        for association in associations:
            if self._matches(association, instance_id):
                self._run(association, [instance_id])

    def _apply_now(self, association: Association) -> None:
        if association.fields.get("ApplyOnlyAtCronInterval"):
            return
        self._later(lambda: self._run(association, [i for i in self._managed() if self._matches(association, i)]))

    def _run(self, association: Association, instance_ids: list[str]) -> None:
        with self._lock:
            version, name, parameters = association.version, association.name, association.fields.get("Parameters")
        for instance_id in instance_ids:
            request: dict[str, Any] = {"DocumentName": name, "InstanceIds": [instance_id]}
            if parameters:
                request["Parameters"] = parameters
            command_id = self._send(request)
            with self._lock:
                self.runs.append(AssociationRun(association.association_id, version, instance_id, command_id))

    def _matches(self, association: Association, instance_id: str) -> bool:
        for target in association.targets:
            key, values = str(target.get("Key")), [str(v) for v in target.get("Values") or []]
            if key == "InstanceIds":
                if instance_id not in values:
                    return False
            elif key.startswith("tag:"):
                if self._tags_of(instance_id).get(key.removeprefix("tag:")) not in values:
                    return False
            else:
                return False  # another kind of target: not modelled
        return bool(association.targets)

    def _later(self, work: Callable[[], None]) -> None:
        thread = threading.Thread(target=work, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def wait_idle(self, timeout: float) -> None:
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)


def _targets(request: dict[str, Any]) -> list[dict[str, Any]]:
    targets = [dict(t) for t in request.get("Targets") or []]
    if not targets:
        raise AssociationError("ValidationException", "Targets are required (InstanceId is deprecated)")
    return targets
