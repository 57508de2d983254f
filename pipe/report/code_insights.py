"""A Code Insights report on the commit (CODE_INSIGHTS), posted when a deploy ends: the verdict, the
environment, the release and the one before, the instances deployed and failed, the duration and the
batch table, and one annotation per failed instance (phase, exit code, the last lines of its output,
masked). A refusal (the variables were valid, nothing was sent) gets a failed report saying so; a dry
run gets none.

The report goes through the toolkit's client (``bitbucket_pipes_toolkit.CodeInsights``): without
credentials, ``http://api.bitbucket.org`` through Bitbucket Pipelines' authenticating proxy when ``CI``
is set (``host.docker.internal:29418`` from a pipe's container), otherwise through the environment's
``HTTP_PROXY`` as ``requests`` reads it. Trap: the toolkit's transport calls ``fail()`` on a connection
error, which prints a red ✖ line and exits 1; the client here gets one that raises instead, so a report
that cannot be posted is one warning and the deploy's verdict stays what it was.

Each deploy replaces its own report (one per SERVICE and ENVIRONMENT on a commit): the old one is
deleted first, so no annotation of an earlier run of it stays behind.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from bitbucket_pipes_toolkit import CodeInsights

from pipe.config.build_context import BuildContext
from pipe.config.settings import DeploySettings
from pipe.limits import (
    ANNOTATION_SUMMARY_MAX,
    ANNOTATIONS_PER_REPORT,
    ANNOTATIONS_PER_REQUEST,
    REPORT_DATA_FIELDS_MAX,
    REPORT_DETAILS_MAX,
    REPORT_TITLE_MAX,
)
from pipe.model import DeployOutcome, Invocation, PhaseOutcome, Status
from pipe.plan import DeployPlan
from pipe.report.batches import batch_table
from pipe.report.result_file import failed_instances, summary, verdict_words
from pipe.runtime.redaction import Redactor

log = logging.getLogger("ssm-deploy")
REPORTER = "ssm-deploy"
NOTHING_SENT = "Nothing was sent to any instance."
LAST_LINES = 20  # of an instance's output in its annotation
TIMEOUT_SECONDS = 10  # each request (the toolkit's own default)
CUT = "…"
REASON_MAX = 300  # characters of a connection error in the warning


@dataclass(frozen=True)
class CodeInsightsReport:
    """The Code Insights report on the commit; skipped outside Bitbucket Pipelines, for a dry run, and
    with CODE_INSIGHTS 'false'."""

    settings: DeploySettings
    env: Mapping[str, str]
    redactor: Redactor

    def write(self, plan: DeployPlan | None, outcome: DeployOutcome) -> None:
        if not self.settings.code_insights or outcome.status is Status.DRY_RUN:
            return
        build = BuildContext.from_env(self.env)
        if not build.commit or "/" not in build.repo:
            log.debug("CODE_INSIGHTS: no BITBUCKET_COMMIT or repository (not in Bitbucket Pipelines): no report.")
            return
        report_id = report_key(self.settings)
        report = report_body(self.settings, plan, outcome, self.redactor)
        annotations = annotation_bodies(plan, outcome, self.redactor)
        workspace, slug = build.repo.split("/", 1)
        client = CodeInsights(repo=slug, username=workspace)
        client.http_client = _RaisingTransport()
        try:
            _post(client, build.commit, report_id, report, annotations)
        except (requests.RequestException, ValueError) as error:
            log.warning(
                f"CODE_INSIGHTS: the report on commit {build.commit[:12]} was not posted ({_reason(error)}); "
                "the deploy's result is unchanged."
            )
            return
        log.info(f"Code Insights report '{report['title']}' posted on commit {build.commit[:12]}.")


def report_key(settings: DeploySettings) -> str:
    """The report's id on the commit: one per service and environment, so a commit deployed to dev,
    then prod, has both, and a deploy run again replaces its own."""
    parts = [REPORTER, settings.service, settings.environment or ""]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(part for part in parts if part))


def report_body(
    settings: DeploySettings, plan: DeployPlan | None, outcome: DeployOutcome, redactor: Redactor
) -> dict[str, Any]:
    """The report as the reports API takes it (``PUT .../commit/{commit}/reports/{reportId}``)."""
    seconds = outcome.seconds()
    release = plan.release if plan is not None else None
    failed = failed_instances(outcome)
    deployed = instances_deployed(outcome, release.plan.release_id if release is not None else None)
    data: list[dict[str, Any]] = [{"title": "Status", "type": "TEXT", "value": verdict(outcome)}]
    if settings.environment:
        data.append({"title": "Environment", "type": "TEXT", "value": settings.environment})
    if release is not None:
        data.append({"title": "Release", "type": "TEXT", "value": release.plan.release_id})
        data.append({"title": "Previous release", "type": "TEXT", "value": release.live_before or "none"})
    data.append({"title": "Instances deployed", "type": "NUMBER", "value": deployed})
    data.append({"title": "Instances failed", "type": "NUMBER", "value": len(failed)})
    data.append({"title": "Duration", "type": "DURATION", "value": round(seconds * 1000)})
    if settings.build.url:
        data.append(
            {
                "title": "Build",
                "type": "LINK",
                "value": {"text": f"#{settings.build.build_number}", "href": settings.build.url},
            }
        )
    lines = [NOTHING_SENT] if outcome.status is Status.NOT_SENT else []
    lines.append(summary(settings, outcome, release, seconds))
    table = batch_table(outcome.batches)
    if table:
        lines += ["", *table]
    body: dict[str, Any] = {
        "title": _cut(f"{REPORTER}: {_target(settings)} {verdict(outcome)}", REPORT_TITLE_MAX),
        "details": _cut(redactor.redact("\n".join(lines)), REPORT_DETAILS_MAX),
        "external_id": report_key(settings),
        "reporter": REPORTER,
        # the API's four types are SECURITY, COVERAGE, TEST and BUG; a deploy's verdict is closest to a test's
        "report_type": "TEST",
        "result": _result(outcome),
        "data": data[:REPORT_DATA_FIELDS_MAX],
    }
    if settings.build.url:
        body["link"] = settings.build.url
    return body


def annotation_bodies(plan: DeployPlan | None, outcome: DeployOutcome, redactor: Redactor) -> list[dict[str, Any]]:
    """One annotation per failed instance: the first phase it failed in, with its status, exit code
    and the last lines of its output there (masked), and the later phases it failed in."""
    phases = {"deploy": outcome.deploy, "health check": outcome.health_check, "rollback": outcome.rollback}
    names = plan.names if plan is not None else {}
    bodies = []
    for instance_id, failed_in in list(failed_instances(outcome).items())[:ANNOTATIONS_PER_REPORT]:
        first = phases[failed_in[0]].invocations[instance_id]
        label = f"{instance_id} ({names[instance_id]})" if names.get(instance_id) else instance_id
        summary_line = f"{label} failed in the {failed_in[0]}: {first.describe()}"
        head = [f"Phase: {failed_in[0]}", f"Exit code: {_exit_code(first)}", f"Status: {first.describe()}"]
        head += [f"Then the {phase} failed too: {_described(phases[phase], instance_id)}" for phase in failed_in[1:]]
        details = redactor.redact("\n".join(head)) + "\n\n"
        output = "\n".join(_last_lines(first, redactor))
        bodies.append(
            {
                "external_id": f"{REPORTER}-{instance_id}",
                "annotation_type": "BUG",
                "severity": "HIGH",
                "result": "FAILED",
                "summary": _cut(redactor.redact(summary_line), ANNOTATION_SUMMARY_MAX),
                "details": details + _keep_end(output, REPORT_DETAILS_MAX - len(details)),
            }
        )
    return bodies


def instances_deployed(outcome: DeployOutcome, release_id: str | None) -> int:
    """The instances the deploy left on what it deployed: those that succeeded in every phase they ran and
    were not switched back. In release mode an instance whose ``current`` was read counts when it points
    to the release; elsewhere one the rollback ran on does not count (it went back)."""
    failed = failed_instances(outcome)

    def on_it(instance_id: str) -> bool:
        if instance_id in failed:
            return False
        if release_id is not None and instance_id in outcome.fleet:
            return outcome.fleet[instance_id] == release_id
        return instance_id not in outcome.rollback.invocations

    return sum(1 for instance_id in outcome.deploy.invocations if on_it(instance_id))


def verdict(outcome: DeployOutcome) -> str:
    """``succeeded``, ``failed in the health check``, ``refused: nothing was sent`` ..."""
    if outcome.status is Status.NOT_SENT:
        return "refused: nothing was sent" if not outcome.interrupted else "stopped: nothing was sent"
    return verdict_words(outcome)


def _post(
    client: Any, commit: str, report_id: str, report: dict[str, Any], annotations: Sequence[dict[str, Any]]
) -> None:
    """Delete the report's earlier run (none: 404), put the report, then its annotations 100 at a time."""
    try:
        client.delete_report(commit, report_id)
    except requests.HTTPError as error:
        if error.response is None or error.response.status_code != 404:
            raise
    client.create_report(commit, report)
    for start in range(0, len(annotations), ANNOTATIONS_PER_REQUEST):
        client.create_bulk_annotations(commit, report_id, list(annotations[start : start + ANNOTATIONS_PER_REQUEST]))


