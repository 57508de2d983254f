"""The ledger reader against anything a version may hold: whatever the bytes or the JSON shape, a
version is an entry or is skipped with a warning naming its number, and reading never raises (one
garbled version used to stop every release deploy with RecursionError or OverflowError)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipe.release.ledger import Groups, LedgerEntry, ReleaseInfo, RunInfo
from pipe.release.ledger_archive import Version, parse

NAME = "/release-ledger/web-api/prod/release"
SHA = "ab" * 32
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID = LedgerEntry(
    release=ReleaseInfo("000042-0123456", "0123456789abcdef", "42", f"web-api/{SHA}.tar.gz", SHA),
    run=RunInfo("57", "89abcdef", "https://bitbucket.org/acme/web-api/pipelines/results/57", "{x}"),
    action="rollback",
    status="partial",
    fleet=Groups.of({"i-1": "000042-0123456", "i-2": "000041-0123456"}),
    instances=Groups.of({"i-1": "succeeded", "i-2": "failed"}),
    time="2026-12-01T21:50:33Z",
    previous_release="000041-0123456",
)
SCHEMA_1 = {
    "v": 1,
    "release": "000042-0123456",
    "status": "succeeded",
    "previous": "",
    "commit": "0123456789",
    "build": "42",
    "build_url": "",
    "triggered_by": "",
    "artifact": f"web-api/{SHA}.tar.gz",
    "sha256": SHA,
    "time": "",
    "instances": {"succeeded": {"count": 1, "ids": ["i-1"]}},
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),  # NaN and the infinities too: json.loads reads NaN, Infinity and 1e999 as floats
    st.text(max_size=50),
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
JSONISH = '[]{}",:0123456789.eE+-tfnrualsINy \\u'
deep = st.builds(
    lambda opener, depth, tail: opener * depth + tail,
    st.sampled_from(["[", '{"v":', '{"instances":', "[{}, "]),
    st.integers(min_value=500, max_value=5000),
    st.sampled_from(["", "1", "]" * 3, "}"]),
)


def documents() -> st.SearchStrategy[dict[str, Any]]:
    """A valid entry of either schema with one field replaced by any JSON value, or removed."""
    return (
        st.sampled_from([json.loads(VALID.to_json()), SCHEMA_1])
        .flatmap(lambda base: st.tuples(st.just(base), st.sampled_from(_paths(base)), json_values | st.just(_REMOVE)))
        .map(lambda parts: _replaced(*parts))
    )


_REMOVE = object()


def _paths(document: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for key, value in document.items():
        found.append((*prefix, key))
        if isinstance(value, dict):
            found += _paths(value, (*prefix, key))
    return found


def _replaced(base: dict[str, Any], path: tuple[str, ...], value: object) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(json.dumps(base))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if value is _REMOVE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return document


values = st.one_of(
    st.text(),
    st.text(alphabet=JSONISH, max_size=200),
    st.binary(max_size=200).map(lambda data: data.decode("utf-8", "replace")),
    deep,
    json_values.map(json.dumps),
    documents().map(json.dumps),
    st.integers(min_value=4301, max_value=6000).map(lambda digits: '{"v": ' + "9" * digits + "}"),
)


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def warnings() -> Iterator[Warnings]:
    handler = Warnings()
    logger = logging.getLogger("ssm-deploy")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@FUZZ
@given(text=values)
@example(text="[" * 4000)
@example(
    text=json.dumps(SCHEMA_1 | {"instances": {"succeeded": {"count": 1e999, "ids": []}}}).replace("Infinity", "1e999")
)
@example(text=json.dumps(SCHEMA_1 | {"v": True}))
def test_any_value_is_an_entry_or_a_value_error_never_another_exception(text: str) -> None:
    try:
        entry = LedgerEntry.from_json(text)
    except ValueError as error:
        assert str(error).isprintable() and len(str(error)) < 300
        return
    assert LedgerEntry.from_json(entry.to_json()) is not None  # what is read can be recorded again (a rollback)


@FUZZ
@given(text=values, number=st.integers(min_value=1, max_value=10**12))
@example(text="[" * 4000, number=2)
def test_a_version_that_is_no_entry_is_skipped_with_a_warning_naming_its_number(text: str, number: int) -> None:
    with warnings() as seen:
        found = parse([Version(number, text, "arn:aws:iam::123456789012:user/someone")], NAME)

    if found:
        assert found[0].version == number and seen.lines == []
    else:
        (line,) = seen.lines
        assert f"Release ledger {NAME}: version {number} skipped (" in line
        assert "written by arn:aws:iam::123456789012:user/someone" in line


@FUZZ
@given(document=documents())
def test_a_changed_field_is_read_only_when_it_still_makes_an_entry(document: dict[str, Any]) -> None:
    text = json.dumps(document)
    try:
        entry = LedgerEntry.from_json(text)
    except ValueError:
        return
    assert entry.release.id == document["release"] and entry.status == document["status"]
