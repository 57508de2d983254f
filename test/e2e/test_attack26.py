"""The twenty-sixth outside attack on the verdict (issue #17, "Done when"), aimed at the values path:
SECRETS, PARAMETERS_PATH and VARIABLES whose values are hard to carry (a PEM key's trailing newline,
several lines, spaces around, quotes, ``$(...)``, backslashes, ``=``, unicode, an empty value, a value
exactly as long as the masking threshold), carried by real pm2 (cluster mode, so the process check
reads the values from pm2's JSON) as a RUN_AS user, to a real Node.js app.

Each test compares the three truths: what the app really holds (it answers the SHA-256 of each value,
never the value), what the ledger says, and what the step said; and that no value shows in the output."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import urllib.request
import uuid
from pathlib import Path

from e2e.test_attack3 import wait_for_port
from e2e.test_attack20 import one_instance
from e2e.test_ledger import entries as ledger_entries
from e2e.test_releases import APP_DIR, release_env
from e2e.test_variables import yaml_list
from standin import StandIn
from standin.users import APP_USER
from support import kill_instance_processes, run_pipe

PORT = 18260
RELEASE = "000001-0123456"

# A PEM key ends with a newline; `$(...)` drops every trailing newline of what it captures
PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
    "bm90LWEtcmVhbC1rZXktb25seS1mb3ItYXR0YWNrLTI2LXRlc3Q=\n"
    "-----END PRIVATE KEY-----\n"
)
SECRET_VALUES = {
    "TLS_KEY": PEM,
    # spaces around, both quotes, a command substitution, backquotes, backslashes, `=`, `;`, `#`
    "TRICKY": "  lead 'sq' \"dq\" $(touch /tmp/a26-pwned) `id` \\back\\slash a=b; #x  ",
    "UNICODE": "pässwörd-ключ-🔑-密码",
    "EXACT4": "x9!q",  # exactly MIN_LENGTH characters: masked
    "TWO_NEWLINES": "ends-with-two-newlines-7c1e\n\n",
}
# the YAML list form keeps a value exactly, newlines and spaces included (README: VARIABLES)
VARIABLE_VALUES = {"CHAIN": "line one\nline two\n", "EMPTY": "", "PADDED": "  padded value  "}
NAMES = [*SECRET_VALUES, *VARIABLE_VALUES]

SERVER_JS = """'use strict';
// answers the SHA-256 of each value it was started with (null when it has none), never a value
const crypto = require('node:crypto');
const http = require('node:http');
const names = %s;
const held = {};
for (const name of names) {
  const value = process.env[name];
  held[name] = value === undefined ? null : crypto.createHash('sha256').update(value, 'utf8').digest('hex');
}
http.createServer((req, res) => res.end(JSON.stringify(held))).listen(%d, '0.0.0.0');
"""
# the README's recipe in cluster mode: cwd is the symlink, every value listed from process.env
ECOSYSTEM_JS = """module.exports = {
  apps: [{
    name: 'values-app',
    script: 'server.js',
    cwd: '%s/current',
    exec_mode: 'cluster',
    instances: 1,
    env_prod: { %s },
  }],
};
"""


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def artifact(clone: Path) -> str:
    """A release holding the app and its ecosystem file."""
    files = {
        "server.js": SERVER_JS % (json.dumps(NAMES), PORT),
        "ecosystem.config.js": ECOSYSTEM_JS % (APP_DIR, ", ".join(f"{n}: process.env.{n}" for n in NAMES)),
    }
    with tarfile.open(clone / "values-app.tgz", "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return "values-app.tgz"


def held(standin: StandIn, instance_id: str) -> dict[str, str | None]:
    url = f"http://{standin.instance(instance_id).address}:{PORT}/"
    with urllib.request.urlopen(url, timeout=10) as response:
        document: dict[str, str | None] = json.loads(response.read())
    return document


def leaked(output: str) -> list[str]:
    """The values (and the significant lines of multi-line ones) that show in ``output``."""
    pieces = {piece.strip() for value in SECRET_VALUES.values() for piece in (value, *value.splitlines())}
    return sorted(piece for piece in pieces if len(piece) >= 4 and piece.strip("-") and piece in output)


def test_hard_to_carry_values_reach_a_pm2_app_exactly_and_the_verdict_agrees(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    (instance_id,) = standin.launch(1)
    key = standin.create_key("attack 26")
    prefix = f"/attack26/{uuid.uuid4().hex[:8]}"
    for name, value in SECRET_VALUES.items():
        standin.put_secret(f"{prefix}/{name.lower()}", value, key)
    env = release_env(
        standin,
        [instance_id],
        tmp_path,
        bucket,
        service,
        ARTIFACT=artifact(tmp_path),
        BITBUCKET_BUILD_NUMBER="1",
        RUN_AS=APP_USER,
        ACTIVATE_COMMANDS="pm2 startOrReload ecosystem.config.js --env prod",
        HEALTHCHECK_COMMANDS=f"curl -fsS --max-time 5 http://127.0.0.1:{PORT}/ >/dev/null",
        HEALTHCHECK_INTERVAL="1",
        HEALTHCHECK_RETRIES="20",
        SECRETS="\n".join(f"{name}={prefix}/{name.lower()}" for name in SECRET_VALUES),
        **yaml_list("VARIABLES", [f"{name}={value}" for name, value in VARIABLE_VALUES.items()]),
    )

    run = run_pipe(env, timeout=300)

    # the step, the ledger and the app agree: Deployed, and the app holds exactly the stored values
    assert run.returncode == 0, run.output
    assert ledger_entries(standin, service)[-1]["status"] == "succeeded"
    expected = {name: sha(value) for name, value in {**SECRET_VALUES, **VARIABLE_VALUES}.items()}
    got = held(standin, instance_id)
    assert {n: v for n, v in got.items() if v != expected[n]} == {}, [n for n in got if got[n] != expected[n]]
    assert f"run release {RELEASE} with this deploy's values of" in run.output, run.output
    assert not standin.instance_path(instance_id, "/tmp/a26-pwned").exists()
    assert leaked(run.output) == []


def test_a_server_started_with_an_empty_environment_holds_none_of_the_values_and_fails_the_deploy(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """ACTIVATE_COMMANDS start the release's server with `env -i` (a "clean" start): it holds none of the
    values this deploy exported. An empty environment is not a title written over it (puma, nginx): there
    is nothing to compare because there is nothing, and the process lacks every name."""
    port = PORT + 1
    activate = (
        f"(exec env -i /usr/bin/python3 -m http.server {port} --bind 127.0.0.1) </dev/null >/dev/null 2>&1 &\n"
        f"echo $! > /srv/web.pid\n{wait_for_port(port)}"
    )
    instance_id, env = one_instance(
        standin, tmp_path, bucket, service, ACTIVATE_COMMANDS=activate, VARIABLES="FEATURE=on-value-26"
    )
    try:
        run = run_pipe(env("A", "1"), timeout=300)
    finally:
        kill_instance_processes(standin, instance_id, "/srv/web.pid")

    assert run.returncode == 1, run.output
    assert "Failed (exit 90)" in run.output, run.output
    assert "without FEATURE, which this deploy exported" in run.output, run.output
    assert "values not compared" not in run.output
    assert ledger_entries(standin, service)[-1]["status"] != "succeeded"


def test_parameters_path_over_several_pages_exports_each_parameter_directly_under_it(standin: StandIn) -> None:
    # held: GetParametersByPath answers at most 10 a page; 55 parameters make 6 pages, all exported, each
    # at its value; one a level deeper is not directly under the path and is not exported
    (instance_id,) = standin.launch(1)
    key = standin.create_key("attack 26 path")
    path = f"/attack26/{uuid.uuid4().hex[:8]}/"
    values = {f"P{i:02d}": f"value-{i:02d}-{uuid.uuid4().hex[:6]}" for i in range(55)}
    for name, value in values.items():
        standin.put_secret(f"{path}{name.lower()}", value, key)
    standin.put_secret(f"{path}nested/deeper", "nested-value-26", key)
    joined = "".join(f"{name}={value}\n" for name, value in sorted(values.items()))
    env = standin.pipe_env(
        INSTANCE_IDS=instance_id,
        PARAMETERS_PATH=path,
        COMMANDS='env | grep -E "^(P[0-9]{2}|DEEPER)=" | sort | sha256sum | cut -c1-64 > /srv/path.sha256',
    )

    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert standin.instance_path(instance_id, "/srv/path.sha256").read_text().strip() == sha(joined)
    assert not any(value in run.output for value in values.values())