class _RaisingTransport:
    """A request with a timeout whose errors raise (the toolkit's transport prints a ✖ line and exits 1,
    ``fail()``), and tried once: urllib3 logs each retry as a warning of its own."""

    def make_session_request(self, method: str, url: str, **kwargs: Any) -> Any:
        with requests.Session() as session:
            return session.request(method, url, timeout=TIMEOUT_SECONDS, **kwargs)


def _result(outcome: DeployOutcome) -> str:
    """The API's PASSED, FAILED or PENDING (WAIT 'false': sent, not waited for)."""
    if outcome.status is Status.SUCCEEDED:
        return "PASSED"
    return "PENDING" if outcome.status is Status.SENT else "FAILED"


def _target(settings: DeploySettings) -> str:
    return f"{settings.service} to {settings.environment}" if settings.environment else settings.service


def _exit_code(invocation: Invocation) -> str:
    code = invocation.response_code
    return str(code) if code is not None and code >= 0 else "none (the script did not end on its own)"


def _described(phase: PhaseOutcome, instance_id: str) -> str:
    invocation = phase.invocations.get(instance_id)
    return invocation.describe() if invocation is not None else "no result"


def _last_lines(invocation: Invocation, redactor: Redactor) -> list[str]:
    """The last lines the instance printed (stdout, then stderr), masked."""
    shown: list[str] = []
    for stream, text in (("stdout", invocation.stdout), ("stderr", invocation.stderr)):
        copy = redactor.mask_cut_end(text) if stream in invocation.cut else text  # a value the cut split in two
        lines = redactor.redact_output(copy).rstrip("\n").splitlines()[-LAST_LINES:]
        if not lines:
            continue
        cut = " (SSM kept only the beginning; the end is in the build log)" if stream in invocation.cut else ""
        shown += [f"Last lines of {stream}{cut}:", *lines]
    return shown or ["The instance printed nothing."]


def _reason(error: Exception) -> str:
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"Bitbucket answered HTTP {error.response.status_code}"
    if isinstance(error, requests.Timeout):
        return f"no answer within {TIMEOUT_SECONDS} s"
    if isinstance(error, requests.ConnectionError):
        return f"could not connect through the Pipelines proxy: {type(error).__name__}"
    return _cut(f"{type(error).__name__}: {error}", REASON_MAX)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(CUT)] + CUT


def _keep_end(text: str, limit: int) -> str:
    """``text``'s end when it is longer than ``limit``: the last lines of output matter most."""
    return text if len(text) <= limit else CUT + text[len(text) - (limit - len(CUT)) :]
