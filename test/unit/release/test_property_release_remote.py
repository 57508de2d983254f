"""Generated paths, ids and values through the release scripts: whatever APP_DIR, release id,
SHARED_PATHS or forwarded value the pipe accepts lands exactly where it should, and nothing in it
is ever run as shell code."""

from __future__ import annotations

import os
import pwd

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipe.config.release import RELEASE_ID, app_dir_problem, shared_path_problem
from pipe.release.remote import as_user, install_body
from unit.release_support import APP_USER, SHELLS, Box, ensure_app_user, is_root, open_temp_dir

# characters a shell would act on, and a few a careless quote would mangle
NASTY = " '\"$`\\;&|*?[]{}~!#()<>=:%^,@+-é\u00a0\u2028日"
LETTERS = st.text(alphabet=st.characters(codec="utf-8", categories=["L", "N"]), max_size=3)
# every generated name holds at least one character the shell would act on
name = st.builds(
    lambda head, nasty, tail: head + nasty + tail, LETTERS, st.text(alphabet=NASTY, min_size=1, max_size=4), LETTERS
).filter(lambda text: text not in (".", "..") and len(text.encode()) < 100)
release_ids = st.from_regex(RELEASE_ID, fullmatch=True).filter(lambda text: len(text) <= 60)
shared = st.lists(
    st.tuples(st.lists(name, min_size=1, max_size=2), st.booleans()).map(
        lambda parts: "/".join(parts[0]) + ("/" if parts[1] else "")
    ),
    min_size=1,
    max_size=3,
    unique_by=lambda path: path.rstrip("/").split("/")[0],  # one entry per top-level name
)
PROBE = 'printf "%s\\n" "$PWD" >> "$OUT/places"'


# APP_DIR refuses a space while VERIFY_PROCESSES is on (config/rules.py: the process check splits command
# lines at blanks)
app_dir_name = name.filter(lambda text: " " not in text)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(segments=st.lists(app_dir_name, min_size=1, max_size=2), release=release_ids, shared_paths=shared)
def test_generated_paths_and_ids_land_where_they_should(
    segments: list[str], release: str, shared_paths: list[str]
) -> None:
    for root in open_temp_dir():
        box = Box(root)
        app_dir = os.path.join(str(root), "srv", *segments)
        assert app_dir_problem(app_dir) is None
        assert all(shared_path_problem(path) is None for path in shared_paths)
        artifact = box.release_artifact(release)
        plan = box.plan(
            release,
            artifact,
            app_dir=app_dir,
            shared_paths=tuple(shared_paths),
            commands=PROBE,
            activate_commands=PROBE,
        )

        run = box.run(install_body(plan), SHELLS[-1] if len(SHELLS) > 1 else SHELLS[0])

        assert run.code == 0, run.stderr
        assert os.readlink(os.path.join(app_dir, "current")) == f"releases/{release}"
        release_dir = os.path.join(app_dir, "releases", release)
        assert box.observed("places") == [release_dir, os.path.join(app_dir, "current")]
        with open(os.path.join(app_dir, "current", "app.txt")) as text:
            assert text.read() == release
        for path in shared_paths:
            link = os.path.join(release_dir, path.rstrip("/"))
            assert os.readlink(link) == os.path.join(app_dir, "shared", path.rstrip("/"))
        # nothing was created outside the sandbox's own folders (no path was split or expanded)
        assert sorted(os.listdir(root)) == ["_script.sh", "aws.log", "bin", "out", "params", "s3", "src", "srv"]
        assert not os.path.exists("/tmp/pwned")


# any text an environment can hold (no NUL), each with one of the characters quoting must survive
TEXT = st.text(
    alphabet=st.sampled_from(NASTY + "\n\t\r")
    | st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00"),
    max_size=40,
)
values = st.builds(
    lambda head, token, tail: head + token + tail,
    TEXT,
    st.sampled_from(["'", "'\\''", '"', "\\", "$(id)", "`id`", "\n", "'\n'"]),
    TEXT,
)


@pytest.mark.skipif(not is_root(), reason="RUN_AS needs root to create and become a second user")
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=values)
@example(value="")
@example(value="it's")
def test_forwarded_values_reach_run_as_byte_for_byte(value: str) -> None:
    user: pwd.struct_passwd = ensure_app_user()
    for root in open_temp_dir():
        box = Box(root)
        snippet = as_user(APP_USER, 'printf %s "$FORWARDED" > "$OUT/value"', "/", env_names=("FORWARDED", "OUT"))

        run = box.run(snippet, extra_env={"FORWARDED": value})

        assert run.code == 0, run.stderr
        assert (box.out / "value").read_bytes() == value.encode()
        assert (box.out / "value").stat().st_uid == user.pw_uid
