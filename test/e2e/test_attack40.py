"""The fortieth outside attack (issue #17), aimed at live output's CloudWatch events: the SSM Agent uploads
what an instance prints in events that are not lines. It reads its stdout and stderr files with a 200,000-byte
buffer (amazon-ssm-agent, cloudwatchlogsservice.go, getNextMessage): a longer line reaches CloudWatch cut in
pieces of 200,000 bytes, each its own event, and the stand-in now does the same (``AgentOutputFile``). A secret
the cut falls inside is in two events, neither of which holds the whole value."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from e2e.test_attack32 import pieces
from fakes.bitbucket_reports import fake_bitbucket, proxy_env
from standin import StandIn
from standin.cloudwatch import AGENT_PIECE_BYTES
from support import run_pipe

# no piece of it (MIN_LENGTH characters or more) is ordinary text
SECRET = "Wj4r-Hx7q-" + uuid.uuid4().hex + "-Pb2m"
BEFORE_CUT = 12  # the secret's first characters that end the agent's first 200,000-byte event


def test_a_secret_that_the_agents_200000_byte_event_cut_splits_shows_no_piece_of_it(
    standin: StandIn, tmp_path: Path
) -> None:
    """COMMANDS print one line: 199,988 zeros, then the secret (a debugging `echo`), then the command fails.
    The agent's first event ends with the secret's first 12 characters, the next begins with the rest: a
    mask of the whole value matches neither. The build log, Code Insights and the result file must hold no
    piece of it, and the line must still show, once, whole, with the value masked."""
    environment = f"a40{uuid.uuid4().hex[:8]}"
    standin.put_secret(f"/deploy/{environment}/token", SECRET, standin.create_key(f"a40 {environment}"))
    (instance_id,) = standin.launch(1)
    result_file = tmp_path / "result.json"
    zeros = AGENT_PIECE_BYTES - BEFORE_CUT
    with fake_bitbucket() as bitbucket:
        env = standin.pipe_env(
            ENVIRONMENT=environment,
            INSTANCE_IDS=instance_id,
            SECRETS=f"API_TOKEN=/deploy/{environment}/token",
            COMMANDS=f"printf '%0{zeros}d' 0\necho \"$API_TOKEN tail\"\necho 'migration failed' >&2\nexit 4",
            CODE_INSIGHTS="true",
            RESULT_FILE=str(result_file),
            **proxy_env(bitbucket, str(urlsplit(standin.endpoint).hostname)),
        )
        run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert "exit 4" in run.output, run.output
    assert pieces(SECRET, run.output) == []
    assert pieces(SECRET[::-1], run.output[::-1]) == []  # nor the value's end
    assert pieces(SECRET, json.dumps(bitbucket.requests, default=str)) == []
    assert pieces(SECRET, result_file.read_text()) == []
    shown = [line for line in run.output.splitlines() if line.endswith("**** tail")]
    assert len(shown) == 1 and f"{'0' * 1000}****" in shown[0], "the line shows once, whole, the value masked"
