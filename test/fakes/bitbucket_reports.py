"""Bitbucket Cloud's reports API (Code Insights) as a local HTTP server, reached the way the pipe reaches
Bitbucket: as the HTTP proxy for ``http://api.bitbucket.org`` (in Pipelines, the authenticating proxy
on port 29418; here, ``HTTP_PROXY``, which ``requests`` reads when ``CI`` is not set). It records every
real request and checks each payload against the shape the API reference documents ("Reports":
create or update a report, bulk create or update annotations, delete a report), answering 400 with
the problems, as Bitbucket does, when it does not hold.

Documented facts checked (see pipe/limits.py for where each comes from): report ``result`` PASSED,
FAILED or PENDING; ``report_type`` SECURITY, COVERAGE, TEST or BUG; ``data`` types BOOLEAN (a JSON
boolean), DATE (a number, Unix milliseconds), DURATION (a number, milliseconds), LINK (an object with
``text`` and ``href``), NUMBER (a number), PERCENTAGE (a number between 0 and 100), TEXT (a string);
annotations ``annotation_type`` VULNERABILITY, CODE_SMELL or BUG, ``result`` PASSED, FAILED, IGNORED
or SKIPPED, ``severity`` HIGH, MEDIUM, LOW or CRITICAL, a unique ``external_id`` each, at most 100 a
request and 1000 a report."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from pipe.limits import (
    ANNOTATION_SUMMARY_MAX,
    ANNOTATIONS_PER_REPORT,
    ANNOTATIONS_PER_REQUEST,
    REPORT_DATA_FIELDS_MAX,
    REPORT_DETAILS_MAX,
    REPORT_TITLE_MAX,
)

API_HOST = "api.bitbucket.org"
REPORT_PATH = re.compile(r"/2\.0/repositories/([^/]+)/([^/]+)/commit/([0-9a-f]+)/reports/([^/]+)(/annotations)?")
REPORT_RESULTS = {"PASSED", "FAILED", "PENDING"}
REPORT_TYPES = {"SECURITY", "COVERAGE", "TEST", "BUG"}
REPORT_FIELDS = {
    "type", "uuid", "title", "details", "external_id", "reporter", "link", "remote_link_enabled",
    "logo_url", "report_type", "result", "data", "created_on", "updated_on",
}  # fmt: skip
ANNOTATION_TYPES = {"VULNERABILITY", "CODE_SMELL", "BUG"}
ANNOTATION_RESULTS = {"PASSED", "FAILED", "IGNORED", "SKIPPED"}
SEVERITIES = {"HIGH", "MEDIUM", "LOW", "CRITICAL"}
ANNOTATION_FIELDS = {
    "type", "uuid", "external_id", "title", "annotation_type", "path", "line", "summary", "details",
    "result", "severity", "link", "created_on", "updated_on",
}  # fmt: skip


@dataclass
class Request:
    method: str
    url: str  # as the proxy received it: absolute
    body: Any


@dataclass
class Report:
    body: dict[str, Any]
    annotations: dict[str, dict[str, Any]] = field(default_factory=dict)  # external_id -> annotation


@dataclass
class FakeBitbucket:
    """The server's state: ``requests`` as received, ``reports`` by (repo, commit, report id), the
    ``problems`` found in payloads; ``answer`` set to a status code answers every request with it."""

    requests: list[Request] = field(default_factory=list)
    reports: dict[tuple[str, str, str], Report] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    answer: int | None = None
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def report(self, repo: str, commit: str) -> Report:
        """The one report on ``commit`` (fails when there is not exactly one)."""
        found = [report for (r, c, _), report in self.reports.items() if (r, c) == (repo, commit)]
        assert len(found) == 1, f"{len(found)} reports on {commit}: {self.requests}"
        return found[0]

    def handle(self, method: str, url: str, raw: bytes) -> tuple[int, Any]:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return 400, {"error": {"message": "not JSON"}}
        with self.lock:
            self.requests.append(Request(method, url, body))
            if self.answer is not None:
                return self.answer, {"error": {"message": "the test's answer"}}
            parts = urlsplit(url)
            match = REPORT_PATH.fullmatch(parts.path)
            if parts.hostname != API_HOST or match is None:
                return 404, {"error": {"message": f"no such resource: {url}"}}
            workspace, slug, commit, report_id, annotations = match.groups()
            key = (f"{workspace}/{slug}", commit, report_id)
            if method == "PUT" and not annotations:
                return self._put_report(key, body)
            if method == "DELETE" and not annotations:
                return (204, None) if self.reports.pop(key, None) else (404, {"error": {"message": "no report"}})
            if method == "POST" and annotations:
                return self._post_annotations(key, body)
            return 405, {"error": {"message": f"{method} {parts.path}"}}

    def _put_report(self, key: tuple[str, str, str], body: Any) -> tuple[int, Any]:
        problems = report_problems(body)
        if problems:
            self.problems += problems
            return 400, {"error": {"message": "; ".join(problems)}}
        self.reports[key] = Report(body)
        return 200, {**body, "type": "report", "uuid": "{" + key[2] + "}"}

    def _post_annotations(self, key: tuple[str, str, str], body: Any) -> tuple[int, Any]:
        report = self.reports.get(key)
        if report is None:
            return 404, {"error": {"message": "no report"}}
        problems = annotations_problems(body, len(report.annotations))
        if problems:
            self.problems += problems
            return 400, {"error": {"message": "; ".join(problems)}}
        for annotation in body:
            report.annotations[annotation["external_id"]] = annotation
        return 200, [{**annotation, "type": "report_annotation"} for annotation in body]


def report_problems(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return ["the report is not a JSON object"]
    problems = [f"unknown field {name}" for name in body if name not in REPORT_FIELDS]
    problems += _text(body, "title", REPORT_TITLE_MAX, required=True)
    problems += _text(body, "details", REPORT_DETAILS_MAX, required=True)
    problems += _one_of(body, "result", REPORT_RESULTS) + _one_of(body, "report_type", REPORT_TYPES)
    data = body.get("data", [])
    if not isinstance(data, list) or len(data) > REPORT_DATA_FIELDS_MAX:
        return [*problems, f"data: a list of at most {REPORT_DATA_FIELDS_MAX} fields"]
    return problems + [problem for element in data for problem in _data_problems(element)]


def annotations_problems(body: Any, stored: int) -> list[str]:
    if not isinstance(body, list) or not body:
        return ["annotations: a non-empty JSON array"]
    if len(body) > ANNOTATIONS_PER_REQUEST:
        return [f"{len(body)} annotations in one request (at most {ANNOTATIONS_PER_REQUEST})"]
    if stored + len(body) > ANNOTATIONS_PER_REPORT:
        return [f"more than {ANNOTATIONS_PER_REPORT} annotations in the report"]
    problems = []
    ids = [a.get("external_id") for a in body if isinstance(a, dict)]
    if len(ids) != len(set(ids)):
        problems.append("external_id values must be unique")
    for annotation in body:
        if not isinstance(annotation, dict):
            problems.append("an annotation is not a JSON object")
            continue
        problems += [f"unknown field {name}" for name in annotation if name not in ANNOTATION_FIELDS]
        problems += _text(annotation, "external_id", 1000, required=True)
        problems += _text(annotation, "summary", ANNOTATION_SUMMARY_MAX, required=True)
        problems += _text(annotation, "details", REPORT_DETAILS_MAX)
        problems += _one_of(annotation, "annotation_type", ANNOTATION_TYPES)
        problems += _one_of(annotation, "result", ANNOTATION_RESULTS) + _one_of(annotation, "severity", SEVERITIES)
    return problems


def _data_problems(element: Any) -> list[str]:
    if not isinstance(element, dict) or set(element) - {"title", "type", "value"}:
        return [f"data field {element!r}: an object of title, type and value"]
    value, kind = element.get("value"), element.get("type")
    number = isinstance(value, int | float) and not isinstance(value, bool)
    percentage = isinstance(value, int | float) and number and 0 <= value <= 100
    valid = {
        "BOOLEAN": isinstance(value, bool),
        "DATE": isinstance(value, int) and not isinstance(value, bool),
        "DURATION": number,
        "LINK": isinstance(value, dict) and set(value) == {"text", "href"},
        "NUMBER": number,
        "PERCENTAGE": percentage,
        "TEXT": isinstance(value, str),
        None: isinstance(value, bool | int | float | str),
    }
    if not isinstance(element.get("title"), str) or kind not in valid:
        return [f"data field {element!r}: a string title and a documented type"]
    return [] if valid[kind] else [f"data field {element['title']!r}: {value!r} is not a {kind} value"]


def _text(body: dict[str, Any], name: str, limit: int, required: bool = False) -> list[str]:
    if name not in body:
        return [f"{name} is required"] if required else []
    value = body[name]
    if not isinstance(value, str) or (required and not value):
        return [f"{name}: a non-empty string"]
    return [f"{name}: {len(value)} characters (at most {limit})"] if len(value) > limit else []


def _one_of(body: dict[str, Any], name: str, allowed: set[str]) -> list[str]:
    if name in body and body[name] not in allowed:
        return [f"{name}: {body[name]!r} is not one of {sorted(allowed)}"]
    return []


def _handler(state: FakeBitbucket) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            status, answer = state.handle(self.command, self.path, self.rfile.read(length))
            data = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # the test's output stays the pipe's
            pass

    return Handler


@contextmanager
def fake_bitbucket() -> Iterator[FakeBitbucket]:
    """A running server on 127.0.0.1 (a free port), stopped at the end of the block."""
    state = FakeBitbucket()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def proxy_env(state: FakeBitbucket, *direct: str) -> dict[str, str]:
    """The environment that sends the pipe's Bitbucket calls to ``state``: ``HTTP_PROXY`` (the toolkit
    passes the Pipelines proxy only when ``CI`` is set; ``requests`` then takes the environment's), with
    the hosts in ``direct`` (the AWS stand-in's) and 127.0.0.1 reached without it."""
    bypass = ",".join(("127.0.0.1", "localhost", *direct))
    return {"HTTP_PROXY": state.proxy, "http_proxy": state.proxy, "NO_PROXY": bypass, "no_proxy": bypass}
