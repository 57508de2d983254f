"""The on-instance half of release mode: POSIX sh that installs, switches and rolls back releases.

Rendering only (no AWS calls). The text is placed after the pipe's prelude (pipe/plan/script.py
``build_script(settings, body)``), which has already read SECRETS and exported them with VARIABLES.
AWS-RunShellScript runs the script with ``sh`` (dash on Debian/Ubuntu), so everything here is POSIX
sh; only the user's COMMANDS and ACTIVATE_COMMANDS run in bash, in their own process, so a syntax
error in them fails that step instead of cutting the release script in the middle of a switch.

Layout of APP_DIR on an instance (absolute):
  releases/<id>/           an unpacked artifact, owned by RUN_AS
  shared/<path>            SHARED_PATHS targets, kept across releases, owned by RUN_AS
  current -> releases/<id> replaced by rename, so ``current`` is never missing
  .ssm-deploy/previous     the release ``current`` pointed to before the last switch
  .ssm-deploy/history      release ids in activation order, newest last
  .ssm-deploy/ready/<id>   the SHA-256 of the artifact a fully prepared release came from
  .ssm-deploy/files/<id>   its checksum manifest, recorded once it was prepared, compared before a switch to it
  .ssm-deploy/lock         held (flock) while a release script runs: deploys to one instance queue
  .ssm-deploy/run          the pipe runs (and scripts) that last began an install or a staging here
                           (RUNS_KEPT, newest first), under the lock: the SSM Agent starting one again after a reboot
                           is refused (79)
"""

from __future__ import annotations

import ast
import base64
import re
import shlex
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from pathlib import Path

from pipe.config.env_names import ENV_NAME
from pipe.config.release import (
    DEFAULT_KEEP_RELEASES,
    MIN_KEEP_RELEASES,
    RELEASE_ID,
    app_dir_problem,
    release_id_problem,
    run_as_problem,
    shared_path_problem,
)
from pipe.model import NO_RELEASE
from pipe.release import contents
from pipe.runtime.redaction import MIN_LENGTH


class ReleaseExit(IntEnum):
    """Exit codes of the release scripts: the pipe reads an instance's outcome from them."""

    STARTED_AGAIN = 79
    APP_DIR_UNUSABLE = 80
    ARTIFACT_DOWNLOAD_FAILED = 81
    CHECKSUM_MISMATCH = 82
    UNPACK_FAILED = 83
    RELEASE_COMMANDS_FAILED = 84
    ACTIVATION_FAILED_ROLLED_BACK = 85
    ACTIVATION_FAILED_ROLLBACK_FAILED = 86
    NO_PREVIOUS_RELEASE = 87
    RUN_AS_USER_MISSING = 88
    ACTIVATION_FAILED_NO_ROLLBACK = 89
    STALE_PROCESS = 90
    ARTIFACT_REFUSED = 91
    STAGED_RELEASE_CHANGED = 92
    PROGRAM_MISSING = 127  # the shell's own "command not found" code

    @property
    def meaning(self) -> str:
        """What happened on the instance, in words for the pipe's report."""
        return _MEANINGS[self]


_MEANINGS = {
    ReleaseExit.STARTED_AGAIN: "the SSM Agent started this deploy's script again on the instance (after a reboot or an "
    "agent restart it runs again, from the start, a command it had begun and not finished): refused, so it did not "
    "run twice; the first run was cut short where it was (COMMANDS, the switch or the activation may have run "
    "there): check what the instance runs with `ACTION: status`",
    ReleaseExit.APP_DIR_UNUSABLE: "APP_DIR cannot be used as it is (not writable, `current` is not a symlink, "
    "or the live release came from another artifact); nothing was switched",
    ReleaseExit.ARTIFACT_DOWNLOAD_FAILED: "the artifact could not be downloaded; nothing was switched",
    ReleaseExit.CHECKSUM_MISMATCH: "the downloaded artifact's SHA-256 did not match; nothing was unpacked or switched",
    ReleaseExit.UNPACK_FAILED: "the artifact could not be unpacked or SHARED_PATHS linked; nothing was switched",
    ReleaseExit.RELEASE_COMMANDS_FAILED: "COMMANDS failed in the new release; nothing was switched",
    ReleaseExit.ACTIVATION_FAILED_ROLLED_BACK: "ACTIVATE_COMMANDS failed; switched back to the previous release, "
    "whose activation ran again and succeeded",
    ReleaseExit.ACTIVATION_FAILED_ROLLBACK_FAILED: "ACTIVATE_COMMANDS failed and the switch back to the previous "
    "release (or its activation) failed too, or a process of another release than the one switched back to "
    "still ran after it",
    ReleaseExit.NO_PREVIOUS_RELEASE: "the release that was live before is not on the instance to switch back to",
    ReleaseExit.RUN_AS_USER_MISSING: "the RUN_AS user does not exist on the instance (or the script is not root)",
    ReleaseExit.ACTIVATION_FAILED_NO_ROLLBACK: "ACTIVATE_COMMANDS failed and there was no other release to go "
    "back to (first release on the instance, or it was already live)",
    ReleaseExit.STALE_PROCESS: "a process still runs a replaced release or holds an old value of a SECRETS, "
    "PARAMETERS_PATH or VARIABLES name, after ACTIVATE_COMMANDS or after the health check passed "
    "(VERIFY_PROCESSES); the instance goes back to the release before (its deploy script switches back itself, "
    "the rollback does it after the health check)",
    ReleaseExit.ARTIFACT_REFUSED: "the artifact holds an entry a release may not hold (a device node, FIFO or "
    "socket, a setuid, setgid or sticky bit, a path or link leading outside the release); nothing was unpacked or "
    "switched",
    ReleaseExit.STAGED_RELEASE_CHANGED: "the release this deploy staged on the instance changed between its staging "
    "and its switch (a file, link, mode or owner differs from the checksums recorded at staging); refused, nothing "
    "was switched, and the next deploy stages it again from the artifact",
    ReleaseExit.PROGRAM_MISSING: "a program release mode needs (bash, aws, sha256sum, python3, runuser/su) is "
    "missing on the instance",
}


def release_exit_meaning(code: int | None) -> str | None:
    """What a release script's exit code says happened on the instance, None for another code."""
    try:
        return ReleaseExit(code).meaning if code is not None else None
    except ValueError:
        return None


ARCHIVE_FORMATS = contents.FORMATS
STATE_DIR = ".ssm-deploy"
HISTORY_LIMIT = 1000  # lines of .ssm-deploy/history and .ssm-deploy/switches kept on the instance
RUNS_KEPT = 64  # the pipe runs .ssm-deploy/run remembers (ssm_deploy_once), the newest
# VERIFY_PROCESSES: how long a process of a replaced release (or one with an old value) may take to go
# away after ACTIVATE_COMMANDS returned (a graceful stop) before the instance fails
VERIFY_GRACE_SECONDS = 10
# a process this young whose command line names no path under APP_DIR is looked at again: pm2 sets
# its title after the fork
VERIFY_SETTLE_SECONDS = 3
PM2_FIX = (
    "for pm2: set cwd: '{app_dir}/current' in the ecosystem file and list every variable the app reads "
    "(SECRETS, PARAMETERS_PATH, VARIABLES) from process.env in its env_<environment> block; an app first started "
    "without cwd, renamed, or no longer in the ecosystem file (it keeps running from the release it last started "
    "in) needs `pm2 delete <name>` once"
)
# Set by the SSM Agent for every Run Command script; forwarded to RUN_AS with the pipe's names.
AGENT_VARIABLES = ("AWS_SSM_INSTANCE_ID", "AWS_SSM_REGION_NAME")
# The release COMMANDS and ACTIVATE_COMMANDS run for (after a switch back: the one activated again)
RELEASE_VARIABLE = "SSM_DEPLOY_RELEASE"
# The last line of every release script's stdout: where APP_DIR/current points as it ends
CURRENT_REPORT = "ssm-deploy: current release: "
NO_RELEASE_REPORTED = "(none)"  # current points to no release (missing, or not into releases/)
READ_LOCK_SECONDS = 30  # the read command waits this long for a release script still running
# The status read's processes of another release than current's: a count, then one line per process
# for the first PROCESSES_SHOWN of them (a Run Command's output shown by GetCommandInvocation is bounded)
PROCESSES_REPORT = "ssm-deploy: processes of other releases: "
PROCESS_REPORT = "ssm-deploy: process of another release: "
PROCESSES_NOT_READ = "not read: "
PROCESSES_SHOWN = 20
_REPORTED_ID = re.compile(r"[0-9a-z-]+", re.ASCII)  # what ssm_deploy_release_of prints
_SHOWN_RELEASE = re.compile(r"[0-9a-z?-]+", re.ASCII)  # a release directory's name as the list shows it

_SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_REGION = re.compile(r"[a-z0-9-]{1,32}", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_RUN_ID = re.compile(r"[0-9A-Za-z-]{1,64}", re.ASCII)


@dataclass(frozen=True)
class ReleasePlan:
    """One release to install (or switch back from) on every instance of a command."""

    app_dir: str
    release_id: str
    artifact_url: str  # s3://bucket/key: downloaded only when releases/<id> is missing
    sha256: str  # hex
    archive_format: str  # "tar.gz" or "zip"
    region: str
    shared_paths: tuple[str, ...] = ()
    run_as: str | None = None
    commands: str = ""  # COMMANDS, run inside releases/<id> before the switch
    activate_commands: str = ""  # ACTIVATE_COMMANDS, run inside `current` after the switch
    keep_releases: int = DEFAULT_KEEP_RELEASES
    # the release the ledger says is live before this deploy: never pruned, whatever an instance's own
    # history says (a stopped deploy can leave an instance ahead of the ledger), as a rollback goes back to it
    live_release: str = ""
    # the release RELEASE: previous goes back to once this deploy succeeds, where it is not the live one (a
    # redeploy of the live build under a new id: RELEASE: previous passes over both): never pruned either
    back_to: str = ""
    # the release RELEASE: previous goes back to before this deploy, and still after it where it fails (the
    # ledger's live release stays live): never pruned by this deploy, which prunes before it knows the outcome
    back_now: str = ""
    # names the prelude exported (SECRETS, PARAMETERS_PATH, VARIABLES) that must reach RUN_AS's commands
    env_names: tuple[str, ...] = ()
    # VERIFY_PROCESSES: after ACTIVATE_COMMANDS, no process may run a replaced release, and those running
    # this one must hold the values of env_names this deploy exported
    verify_processes: bool = True
    verify_grace: int = VERIFY_GRACE_SECONDS  # the pipe keeps these; the tests of the check shorten them
    verify_settle: int = VERIFY_SETTLE_SECONDS

    def __post_init__(self) -> None:
        problems = plan_problems(self)
        if problems:
            raise ValueError("; ".join(problems))


def plan_problems(plan: ReleasePlan) -> list[str]:
    """Every reason the plan cannot be rendered safely (the pipe validates user input before this)."""
    checks = [
        app_dir_problem(plan.app_dir),
        release_id_problem(plan.release_id),
        release_id_problem(plan.live_release) if plan.live_release else None,
        release_id_problem(plan.back_to) if plan.back_to else None,
        release_id_problem(plan.back_now) if plan.back_now else None,
        run_as_problem(plan.run_as) if plan.run_as is not None else None,
        *(shared_path_problem(path) for path in plan.shared_paths),
        *(_env_name_problem(name) for name in plan.env_names),
    ]
    if not plan.artifact_url.startswith("s3://") or _CONTROL.search(plan.artifact_url):
        checks.append(f"artifact_url {plan.artifact_url!r} must be an s3:// URL")
    if not _SHA256.fullmatch(plan.sha256):
        checks.append("sha256 must be 64 lowercase hex digits")
    if plan.archive_format not in ARCHIVE_FORMATS:
        checks.append(f"archive_format must be one of {', '.join(ARCHIVE_FORMATS)}")
    if not _REGION.fullmatch(plan.region):
        checks.append(f"region {plan.region!r} is not an AWS region name")
    if plan.keep_releases < MIN_KEEP_RELEASES:
        checks.append(f"KEEP_RELEASES must be at least {MIN_KEEP_RELEASES} (the live release and the one before it)")
    return [problem for problem in checks if problem]


def _env_name_problem(name: str) -> str | None:
    return None if ENV_NAME.fullmatch(name) else f"{name!r} is not an environment variable name"


# --- the shell ------------------------------------------------------------------------------------

# Running user commands. ssm_deploy_run USER DIR COMMANDS runs COMMANDS with bash in DIR, with stdin
# /dev/null; exit status = theirs. With USER: a login shell (runuser -l / su -l), so HOME, PATH and the
# rest come from that user's ~/.bash_profile or ~/.profile (nvm, the user's pm2 daemon). The names in
# ssm_deploy_env_names travel as `export NAME='value'` lines through an inherited pipe on fd 3, read
# by a bash builtin: never in any argv (ps), never in a file. Every printf/eval on a value is a shell
# builtin, so no process is exec'd with a value in its arguments. Every user command gets fd 9 (the
# deploy lock) closed: a daemon it starts (pm2) would otherwise hold the lock and the next deploy wait.
_RUN_FUNCTIONS = r"""
ssm_deploy_at_exit() { :; }
ssm_deploy_fail() {
  ssm_deploy_code=$1
  shift
  printf 'ssm-deploy: %s\n' "$*" >&2
  ssm_deploy_at_exit
  exit "$ssm_deploy_code"
}
ssm_deploy_need() {
  command -v "$1" >/dev/null 2>&1 || ssm_deploy_fail 127 "$1 is not on PATH on this instance; it is needed $2: install it"
}
ssm_deploy_sq="'"
ssm_deploy_quote() {
  ssm_deploy_rest=$1
  ssm_deploy_out=
  while :; do
    case $ssm_deploy_rest in
      *"$ssm_deploy_sq"*)
        ssm_deploy_out=$ssm_deploy_out${ssm_deploy_rest%%"$ssm_deploy_sq"*}"'\''"
        ssm_deploy_rest=${ssm_deploy_rest#*"$ssm_deploy_sq"}
        ;;
      *) break ;;
    esac
  done
  printf "'%s%s'" "$ssm_deploy_out" "$ssm_deploy_rest"
}
ssm_deploy_env_lines() {
  for ssm_deploy_name in $ssm_deploy_env_names; do
    eval "ssm_deploy_isset=\${$ssm_deploy_name+x}"
    [ -n "$ssm_deploy_isset" ] || continue
    eval "ssm_deploy_value=\$$ssm_deploy_name"
    printf 'export %s=' "$ssm_deploy_name"
    ssm_deploy_quote "$ssm_deploy_value"
    printf '\n'
  done
}
ssm_deploy_run() {
  ssm_deploy_script="cd -- $(ssm_deploy_quote "$2") || exit 1
$3"
  if [ -z "$1" ]; then
    ssm_deploy_need bash "to run the commands"
    bash -c "$ssm_deploy_script" ssm-deploy </dev/null 9>&-
    return
  fi
  ssm_deploy_need bash "to run the commands as $1"
  ssm_deploy_bash=$(command -v bash)
  ssm_deploy_switch=runuser
  command -v runuser >/dev/null 2>&1 || ssm_deploy_switch=su
  ssm_deploy_need "$ssm_deploy_switch" "to run the commands as $1"
  ssm_deploy_script="IFS= read -r -d '' ssm_deploy_env <&3 || :
exec 3<&-
eval \"\$ssm_deploy_env\" || { echo 'ssm-deploy: SECRETS and VARIABLES could not be handed to RUN_AS' >&2; exit 1; }
unset ssm_deploy_env
$ssm_deploy_script"
  ssm_deploy_env_lines | "$ssm_deploy_switch" -l -s "$ssm_deploy_bash" -c "$ssm_deploy_script" "$1" 3<&0 </dev/null 9>&-
}
"""  # noqa: E501 (each message is one line on the instance)

# Run as RUN_AS by `sh -c` (no login environment, nothing forwarded): make shared/<path> and link it
# from the release. As RUN_AS, because root must not create files through links that user controls.
# Arguments: SHARED_DIR RELEASE_DIR KIND:PATH... (KIND: D directory, d guessed directory, f guessed file)
_SHARED_SCRIPT = r"""ssm_shared=$1
ssm_release=$2
shift 2
for ssm_spec in "$@"; do
  ssm_kind=${ssm_spec%%:*}
  ssm_path=${ssm_spec#*:}
  ssm_target=$ssm_shared/$ssm_path
  ssm_link=$ssm_release/$ssm_path
  if [ ! -e "$ssm_target" ] && [ ! -L "$ssm_target" ]; then
    mkdir -p -- "$(dirname -- "$ssm_target")" || exit 1
    if [ -e "$ssm_link" ] || [ -L "$ssm_link" ]; then
      mv -- "$ssm_link" "$ssm_target" || exit 1
    elif [ "$ssm_kind" = f ]; then
      : > "$ssm_target" || exit 1
    else
      mkdir -- "$ssm_target" || exit 1
    fi
  fi
  if [ "$ssm_kind" = D ] && [ ! -d "$ssm_target" ]; then
    echo "SHARED_PATHS $ssm_path/ names a directory but $ssm_target is not one" >&2
    exit 1
  fi
  rm -rf -- "$ssm_link" || exit 1
  mkdir -p -- "$(dirname -- "$ssm_link")" || exit 1
  ln -s -- "$ssm_target" "$ssm_link" || exit 1
done
"""


# Run as RUN_AS (or root without it) by `sh -c`: the manifest of release directory $1, in C order:
# every entry (type, mode, owner, path, link target), then every regular file's SHA-256.
_MANIFEST_SCRIPT = r"""cd -- "$1" || exit 1
LC_ALL=C
export LC_ALL
entries=$(find . -printf '%y %m %U:%G %p -> %l\n') || exit 1  # an entry it cannot list fails it
printf '%s\n' "$entries" | sort || exit 1
find . -type f -print0 | sort -z | xargs -0 -r sha256sum -- || exit 1
"""

# Reading which release ``current`` points to: the release scripts report it as their last stdout line
# on every path they control (``ssm_deploy_at_exit``), and the read command sends only this.
_READ_FUNCTIONS = r"""
ssm_deploy_release_of() {
  case $1 in
    releases/*) ssm_deploy_id=${1#releases/} ;;
    "$ssm_deploy_app_dir"/releases/*) ssm_deploy_id=${1#"$ssm_deploy_app_dir"/releases/} ;;
    *) return 0 ;;
  esac
  # `ln -sfn releases/X/ current` (a shell's completion adds the slash) points at release X too
  ssm_deploy_id=${ssm_deploy_id%/}
  case $ssm_deploy_id in
    '' | */* | *[!0-9a-z-]*) ;;
    *) printf '%s' "$ssm_deploy_id" ;;
  esac
}
ssm_deploy_report() {
  ssm_deploy_reported=$(readlink -- "$ssm_deploy_app_dir/current" 2>/dev/null) || ssm_deploy_reported=
  ssm_deploy_reported=$(ssm_deploy_release_of "$ssm_deploy_reported")
  # current on a release directory that is gone (deleted by hand): the instance runs no release, whatever it names
  if [ -n "$ssm_deploy_reported" ] && [ ! -d "$ssm_deploy_app_dir/releases/$ssm_deploy_reported" ]; then
    echo "ssm-deploy: $ssm_deploy_app_dir/current points at releases/$ssm_deploy_reported, which is missing"
    ssm_deploy_reported=
  fi
  # a current that is no symlink (a copy, a directory made by hand): a deploy refuses it (exit 80), and
  # that refusal says so itself (ssm_deploy_refused_current): the note once
  [ -n "$ssm_deploy_refused_current" ] \
    || [ -L "$ssm_deploy_app_dir/current" ] || [ ! -e "$ssm_deploy_app_dir/current" ] \
    || printf '%s%s\n' "ssm-deploy: $ssm_deploy_app_dir/current exists and is not a symlink (it was not made by " \
      "ssm-deploy): a deploy refuses it until it is moved away"
  printf '%s%s\n' "$ssm_deploy_current_report" "${ssm_deploy_reported:-$ssm_deploy_no_release}"
}
"""

# The process scan (VERIFY_PROCESSES): the deploy and the switch back run it after ACTIVATE_COMMANDS and
# after the health check; the status read (read_current_body with processes) runs it to list the processes
# of another release than the one current points to. One scanner for both: nothing here reads a value.
_SCAN_FUNCTIONS = r"""
# VERIFY_PROCESSES. A process runs from release X (a directory in releases/) when its executable is
# in releases/X, or its working directory is releases/X (or below) and one of its arguments is a path
# under APP_DIR (absolute, or relative to that directory) or a Python module there (`python3 -m worker`:
# ssm_deploy_module_file), or it listens on a socket (a server started
# there: `python3 -m http.server`, `gunicorn app:app`). pm2's daemon keeps the directory pm2 was first
# run in but runs pm2's own code (and holds an app's port in cluster mode), so a directory alone
# condemns nothing and the daemon, known by its title, is never judged by it; nor is a terminal
# multiplexer's server (ssm_deploy_holder). pm2 rewrites a
# process's title (`node /srv/web-api/current/server.js` as one string), so arguments are the words
# of the command line. Paths are judged by the file they are (-ef), not by their name: a process of
# another mount namespace (a container) with the same path is not this APP_DIR's. Values are compared
# on the instance, in awk (ssm_deploy_compare): never in an argument, a file or the output.
ssm_deploy_judge() {
  ssm_deploy_pid=$1
  ssm_deploy_from=
  ssm_deploy_since=
  ssm_deploy_other_ns=
  [ "$(readlink "/proc/$ssm_deploy_pid/ns/mnt" 2>/dev/null)" = "$ssm_deploy_mnt" ] || ssm_deploy_other_ns=1
  ssm_deploy_deleted_release "$ssm_deploy_pid" && return 0
  if ssm_deploy_through_current "$ssm_deploy_pid"; then
    if [ -z "$ssm_deploy_after" ]; then
      ssm_deploy_stale "$ssm_deploy_pid" "$ssm_deploy_before" running \
        "release $ssm_deploy_before, not $ssm_deploy_release: it was started through $ssm_deploy_app_dir/current before the switch"
      return 0
    fi
    # started since the switch: the release current points to, where its directory does not say
    case $(readlink "/proc/$ssm_deploy_pid/cwd" 2>/dev/null) in
      "$ssm_deploy_releases"/?*) ;;
      *) ssm_deploy_since=1 ;;
    esac
  fi
  ssm_deploy_path=$(readlink "/proc/$ssm_deploy_pid/exe" 2>/dev/null) || ssm_deploy_path=
  case $ssm_deploy_path in
    "$ssm_deploy_releases"/?*/?*)
      if [ "/proc/$ssm_deploy_pid/exe" -ef "$ssm_deploy_path" ]; then
        ssm_deploy_from=${ssm_deploy_path#"$ssm_deploy_releases"/}
        ssm_deploy_from=${ssm_deploy_from%%/*}
      fi
      ;;
  esac
  # a command with a controlling terminal (an operator's `less /srv/app/releases/<id>/config.js`) is
  # judged only as a server: the paths among its words condemn it only when it listens
  if [ -z "$ssm_deploy_from" ] && { ! ssm_deploy_has_terminal "$ssm_deploy_pid" || ssm_deploy_listens "$ssm_deploy_pid"; }; then
    ssm_deploy_from=$(ssm_deploy_release_in_words "$ssm_deploy_pid")
    # a container's files (attack 30: `docker run -v /srv/app/current:/app ... node /app/server.js`)
    if [ -z "$ssm_deploy_from" ] && [ -n "$ssm_deploy_other_ns" ]; then
      ssm_deploy_from=$(ssm_deploy_words_of "$ssm_deploy_pid" | ssm_deploy_in_releases | awk '$2 != "-" && NF == 2 { print $2; exit }')
      [ -z "$ssm_deploy_from" ] || ssm_deploy_since=1
    fi
  fi
  [ -z "$ssm_deploy_from$ssm_deploy_since" ] || ssm_deploy_from=${ssm_deploy_from:-$ssm_deploy_release}
  if [ -z "$ssm_deploy_from" ]; then
    ssm_deploy_path=$(readlink "/proc/$ssm_deploy_pid/cwd" 2>/dev/null) || return 0
    # the release its working directory is in
    ssm_deploy_here=
    case $ssm_deploy_path in
      "$ssm_deploy_releases"/?*)
        if [ "/proc/$ssm_deploy_pid/cwd" -ef "$ssm_deploy_path" ]; then
          ssm_deploy_here=${ssm_deploy_path#"$ssm_deploy_releases"/}
          ssm_deploy_here=${ssm_deploy_here%%/*}
        fi
        ;;
    esac
    # a container's working directory (/app, a volume that is a release directory, or one in it)
    if [ -z "$ssm_deploy_here" ] && [ -n "$ssm_deploy_other_ns" ]; then
      ssm_deploy_here=$(printf '/proc/%s %s\n' "$ssm_deploy_pid" "$ssm_deploy_path" | ssm_deploy_in_releases | awk '$2 != "-" && NF == 2 { print $2; exit }')
      [ -z "$ssm_deploy_here" ] || ssm_deploy_since=1
    fi
    # nothing here: its release may have been deleted since this judge's first look (a concurrent prune:
    # the check after the health check takes no lock), which condemns it as a deleted copy
    [ -n "$ssm_deploy_here" ] || { ssm_deploy_deleted_release "$ssm_deploy_pid"; return 0; }
    ssm_deploy_words=$(tr '\0' ' ' 2>/dev/null < "/proc/$ssm_deploy_pid/cmdline") || return 0
    # a command with a controlling terminal (an operator's `tail -f app.log` or `less` in a release over
    # ssh) is no service: its directory and words condemn nothing (a server among them still does)
    ssm_deploy_has_terminal "$ssm_deploy_pid" && ssm_deploy_words=
    for ssm_deploy_word in $ssm_deploy_words; do
      case $ssm_deploy_word in
        "$ssm_deploy_app_dir"/* | "$ssm_deploy_physical"/*) ;;
        /* | .. | ../* | */../* | */..) continue ;;
        *)
          [ -e "/proc/$ssm_deploy_pid/cwd/$ssm_deploy_word" ] \
            || ssm_deploy_module_file "/proc/$ssm_deploy_pid/cwd" "$ssm_deploy_word" || continue
          ;;
      esac
      ssm_deploy_from=$ssm_deploy_here
      break
    done
    if [ -z "$ssm_deploy_from" ] && ! ssm_deploy_holder "$ssm_deploy_pid" && ssm_deploy_listens "$ssm_deploy_pid"; then
      ssm_deploy_from=$ssm_deploy_here
    fi
    if [ -z "$ssm_deploy_from" ]; then
      ssm_deploy_deleted_release "$ssm_deploy_pid" && return 0
      # a process ACTIVATE_COMMANDS started a moment ago may not have its final command line yet (pm2
      # sets the title after the fork): one without a path under APP_DIR is looked at again until it
      # is older; one born after the check began (a service's own short-lived child) is not waited for
      if [ -n "$2" ]; then
        ssm_deploy_started=$(ssm_deploy_stat "$ssm_deploy_pid" 20)
        if [ -n "$ssm_deploy_started" ] && [ "$ssm_deploy_started" -le "$ssm_deploy_began" ] \
          && [ $((ssm_deploy_now - ssm_deploy_started)) -lt "$ssm_deploy_settle_ticks" ]; then
          echo "settling $ssm_deploy_pid"
        fi
      fi
      return 0
    fi
  fi
  if [ "$ssm_deploy_from" != "$ssm_deploy_release" ]; then
    ssm_deploy_stale "$ssm_deploy_pid" "$ssm_deploy_from" running "release $ssm_deploy_from, not $ssm_deploy_release"
    return 0
  fi
  if [ -n "$ssm_deploy_back" ]; then  # after a switch back: the release's processes hold what they were started with
    echo "ok $ssm_deploy_pid"
    return 0
  fi
  ssm_deploy_command=$(ssm_deploy_shown_command "$ssm_deploy_pid")
  ssm_deploy_bad=
  ssm_deploy_differs=$(ssm_deploy_compare "$ssm_deploy_pid")
  [ -d "/proc/$ssm_deploy_pid" ] || return 0
  case $ssm_deploy_differs in
    unreadable)
      echo "unread $ssm_deploy_pid"
      return 0
      ;;
  esac
  for ssm_deploy_name in $ssm_deploy_differs; do
    ssm_deploy_bad=1
    case $ssm_deploy_name in
      -*)
        # a process its own manager started through current since the switch (a proxy, a systemd unit)
        # has its manager's environment: a name it lacks is one it does not read, only an old value condemns
        [ -z "$ssm_deploy_since" ] || continue
        printf 'process %s (%s) runs release %s without %s, which this deploy exported\n' "$ssm_deploy_pid" "$ssm_deploy_command" "$ssm_deploy_from" "${ssm_deploy_name#-}"
        ;;
      *)
        printf 'process %s (%s) runs release %s with an old value of %s, not the one this deploy exported\n' "$ssm_deploy_pid" "$ssm_deploy_command" "$ssm_deploy_from" "$ssm_deploy_name"
        ;;
    esac
  done
  [ -n "$ssm_deploy_bad" ] || echo "ok $ssm_deploy_pid"
}
ssm_deploy_stale() {
  # process $1 runs release $2 ($3: running, or deleted: a copy deleted since it started), not the one
  # judged: the deploy's line says "process PID (its command) runs $4". The status read (ssm_deploy_listing)
  # gets "stale PID running|deleted RELEASE" alone: it knows no value to mask a command line with
  if [ -n "$ssm_deploy_listing" ]; then
    printf 'stale %s %s %s\n' "$1" "$3" "$2"
  else
    printf 'process %s (%s) runs %s\n' "$1" "$(ssm_deploy_shown_command "$1")" "$4"
  fi
}
ssm_deploy_module_file() {
  # whether word $2 names a Python module or package in directory $1, as a worker run from its release
  # names its code (`python3 -m worker`, `celery -A tasks worker`, `huey_consumer tasks.huey`,
  # `--app=app.worker:main`): worker.py, tasks.py, app/worker.py or app/worker/__init__.py
  ssm_deploy_module=${2#-*=}
  ssm_deploy_module=${ssm_deploy_module%%:*}
  case $ssm_deploy_module in
    '' | [!A-Za-z_]* | *[!A-Za-z0-9_.]* | *..* | *.) return 1 ;;
  esac
  ssm_deploy_module=$(printf '%s' "$ssm_deploy_module" | tr . /)
  while :; do
    if [ -f "$1/$ssm_deploy_module.py" ] || [ -f "$1/$ssm_deploy_module/__init__.py" ]; then
      return 0
    fi
    case $ssm_deploy_module in
      # tasks.huey: an attribute of tasks.py
      */*) ssm_deploy_module=${ssm_deploy_module%/*} ;;
      *) return 1 ;;
    esac
  done
}
ssm_deploy_compare() {
  # the names of ssm_deploy_verify_names this deploy exported whose value process $1 does not hold:
  # NAME for another value, -NAME for none; "unreadable" when its environment holds no NAME=value entry
  # at all (a title written over its memory: puma, gunicorn with setproctitle, nginx, perl's $0), as
  # nothing can be compared. The values are compared in awk, read from its own environment (this
  # deploy's) and from /proc/$1/environ: never an argument, a file or the output. The environment is
  # the one the process runs with: pm2's cluster workers (ProcessContainer.js) set every top-level
  # string of the pm2_env JSON they were started with into process.env, over the daemon's environment
  # they inherited, so those values count. An environ root cannot open (ptrace restricted) is
  # "unreadable" too; an empty one is no title written over it: a process started with an empty
  # environment (`env -i`) holds none of the names, and lacks each (attack 26)
  true 2>/dev/null < "/proc/$1/environ" || { echo unreadable; return; }
  ssm_deploy_environ "$1" | ssm_deploy_names=$ssm_deploy_verify_names awk '
    function json_string(   out, c, code) {  # the JSON string at text[at] (a quote); at: after it
      out = ""
      for (at++; at <= size; at++) {
        c = substr(text, at, 1)
        if (c == "\"") { at++; return out }
        if (c != "\\") { out = out c; continue }
        c = substr(text, ++at, 1)
        if (c == "n") out = out "\001"
        else if (c == "t") out = out "\t"
        else if (c == "r") out = out "\r"
        else if (c == "b") out = out "\b"
        else if (c == "f") out = out "\f"
        else if (c == "u") {
          code = hex(substr(text, at + 1, 4))
          at += 4
          if (code < 1 || code > 127) undecidable = 1
          else out = out (code == 10 ? "\001" : sprintf("%c", code))
        } else out = out c  # \" \\ \/
      }
      undecidable = 1
      return out
    }
    function hex(digits,   i, n) {
      n = 0
      for (i = 1; i <= 4; i++) n = n * 16 + index("0123456789abcdef", tolower(substr(digits, i, 1))) - 1
      return n
    }
    function skip_value(   depth, c) {  # past the object or array at text[at]
      depth = 0
      while (at <= size) {
        c = substr(text, at, 1)
        if (c == "\"") { json_string(); continue }
        at++
        if (c == "{" || c == "[") depth++
        else if ((c == "}" || c == "]") && --depth == 0) return
      }
    }
    function blanks() { while (at <= size && substr(text, at, 1) ~ /[ \t\r\001]/) at++ }
    function pm2(json,   key, c, start, literal) {  # the top-level strings and literals of the pm2_env JSON
      text = json; size = length(text); at = 1
      blanks()
      if (substr(text, at, 1) != "{") return
      at++
      for (;;) {
        blanks()
        if (substr(text, at, 1) != "\"") return
        key = json_string()
        blanks()
        if (substr(text, at, 1) != ":") return
        at++
        blanks()
        c = substr(text, at, 1)
        undecidable = 0
        if (c == "\"") {
          held[key] = json_string()
          if (undecidable) unknown[key] = 1
        } else if (c == "{" || c == "[") {
          skip_value()
          unknown[key] = 1  # "[object Object]", a joined array: not compared
        } else {
          start = at
          while (at <= size && substr(text, at, 1) !~ /[,} \t\r\001]/) at++
          # a number, true, false, null: process.env holds its text
          held[key] = substr(text, start, at - start)
        }
        blanks()
        if (substr(text, at, 1) != ",") return
        at++
      }
    }
    match($0, /^[A-Za-z_][A-Za-z0-9_]*=/) {
      entries++
      name = substr($0, 1, RLENGTH - 1)
      if (!(name in held)) held[name] = substr($0, RLENGTH + 1)
      if (name == "pm2_env") json = substr($0, RLENGTH + 1)
    }
    END {
      if (NR && !entries) { print "unreadable"; exit }
      if (json != "") {
        delete held["pm2_env"]
        pm2(json)
      }
      # pm2 gives each further instance of an app its own value of the name its increment_var names
      # (PORT + 1, + 2: God.js), over the one it was handed: that value is set by pm2, not compared. A
      # fork-mode process has the top-level keys of pm2_env as its environment, a cluster worker in the JSON
      if ("pm_id" in held && "increment_var" in held) unknown[held["increment_var"]] = 1
      count = split(ENVIRON["ssm_deploy_names"], names, " ")
      for (i = 1; i <= count; i++) {
        name = names[i]
        if (!(name in ENVIRON) || (name in unknown)) continue
        want = ENVIRON[name]
        gsub(/\n/, "\001", want)
        if (!(name in held)) print "-" name
        else if (held[name] != want) print name
      }
    }'
}
ssm_deploy_environ() {
  # process $1's environment, one NAME=value a line, a newline inside a value as \001 (for awk: the
  # values are compared or masked there, never an argument or a file)
  tr '\0\n' '\n\001' 2>/dev/null < "/proc/$1/environ"
}
ssm_deploy_stat() {
  # field $2 of /proc/$1/stat, counted from the state after the command name (5: the controlling
  # terminal, 20: the start time in clock ticks since boot)
  sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d ' ' -f "$2"
}
ssm_deploy_has_terminal() {
  [ "$(ssm_deploy_stat "$1" 5)" != 0 ]
}
ssm_deploy_holder() {
  # a process that holds others and runs its own code wherever its directory is, so neither its
  # directory nor its socket make it a server of a release: pm2's God Daemon, known by the title pm2
  # gives it, and a terminal multiplexer's server (an operator's detached tmux or GNU screen session,
  # listening on its Unix socket), known by its executable; what runs inside either is judged for itself
  case $(tr '\0' ' ' 2>/dev/null < "/proc/$1/cmdline") in
    "PM2 v"*": God Daemon "*) return 0 ;;
  esac
  case $(readlink "/proc/$1/exe" 2>/dev/null) in
    */bin/tmux | */bin/screen | */bin/screen-[0-9]*) return 0 ;;
  esac
  return 1
}
ssm_deploy_deleted_release() {
  # a process whose executable or working directory is in a release directory deleted since it started
  # (the release was installed again under the same id, or pruned) runs code that is no longer on disk:
  # never the new release. Prints its line; false for any other process
  ssm_deploy_pruned=
  for ssm_deploy_link in exe cwd; do
    ssm_deploy_path=$(readlink "/proc/$1/$ssm_deploy_link" 2>/dev/null) || continue
    case $ssm_deploy_path in
      "$ssm_deploy_releases"/?*" (deleted)") ;;
      *) continue ;;
    esac
    # this APP_DIR's releases in the process's own mount namespace (not a container's, another host's)
    [ "/proc/$1/root$ssm_deploy_releases" -ef "$ssm_deploy_releases" ] || continue
    # a directory alone condemns nothing, as one that exists (attack 50): neither a holder (pm2's daemon,
    # an operator's tmux: ssm_deploy_holder) nor a process that neither listens nor, without a terminal,
    # has a word that may name a file of it (ssm_deploy_may_name)
    if [ "$ssm_deploy_link" = cwd ]; then
      ! ssm_deploy_holder "$1" || continue
      ssm_deploy_listens "$1" || { ! ssm_deploy_has_terminal "$1" && ssm_deploy_may_name "$1"; } || continue
    fi
    ssm_deploy_path=${ssm_deploy_path#"$ssm_deploy_releases"/}
    ssm_deploy_path=${ssm_deploy_path%" (deleted)"}
    ssm_deploy_pruned=${ssm_deploy_path%%/*}
    break
  done
  # neither a holder nor a command with a terminal that does not listen, as above: a path among its
  # words in a release directory gone since, where it sees this APP_DIR's releases (ssm_deploy_release_in_words
  # gone: `python3 /srv/app/releases/<id>/server.py` started from /); a container's (ssm_deploy_other_ns):
  # its working directory or a path among its words in a release bound to it (a volume, a single file)
  # that was deleted since (ssm_deploy_in_releases: its mountinfo), its own paths that name no release (`/app (deleted)`)
  if [ -z "$ssm_deploy_pruned" ] && ! ssm_deploy_holder "$1" \
    && { ! ssm_deploy_has_terminal "$1" || ssm_deploy_listens "$1"; }; then
    [ ! "/proc/$1/root$ssm_deploy_releases" -ef "$ssm_deploy_releases" ] \
      || ssm_deploy_pruned=$(ssm_deploy_release_in_words "$1" gone)
    [ -n "$ssm_deploy_pruned" ] || [ -z "$ssm_deploy_other_ns" ] \
      || ssm_deploy_pruned=$( { ! ssm_deploy_may_name "$1" && ! ssm_deploy_listens "$1" || printf '/proc/%s %s\n' "$1" "$(readlink "/proc/$1/cwd")"; ssm_deploy_words_of "$1"; } 2>/dev/null \
        | ssm_deploy_in_releases | awk '$3 == "deleted" { print $2; exit }')
  fi
  [ -n "$ssm_deploy_pruned" ] || return 1
  ssm_deploy_stale "$1" "$ssm_deploy_pruned" deleted \
    "a copy of release $ssm_deploy_pruned that was deleted since it started, not the $ssm_deploy_release installed now"
}
ssm_deploy_may_name() {
  # whether a word of process $1's command line after its program may name a file in its working
  # directory, deleted with its entries (which cannot be looked up, so every such word counts): not an
  # option (-x, --long), a number (a duration, a port), a word with .., an absolute path outside APP_DIR
  # (a container's paths are judged by its mounts)
  tr '\0\n' '  ' 2>/dev/null < "/proc/$1/cmdline" | awk -v a="$ssm_deploy_app_dir/" -v p="$ssm_deploy_physical/" '
    { for (i = 2; i <= NF; i++) if ($i !~ /^-[^=]*$|^[0-9.]+$|(^|\/)\.\.(\/|$)/ && ($i !~ /^\// || index($i, a) == 1 || index($i, p) == 1)) f = 1 }
    END { exit !f }'
}
ssm_deploy_through_current() {
  # whether process $1 was started through APP_DIR/current (systemd's ExecStart=/usr/bin/node
  # /srv/app/current/server.js with no WorkingDirectory=, or WorkingDirectory=/srv/app with
  # ExecStart=... current/server.js), so the kernel resolved current to the release it pointed to then:
  # a word of its command line is a file under APP_DIR/current (absolute, or relative to a working
  # directory that is APP_DIR itself). Started before current last changed to another release (both in
  # seconds since boot: the process's start time and what the switch wrote to .ssm-deploy/switches), it
  # runs the release before; started since (ssm_deploy_after: `systemctl restart` in ACTIVATE_COMMANDS),
  # the release current points to, and a value it holds is compared (ssm_deploy_since, in the judge: an
  # EnvironmentFile= written by the first deploy only holds a rotated secret's old value); reloaded in
  # place since the switch, it is not judged (it keeps the environment it started with).
  # Then a server (a listening socket) runs that release; so does any other process unless it
  # has a terminal (an operator's), the file is not a release's own (SHARED_PATHS: the same file for
  # every release), or it holds that file open, a reader following it (`tail -f current/logs/app.log`,
  # a log shipper), unless it is the script the process runs (ssm_deploy_script: a shell keeps it open
  # while it runs, perl for __DATA__); node or python read their script and close it, as does a
  # program its configuration.
  # A file the release current points to no longer has (an entry point renamed or removed: server.js
  # became dist/server.js, a unit's ExecStart= changed but not restarted) is judged as the file it was in
  # the release current pointed to when the process started (the first switch after it): what it runs
  ssm_deploy_through=
  ssm_deploy_gone=
  ssm_deploy_n=0
  for ssm_deploy_word in $(tr '\0' ' ' 2>/dev/null < "/proc/$1/cmdline"); do
    ssm_deploy_n=$((ssm_deploy_n + 1))
    # the word as the process sees it: under its root (ssm_deploy_seen), or its working directory
    ssm_deploy_seen=/proc/$1/root
    case $ssm_deploy_word in
      *=/*) ssm_deploy_word=/${ssm_deploy_word#*=/} ;;
      current | current/?* | ./current | ./current/?*)
        ssm_deploy_seen=/proc/$1/cwd
        ssm_deploy_word=/${ssm_deploy_word#./}
        ;;
    esac
    # a directory as the program of node or python (`node /srv/app/current`, `python3 /srv/app/current`:
    # their first argument) is its __main__.py or package.json, read once at start (attack 30)
    case $ssm_deploy_n$(readlink "/proc/$1/exe") in
      2/*/node* | 2/*/python*)
        for ssm_deploy_f in __main__.py package.json; do
          [ -f "$ssm_deploy_seen$ssm_deploy_word/$ssm_deploy_f" ] && ssm_deploy_word=$ssm_deploy_word/$ssm_deploy_f && break
        done ;;
    esac
    # a path under current of a directory (ssm_deploy_p) that is this APP_DIR by device and inode in the
    # process's own mount namespace: APP_DIR, or a container's volume that is APP_DIR (`docker run -v
    # /srv/app:/app ... node /app/current/server.js`, or `node current/server.js` in /app: attack 35), not
    # a container's own directory at the same path
    case $ssm_deploy_word in
      "$ssm_deploy_app_dir"/current/?*) ssm_deploy_p=$ssm_deploy_app_dir ;;
      "$ssm_deploy_physical"/current/?*) ssm_deploy_p=$ssm_deploy_physical ;;
      /current/?*) ssm_deploy_p= ;;
      /*/current/?*) ssm_deploy_p=${ssm_deploy_word%%/current/*} ;;
      *) continue ;;
    esac
    [ "$ssm_deploy_seen$ssm_deploy_p" -ef "$ssm_deploy_physical" ] || continue
    ssm_deploy_seen=$ssm_deploy_seen$ssm_deploy_word
    ssm_deploy_word=$ssm_deploy_physical${ssm_deploy_word#"$ssm_deploy_p"}
    # a file: the code it loaded when it started; a directory it serves (--directory, --root) it may
    # look up again on every request
    [ -f "$ssm_deploy_seen" ] && ssm_deploy_through=1 && break
    # the first word gone from current
    [ -e "$ssm_deploy_seen" ] || [ -n "$ssm_deploy_gone" ] || {
      ssm_deploy_gone=${ssm_deploy_word#"$ssm_deploy_physical"/current/}
      ssm_deploy_at=$ssm_deploy_n
    }
  done
  if [ -z "$ssm_deploy_through" ] && [ -n "$ssm_deploy_gone" ] && ssm_deploy_switch_before "$1"; then
    ssm_deploy_n=$ssm_deploy_at
    ssm_deploy_word=$ssm_deploy_releases/$ssm_deploy_before/$ssm_deploy_gone
    [ ! -f "$ssm_deploy_word" ] || ssm_deploy_through=1
  fi
  [ -n "$ssm_deploy_through" ] || return 1
  ssm_deploy_after=
  if ! ssm_deploy_switch_before "$1"; then
    ssm_deploy_after=1
  elif ssm_deploy_reloaded "$1"; then
    return 1
  fi
  ! ssm_deploy_listens "$1" || return 0
  ! ssm_deploy_has_terminal "$1" || return 1
  ssm_deploy_named=$(readlink -f -- "$ssm_deploy_word" 2>/dev/null) || return 1
  case $ssm_deploy_named in
    "$ssm_deploy_releases"/?*/?*) ;;
    *) return 1 ;;
  esac
  ! ssm_deploy_script "$1" "$ssm_deploy_n" || return 0
  # held open: a descriptor of it is the same path in a release (the one current pointed to then)
  ! find "/proc/$1/fd" -mindepth 1 -maxdepth 1 -printf '%l\n' 2>/dev/null \
    | ssm_deploy_prefix=$ssm_deploy_releases/ ssm_deploy_rest=/${ssm_deploy_named#"$ssm_deploy_releases"/*/} awk '
      { sub(/ \(deleted\)$/, "") }
      index($0, ENVIRON["ssm_deploy_prefix"]) == 1 && substr($0, length($0) - length(ENVIRON["ssm_deploy_rest"]) + 1) == ENVIRON["ssm_deploy_rest"] { found = 1 }
      END { exit !found }'
}
ssm_deploy_script() {
  # whether word $2 of process $1's command line is the script it runs, which it holds open: the
  # process is a shell (dash, bash, busybox's sh: known by its first word) or perl, and the word is the
  # first after it and its options (`sh -e -o nounset script`, or the kernel's `/bin/sh script` for an
  # executable script run directly). After a shell's -c or perl's -e (`-lne`) the code is a word, after a
  # shell's -s it comes on stdin, and a file is an argument (`sh -c '... < "$0"' current/logs/app.log`,
  # `... | sh -s current/logs/app.log` follow it: attack 42); an option's argument in a
  # word of its own, but a shell's -o or -O name (`perl -I lib script`, `bash --rcfile f script`), ends
  # the options: such a script passes for a reader
  ssm_deploy_shell=$(ssm_deploy_interpreter "$1") || return 1
  tr '\0\n' '  ' 2>/dev/null < "/proc/$1/cmdline" | awk -v n="$2" -v exe="$ssm_deploy_shell" '
    { code = exe ~ /^perl/ ? "^-[a-z0-9]*[eE]" : "^-[a-zA-Z]*[cs]"
      for (i = 2; i < n; i++) if ($i ~ code || ($i !~ /^[-+]/ && $(i - 1) !~ /^[-+][oO]$/)) exit 1
      found = n >= 2 }
    END { exit !found }'
}
ssm_deploy_interpreter() {
  # the name of process $1's program when it is a shell (dash, bash, busybox's sh: known by its first
  # word) or perl, which run a script: neither reloads in place, and the children it forks (a subshell
  # runs its own executable as long as it lives; a command, for the moment before it runs) are its work.
  # Its executable replaced by a package upgrade since it started reads "/usr/bin/bash (deleted)"
  tr '\0\n' '  ' 2>/dev/null < "/proc/$1/cmdline" | awk -v exe="$(readlink "/proc/$1/exe" 2>/dev/null)" '
    { sub(/ \(deleted\)$/, "", exe)
      if (exe ~ /\/busybox$/) exe = $1
      sub(/.*\//, "", exe)
      if (exe ~ /^((a|ba|da|mk|z)?sh|ksh.*|perl.*)$/) print exe }' | grep .
}
ssm_deploy_switch_before() {
  # the first switch this boot after process $1 (started through current) started: the release it left
  # is the one the process runs (ssm_deploy_before, not the release judged); switches has lines per
  # switch (boot id, seconds since boot, the release it left: one read before current moves, one after,
  # ssm_deploy_point); reloads: ssm_deploy_switch_time. Both times in whole clock ticks (2 decimals
  # times hz in floating point can land a hair above the tick): a process started in the tick of a
  # switch's line counts as started before it (when in doubt, the release it left)
  ssm_deploy_before=$(ssm_deploy_switches | awk -v boot="$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)" \
    -v hz="$ssm_deploy_hz" -v started="$(ssm_deploy_stat "$1" 20)" "$ssm_deploy_in_ticks"'
      since_start($1, $2) { if (left == "") left = $3; last = $2 }
      END { if (left != "") print last, left }')
  ssm_deploy_switch_time=${ssm_deploy_before%% *}
  ssm_deploy_before=${ssm_deploy_before#* }
  [ -n "$ssm_deploy_switch_time" ] && [ "$ssm_deploy_before" != - ] && [ "$ssm_deploy_before" != "$ssm_deploy_release" ]
}
ssm_deploy_switches() {
  # its lines; else the one switch 2.0.0 recorded (switched: boot id, time; previous: the release left)
  cat -- "$ssm_deploy_state/switches" 2>/dev/null && return 0
  [ ! -f "$ssm_deploy_state/switched" ] || { head -n 2 -- "$ssm_deploy_state/switched"
    grep . -- "$ssm_deploy_state/previous" 2>/dev/null || echo -; } | paste -sd ' ' -
}
ssm_deploy_reloaded() {
  # whether process $1, started before the switch, was reloaded in place since (systemctl reload,
  # nginx -s reload, haproxy's USR2, a gunicorn HUP): such a server keeps its pid and start time,
  # reads its configuration again through current and forks new workers, so a child running its
  # executable that started after the switch (ssm_deploy_switch_time, seconds since boot) says it did;
  # never a shell's or perl's (ssm_deploy_interpreter)
  ! ssm_deploy_interpreter "$1" > /dev/null || return 1
  find /proc -mindepth 2 -maxdepth 2 -path '/proc/[0-9]*/stat' -exec cat -- {} + 2>/dev/null | awk -v parent="$1" -v hz="$ssm_deploy_hz" -v switched="$ssm_deploy_switch_time" "$ssm_deploy_in_ticks"'
    { pid = $1; sub(/.*\) /, ""); split($0, field, " ") }
    field[2] == parent && field[20] + 0 > ticks(switched) { print pid }' | {
    while read -r ssm_deploy_child; do
      [ "/proc/$ssm_deploy_child/exe" -ef "/proc/$1/exe" ] && return 0
    done
    return 1
  }
}
ssm_deploy_shown_command() {
  # process $1's command line for a message, cut to 120 characters once every value of the names in
  # ssm_deploy_verify_names is masked as ****: this deploy's (read by awk from its environment, never
  # from an argument) and the process's own (its environment: the value an earlier deploy exported,
  # before a rotation), so a value passed as an argument (--token=...) never shows, even in part; a pm2
  # app's name (pm2 puts name and pm_id in its apps' environment) follows: apps share a command line.
  # Its first line, then its environment (ssm_deploy_environ); an empty command line shows nothing
  { tr '\0\n' '  ' 2>/dev/null < "/proc/$1/cmdline"; echo; ssm_deploy_environ "$1"; } \
    | ssm_deploy_names=$ssm_deploy_verify_names ssm_deploy_mask_min=$ssm_deploy_mask_min awk '
    NR == 1 && $0 != "" {
      line = $0
      count = split(ENVIRON["ssm_deploy_names"], names, " ")
      for (i = 1; i <= count; i++) {
        values[i] = ENVIRON[names[i]]
        wanted[names[i]] = 1
      }
      # one NAME=value a line, the newlines of a value as \001: a line of it (the last base64 line of a PEM
      # key, "Q2ZJ=") that looks like NAME= is no new name, so the whole value is masked (attack 36)
      while ((getline entry) > 0) {
        if (match(entry, /^[A-Za-z_][A-Za-z0-9_]*=/)) {
          if (substr(entry, 1, RLENGTH - 1) == "name") app = substr(entry, RLENGTH + 1)
          if (substr(entry, 1, RLENGTH - 1) == "pm_id") pm2 = 1
          if (substr(entry, 1, RLENGTH - 1) in wanted) {
            values[++count] = substr(entry, RLENGTH + 1)
            gsub(/\001/, "\n", values[count])
          }
        }
      }
      # a newline is a space in the line; one a value ends with (a PEM key) is none where an argument
      # holds the value trimmed (--url=...:value@host): the value masked is the one without them
      for (i = 1; i <= count; i++) { gsub(/\n/, " ", values[i]); sub(/ +$/, "", values[i]) }
      # the longest first: a value inside another masks no part of it
      for (done = 0; done < count; done++) {
        longest = 0
        for (i = 1; i <= count; i++) {
          if (!(i in taken) && (longest == 0 || length(values[i]) > length(values[longest]))) longest = i
        }
        taken[longest] = 1
        value = values[longest]
        if (length(value) < ENVIRON["ssm_deploy_mask_min"] + 0) continue
        masked = ""
        while ((at = index(line, value)) > 0) {
          masked = masked substr(line, 1, at - 1) "****"
          line = substr(line, at + length(value))
        }
        line = masked line
      }
      line = substr(line, 1, 120)
      sub(/ +$/, "", line)
      if (pm2 && app ~ /^[A-Za-z0-9._:@-]+$/ && length(app) <= 64) {
        for (i = 1; i <= count; i++) {
          if (length(values[i]) >= ENVIRON["ssm_deploy_mask_min"] + 0 && index(app, values[i])) app = "****"
        }
        line = line "; pm2 app " app
      }
      print line
    }'
}
ssm_deploy_listens() {
  # whether process $1 holds a listening socket: a descriptor of it is a TCP socket in state LISTEN
  # (0A) of its own network namespace, or a Unix socket accepting connections (flag 00010000)
  find "/proc/$1/fd" -mindepth 1 -maxdepth 1 -printf '%l\n' 2>/dev/null | awk -v net="/proc/$1/net" '
    function listening(file, state_field, state, inode_field,   line, word) {
      while ((getline line < file) > 0) {
        split(line, word, " ")
        if (word[state_field] == state) held["socket:[" word[inode_field] "]"] = 1
      }
    }
    BEGIN { listening(net "/tcp", 4, "0A", 10); listening(net "/tcp6", 4, "0A", 10); listening(net "/unix", 4, "00010000", 7) }
    ($0 in held) { found = 1 }
    END { exit !found }'
}
ssm_deploy_release_in_words() {
  # the release of a path inside APP_DIR/releases among the words of a process's command line (the
  # script it runs, the directory it serves; also after `=`), wherever its working directory is; the
  # path must be the same file in the process's own mount namespace.
  # $2 (gone: ssm_deploy_deleted_release, attack 41): instead, the first path whose release directory
  # is gone, pruned (KEEP_RELEASES) or deleted since the process started from it, as `python3
  # /srv/app/releases/<id>/server.py` or a systemd unit's ExecStart= with a release path does from /,
  # where neither its executable nor its working directory says so; only a release id (RELEASE_ID: it
  # is printed), never releases/ itself nor a path with .. in it. The install records when it removes a
  # release (ssm_deploy_remove): a release removed since the process started is a deleted copy, even
  # installed again under its id since (the path exists again, another copy: attack 44); one removed
  # before it started is no copy it ever ran (a log follower, a unit's restart loop naming a pruned
  # path); with no record (deleted by hand), a release gone is one deleted since
  for ssm_deploy_word in $(tr '\0' ' ' 2>/dev/null < "/proc/$1/cmdline"); do
    case $ssm_deploy_word in
      *=/*) ssm_deploy_word=/${ssm_deploy_word#*=/} ;;
    esac
    case $ssm_deploy_word in
      "$ssm_deploy_releases"/?* | "$ssm_deploy_app_dir"/releases/?*) ;;
      *) continue ;;
    esac
    case $2$ssm_deploy_word/ in
      gone*/../*) continue ;;
      gone*) ;;
      *) [ "/proc/$1/root$ssm_deploy_word" -ef "$ssm_deploy_word" ] || continue ;;
    esac
    ssm_deploy_word=${ssm_deploy_word#"$ssm_deploy_releases"/}
    ssm_deploy_word=${ssm_deploy_word#"$ssm_deploy_app_dir"/releases/}
    ssm_deploy_word=${ssm_deploy_word%%/*}
    if [ -n "$2" ]; then
      printf '%s\n' "$ssm_deploy_word" | grep -E -x -q -e "$ssm_deploy_id_pattern" || continue
      case $(ssm_deploy_removed_since "$1" "$ssm_deploy_word") in
        before) ;;
        after) continue ;;
        *) [ ! -e "$ssm_deploy_releases/$ssm_deploy_word" ] || continue ;;
      esac
    fi
    printf '%s\n' "$ssm_deploy_word"
    return 0
  done
}
ssm_deploy_removed_since() {
  # whether release $2 was last removed (ssm_deploy_remove's record) before process $1 started (after),
  # or since (before: this boot, up to the tick of the record, which is taken once it is gone); nothing
  # without a record
  awk -v boot="$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)" -v hz="$ssm_deploy_hz" -v started="$(ssm_deploy_stat "$1" 20)" -v id="$2" \
    "$ssm_deploy_in_ticks"'
      $3 == id { last = since_start($1, $2) ? "before" : "after" }
      END { if (started != "") print last }' \
    "$ssm_deploy_state/removed" 2>/dev/null
}
ssm_deploy_words_of() {
  # "/proc/PID word..." for each process $@: the words of its command line
  for ssm_deploy_p in "$@"; do
    printf '/proc/%s ' "$ssm_deploy_p"
    tr '\0\n' '  ' 2>/dev/null < "/proc/$ssm_deploy_p/cmdline"
    echo
  done
}
ssm_deploy_in_releases() {
  # lines "/proc/PID path..." in, "PID RELEASE" out for each path of PID's own mount namespace
  # (absolute, also after `=`) that is a release directory (ssm_deploy_inodes: device:inode and id of
  # each in releases/) or is in one, by device and inode: a container's volume bound to a release
  # directory (`docker run -v /srv/app/current:/app`: the release current pointed to as it started)
  # shows paths of its own (/app/server.js, cwd /app) that name no APP_DIR; a directory at the same
  # path that is another (another host's APP_DIR) is none. One stat for every path of every process;
  # a symlink is not followed (`current` resolves to the release it points to now, not as the process
  # started: a path through it is the path rules' business, ssm_deploy_through_current).
  # A path that is a mount point of PID's (or under one, as the directories above each path are looked
  # up too) whose mount is a release's file or directory bound there is in that release too: a single
  # file (`-v /srv/app/current/server.js:/app/server.js`) is no release directory, and a release deleted
  # since (pruned) is in releases/ no more: "PID RELEASE deleted" then. Its /proc/PID/mountinfo (proc(5):
  # field 3 major:minor, 4 the root of the mount within its file system, "//deleted" appended once that
  # is unlinked, 5 the mount point) maps to a path of the script's own through the mount releases/ is on
  # here (the deepest mount point above it, the last listed of equal ones: the one on top), when it is
  # the same file system and its root is within that mount's root: one under releases/X is release X
  awk '{ for (i = 2; i <= NF; i++) { path = $i; sub(/^[^\/=]*=\//, "/", path)
      if (path ~ /^\// && path !~ /(^|\/)\.\.?(\/|$)/) for (; path ~ /^\/./; sub(/\/[^\/]*$/, "", path)) print $1 "/root" path } }' \
    | xargs -r -d '\n' stat -c '%d:%i %n' -- 2>/dev/null | ssm_deploy_inodes=$ssm_deploy_inodes ssm_deploy_prefix=$ssm_deploy_releases/ awk '
    BEGIN { count = split(ENVIRON["ssm_deploy_inodes"], line, "\n"); for (i = 1; i <= count; i++) { split(line[i], word, " "); id[word[1]] = word[2] }
      prefix = ENVIRON["ssm_deploy_prefix"]
      while ((getline mount < "/proc/self/mountinfo") > 0) {
        split(mount, field, " ")
        if (index(prefix, (field[5] == "/" ? "" : field[5]) "/") == 1 && length(field[5]) >= length(at)) { dev = field[3]; root = field[4]; at = field[5] }
      } }
    { pid = $2; sub(/^\/proc\//, "", pid); sub(/\/.*/, "", pid); path = $0; sub(/^[^ ]* \/proc\/[0-9]+\/root/, "", path) }
    ($1 in id) { print pid, id[$1] }
    !(pid in seen) {
      seen[pid] = 1
      file = "/proc/" pid "/mountinfo"
      while ((getline mount < file) > 0) {
        split(mount, field, " ")
        gone = sub(/\/\/deleted$/, "", field[4])
        if (field[3] != dev || (root != "/" && field[4] != root && index(field[4], root "/") != 1)) continue
        mapped = (at == "/" ? "" : at) substr(field[4], root == "/" ? 1 : length(root) + 1)
        if (index(mapped, prefix) != 1) continue
        mapped = substr(mapped, length(prefix) + 1)
        sub(/\/.*/, "", mapped)
        if (mapped != "") bound[pid, field[5]] = mapped (gone ? " deleted" : "")
      }
      close(file)
    }
    ((pid, path) in bound) { print pid, bound[pid, path] }'
}
ssm_deploy_contained() {
  # the processes in another mount namespace than the script's (a container) whose working directory
  # or a path among its words is, or is in, a release directory, or a release's file or directory bound
  # there, deleted since or not (ssm_deploy_in_releases: by its mountinfo); one there
  # whose paths name APP_DIR (a systemd unit with PrivateTmp=) the scan finds by its paths
  ssm_deploy_others=$(find /proc/[0-9]*/ns/mnt /proc/[0-9]*/cwd -maxdepth 0 -printf '%h\t%l\n' 2>/dev/null \
    | ssm_deploy_mnt=$ssm_deploy_mnt awk -F '\t' '
      sub(/\/ns$/, "", $1) { if ($2 != ENVIRON["ssm_deploy_mnt"]) other[$1] = 1; next }
      ($1 in other) { print $1 " " $2 }')
  # shellcheck disable=SC2046 # pids
  { printf '%s\n' "$ssm_deploy_others"; ssm_deploy_words_of $(printf '%s\n' "$ssm_deploy_others" | cut -d / -f 3 | cut -d ' ' -f 1); } \
    | ssm_deploy_in_releases | cut -d ' ' -f 1
}
ssm_deploy_scan() {
  cd / || return 0
  ssm_deploy_now=$(ssm_deploy_ticks)
  ssm_deploy_settle_ticks=$((ssm_deploy_hz * ssm_deploy_verify_settle))
  ssm_deploy_physical=$(cd -P -- "$ssm_deploy_app_dir" 2>/dev/null && pwd -P) || return 0
  ssm_deploy_releases=$ssm_deploy_physical/releases
  ssm_deploy_mnt=$(readlink "/proc/$$/ns/mnt" 2>/dev/null)
  # and APP_DIR's as "-": a container's volume that is APP_DIR is found, its paths judged through current
  ssm_deploy_inodes=$(stat -c '%d:%i %n' -- "$ssm_deploy_releases"/*/ 2>/dev/null | sed 's|/$||; s|^\([^ ]*\) .*/|\1 |'
    stat -c '%d:%i -' -- "$ssm_deploy_physical")
  # and the processes of a container whose paths are its own (ssm_deploy_contained)
  for ssm_deploy_pid in $( {
    find /proc/[0-9]*/cwd /proc/[0-9]*/exe -maxdepth 0 -printf '%h\t%l\n' 2>/dev/null \
      | ssm_deploy_prefix=$ssm_deploy_releases/ ssm_deploy_home=$ssm_deploy_physical awk -F '\t' '
        index($2, ENVIRON["ssm_deploy_prefix"]) == 1 || $2 == ENVIRON["ssm_deploy_home"] { sub(/^\/proc\//, "", $1); print $1 }'
    grep -l -s -F -e "$ssm_deploy_releases/" -e "$ssm_deploy_app_dir/releases/" -e "$ssm_deploy_app_dir/current" \
      -e "$ssm_deploy_physical/current" /proc/[0-9]*/cmdline | sed 's|^/proc/||; s|/cmdline$||'
    ssm_deploy_contained
  } | awk '!seen[$0]++'); do
    set -f
    [ "$ssm_deploy_pid" = "$$" ] || ssm_deploy_judge "$ssm_deploy_pid" "$1"
    set +f
  done
}
# clock ticks (whole, hz a second) from seconds since boot (2 decimals, /proc/uptime's or switches'):
# the one conversion every awk program that compares them with a process's start time (/proc/PID/stat) uses
ssm_deploy_in_ticks='function ticks(seconds) { return int(seconds * hz + 0.5) }
function since_start(line_boot, seconds) { return line_boot == boot && started != "" && ticks(seconds) >= started + 0 }
'
ssm_deploy_ticks() {
  awk -v hz="$ssm_deploy_hz" "$ssm_deploy_in_ticks"'
    { printf "%d", ticks($1) }' /proc/uptime
}
"""  # noqa: E501 (each message is one line on the instance)


# The status read's list of the processes of another release than the one current points to, judged by
# the scan as after a switch back (ssm_deploy_back: paths only, no value compared, none known to mask a
# command line with): a count, then the first ssm_deploy_shown with pid, release (running or a deleted
# copy), owner and command name (/proc/PID/comm: at most 15 characters, never the arguments)
_LIST_FUNCTIONS = r"""
ssm_deploy_list_processes() {
  if [ "$(id -u)" != 0 ]; then
    printf '%s%s%s\n' "$ssm_deploy_processes_report" "$ssm_deploy_not_read" "the read does not run as root"
    return 0
  fi
  ssm_deploy_hz=$(getconf CLK_TCK 2>/dev/null) || ssm_deploy_hz=100
  ssm_deploy_release=$(ssm_deploy_release_of "$(readlink -- "$ssm_deploy_app_dir/current" 2>/dev/null)")
  ssm_deploy_back=1
  ssm_deploy_listing=1
  ssm_deploy_found=$(ssm_deploy_scan | grep '^stale ')
  printf '%s%s\n' "$ssm_deploy_processes_report" "$(printf '%s' "$ssm_deploy_found" | grep -c '^stale ')"
  printf '%s\n' "$ssm_deploy_found" | head -n "$ssm_deploy_shown" \
    | while read -r ssm_deploy_word ssm_deploy_pid ssm_deploy_copy ssm_deploy_from; do
    [ -n "$ssm_deploy_pid" ] || continue
    ssm_deploy_from=$(printf '%s' "$ssm_deploy_from" | tr -c '0-9a-z-' '?')
    ssm_deploy_owner=$(stat -c %U -- "/proc/$ssm_deploy_pid" 2>/dev/null) || ssm_deploy_owner=
    ssm_deploy_name=$(tr '\n' ' ' < "/proc/$ssm_deploy_pid/comm" 2>/dev/null) || ssm_deploy_name=
    printf '%s%s %s %s %s %s\n' "$ssm_deploy_process_report" "$ssm_deploy_pid" "${ssm_deploy_from:-?}" \
      "$ssm_deploy_copy" "${ssm_deploy_owner:-?}" "${ssm_deploy_name:-?}"
  done
}
"""

_RELEASE_FUNCTIONS = r"""
ssm_deploy_state=$ssm_deploy_app_dir/$ssm_deploy_state_dir
# set while checking the processes after a switch back (ssm_deploy_verify_back)
ssm_deploy_back=
ssm_deploy_at_exit() { ssm_deploy_report; }
ssm_deploy_as_owner() {
  if [ -z "$ssm_deploy_user" ]; then
    "$@"
  elif command -v runuser >/dev/null 2>&1; then
    runuser -u "$ssm_deploy_user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin "$@" </dev/null 9>&-
  else
    su -s /bin/sh -c 'exec env -i PATH=/usr/local/bin:/usr/bin:/bin "$0" "$@"' "$ssm_deploy_user" -- "$@" </dev/null 9>&-
  fi
}
ssm_deploy_begin() {
  umask 022
  SSM_DEPLOY_RELEASE=$ssm_deploy_release
  export SSM_DEPLOY_RELEASE
  if [ -n "$ssm_deploy_user" ]; then
    id -u -- "$ssm_deploy_user" >/dev/null 2>&1 \
      || ssm_deploy_fail 88 "RUN_AS user $ssm_deploy_user does not exist on this instance: create it (useradd) or fix RUN_AS; nothing was switched"
    [ "$(id -u)" = 0 ] \
      || ssm_deploy_fail 88 "RUN_AS $ssm_deploy_user needs the script to run as root (the SSM Agent does), it runs as $(id -un); nothing was switched"
  fi
  mkdir -p -- "$ssm_deploy_app_dir/releases" "$ssm_deploy_state/ready" "$ssm_deploy_state/files" \
    || ssm_deploy_fail 80 "cannot create $ssm_deploy_app_dir/releases: APP_DIR must be a directory root can write; nothing was switched"
  if [ -e "$ssm_deploy_app_dir/current" ] && [ ! -L "$ssm_deploy_app_dir/current" ]; then
    ssm_deploy_refused_current=1
    ssm_deploy_fail 80 "$ssm_deploy_app_dir/current exists and is not a symlink (it was not made by ssm-deploy): move it away, e.g. into $ssm_deploy_app_dir/releases, and deploy again; nothing was switched"
  fi
  exec 9>>"$ssm_deploy_state/lock" || ssm_deploy_fail 80 "cannot open $ssm_deploy_state/lock; nothing was switched"
  if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
    echo "ssm-deploy: another deploy is running on this instance; waiting for it ($ssm_deploy_state/lock)"
    flock 9
  fi
  # left by a run that was killed (SIGKILL at the execution timeout skips the EXIT trap)
  rm -rf -- "$ssm_deploy_state"/tmp.* "$ssm_deploy_app_dir"/current.tmp.*
  ssm_deploy_old_target=$(readlink -- "$ssm_deploy_app_dir/current" 2>/dev/null) || ssm_deploy_old_target=
  ssm_deploy_old=$(ssm_deploy_release_of "$ssm_deploy_old_target")
  ssm_deploy_once
}
ssm_deploy_once() {
  # "the deploy ran once": after a reboot or its own restart, the SSM Agent runs again, from the start, each
  # command it had begun and not finished (a CancelCommand sent meanwhile does not stop it). The install and
  # the staging carry the pipe run's id and their own name (ssm_deploy_run; the Auto Scaling association's
  # install carries none: AWS applies it again on purpose) and record it, under the lock, before anything
  # else: a start that finds its own record is that second run, refused. The last record is not enough
  # (attack 36): deploys that overlap (LOCK: false) wait for the lock, and after a reboot the agent starts
  # them all again in no set order, so one that waited may record itself before the one that ran is
  # started again. The file keeps the last RUNS_KEPT records, newest first, two lines each: the run, and where
  # current pointed as that first run began, said again by the refused start (current_at_start): the
  # output SSM keeps is the refused start's, and with no live release in the ledger the rollback goes there.
  # It is replaced whole (tmp.run, then mv) and synced so a crash right after it does not forget it
  [ -n "$ssm_deploy_run" ] || return 0
  if ssm_deploy_began=$(awk -v run="$ssm_deploy_run" 'NR % 2 && $0 == run { getline; print; found = 1; exit } END { exit !found }' "$ssm_deploy_state/run" 2>/dev/null); then
    echo "ssm-deploy: $ssm_deploy_app_dir/current pointed at $ssm_deploy_began as this deploy's first run here began"
    ssm_deploy_fail 79 "the SSM Agent started this deploy again on this instance (after a reboot or an agent restart): refused, it did not run twice; current points at ${ssm_deploy_old_target:-nothing}. Check what the first run did: ACTION: status"
  fi
  { printf '%s\n%s\n' "$ssm_deploy_run" "${ssm_deploy_old_target:-nothing}" && { [ ! -e "$ssm_deploy_state/run" ] || head -n "$ssm_deploy_runs_before" -- "$ssm_deploy_state/run"; }; } >"$ssm_deploy_state/tmp.run" \
    && mv -f -- "$ssm_deploy_state/tmp.run" "$ssm_deploy_state/run" && sync \
    || ssm_deploy_fail 80 "cannot write $ssm_deploy_state/run; nothing was switched"
}
ssm_deploy_prepare() {
  ssm_deploy_dir=$ssm_deploy_app_dir/releases/$ssm_deploy_release
  ssm_deploy_mark=$ssm_deploy_state/ready/$ssm_deploy_release
  ssm_deploy_files=$ssm_deploy_state/files/$ssm_deploy_release
  if [ -d "$ssm_deploy_dir" ] && [ -f "$ssm_deploy_mark" ]; then
    if [ "$(cat -- "$ssm_deploy_mark")" != "$ssm_deploy_sha256" ]; then
      [ "$ssm_deploy_release" != "$ssm_deploy_old" ] \
        || ssm_deploy_fail 80 "release $ssm_deploy_release is live on this instance but came from another artifact than SHA-256 $ssm_deploy_sha256: give the new build its own release id (a new build number); nothing was switched"
      echo "ssm-deploy: release $ssm_deploy_release on this instance came from another artifact; installing it again"
    elif [ "$ssm_deploy_release" = "$ssm_deploy_old" ]; then
      echo "ssm-deploy: release $ssm_deploy_release is already on this instance; nothing to download"
      return 0
    elif ssm_deploy_unchanged; then
      echo "ssm-deploy: release $ssm_deploy_release is already on this instance, unchanged since it was staged; nothing to download"
      return 0
    elif [ -n "$ssm_deploy_staged" ]; then
      rm -f -- "$ssm_deploy_mark" "$ssm_deploy_files"
      ssm_deploy_fail 92 "release $ssm_deploy_release in $ssm_deploy_dir changed after this deploy staged it ($ssm_deploy_change): refused, nothing was switched; current still points at ${ssm_deploy_old_target:-nothing}. Find what changed it; the next deploy stages it again from the artifact"
    else
      echo "ssm-deploy: release $ssm_deploy_release on this instance changed since it was staged ($ssm_deploy_change); installing it again from the artifact"
    fi
  elif [ -d "$ssm_deploy_dir" ] && [ "$ssm_deploy_release" = "$ssm_deploy_old" ]; then
    echo "ssm-deploy: release $ssm_deploy_release is live on this instance; not installed again"
    return 0
  fi
  # not ready: a run stopped while preparing it; start again from the artifact
  ssm_deploy_remove "$ssm_deploy_release" \
    || ssm_deploy_fail 83 "cannot remove the unfinished $ssm_deploy_dir; nothing was switched"
  ssm_deploy_need aws "to download the artifact"
  ssm_deploy_need sha256sum "to verify the artifact"
  ssm_deploy_need python3 "to inspect and unpack the artifact"
  ssm_deploy_tmp=$(mktemp -d "$ssm_deploy_state/tmp.XXXXXX") \
    || ssm_deploy_fail 83 "cannot create a temporary directory in $ssm_deploy_state; nothing was switched"
  trap 'rm -rf -- "$ssm_deploy_tmp"' EXIT
  chmod 755 "$ssm_deploy_tmp"
  ssm_deploy_archive=$ssm_deploy_tmp/artifact.$ssm_deploy_format
  echo "ssm-deploy: downloading $ssm_deploy_url"
  aws s3 cp --region "$ssm_deploy_region" --only-show-errors "$ssm_deploy_url" "$ssm_deploy_archive" \
    || ssm_deploy_fail 81 "cannot download $ssm_deploy_url: the instance role needs s3:GetObject on it (and kms:Decrypt when the bucket uses SSE-KMS); nothing was switched"
  ssm_deploy_actual=$(sha256sum < "$ssm_deploy_archive") \
    || ssm_deploy_fail 82 "cannot compute the SHA-256 of $ssm_deploy_archive; nothing was unpacked or switched"
  ssm_deploy_actual=${ssm_deploy_actual%% *}
  [ "$ssm_deploy_actual" = "$ssm_deploy_sha256" ] \
    || ssm_deploy_fail 82 "the artifact downloaded from $ssm_deploy_url has SHA-256 $ssm_deploy_actual, expected $ssm_deploy_sha256: it was changed or corrupted after the upload; nothing was unpacked or switched. Deploy the build again"
  # The unpack program (the pipe's pipe/release/contents.py) inspects every entry before it
  # creates anything, with the rules the pipe applied before the upload, then creates release/ and
  # only what it allowed, symlinks last. Run isolated (-I): nothing from the environment or the
  # current directory is imported. It is sent compressed (zlib, base64: packed_unpack_program).
  (cd -- "$ssm_deploy_tmp" && python3 -I -c "import base64,zlib;exec(zlib.decompress(base64.b64decode('$ssm_deploy_unpack')))" \
    "$ssm_deploy_format" "./artifact.$ssm_deploy_format" ./release </dev/null)
  ssm_deploy_rc=$?
  [ "$ssm_deploy_rc" -ne "$ssm_deploy_refused" ] \
    || ssm_deploy_fail 91 "the artifact downloaded from $ssm_deploy_url holds entries a release may not hold (above); nothing was unpacked or switched. The pipe checks every build before it uploads it: an older version of the pipe uploaded this one, or the object and the ledger's SHA-256 were replaced. Fix the build and deploy it with ARTIFACT as a new release"
  [ "$ssm_deploy_rc" -eq 0 ] \
    || ssm_deploy_fail 83 "cannot unpack $ssm_deploy_url as .$ssm_deploy_format (see the error above); nothing was switched"
  rm -f -- "$ssm_deploy_archive"
  if [ -n "$ssm_deploy_user" ]; then
    chown -R -h -- "$ssm_deploy_user:" "$ssm_deploy_tmp/release" \
      || ssm_deploy_fail 83 "cannot give the release to RUN_AS $ssm_deploy_user; nothing was switched"
  fi
  if [ "$#" -gt 0 ]; then
    if [ ! -d "$ssm_deploy_app_dir/shared" ]; then
      mkdir -- "$ssm_deploy_app_dir/shared" \
        || ssm_deploy_fail 83 "cannot create $ssm_deploy_app_dir/shared; nothing was switched"
      [ -z "$ssm_deploy_user" ] || chown -h -- "$ssm_deploy_user:" "$ssm_deploy_app_dir/shared" \
        || ssm_deploy_fail 83 "cannot give $ssm_deploy_app_dir/shared to RUN_AS $ssm_deploy_user; nothing was switched"
    fi
    ssm_deploy_as_owner sh -c "$ssm_deploy_shared_script" ssm-deploy-shared \
      "$ssm_deploy_app_dir/shared" "$ssm_deploy_tmp/release" "$@" \
      || ssm_deploy_fail 83 "cannot link SHARED_PATHS from $ssm_deploy_app_dir/shared into release $ssm_deploy_release (see the error above); nothing was switched"
  fi
  mv -T -- "$ssm_deploy_tmp/release" "$ssm_deploy_dir" \
    || ssm_deploy_fail 83 "cannot move the unpacked release to $ssm_deploy_dir; nothing was switched"
  echo "ssm-deploy: release $ssm_deploy_release unpacked in $ssm_deploy_dir"
  if [ -n "$ssm_deploy_commands" ]; then
    echo "ssm-deploy: running COMMANDS in $ssm_deploy_dir${ssm_deploy_user:+ as $ssm_deploy_user}"
    ssm_deploy_run "$ssm_deploy_user" "$ssm_deploy_dir" "$ssm_deploy_commands"
    ssm_deploy_rc=$?
    if [ "$ssm_deploy_rc" -ne 0 ]; then
      rm -rf -- "$ssm_deploy_dir"
      ssm_deploy_fail 84 "COMMANDS failed (exit $ssm_deploy_rc) in release $ssm_deploy_release: it was removed and never went live; $ssm_deploy_app_dir/current still points at ${ssm_deploy_old_target:-nothing}"
    fi
  fi
  ssm_deploy_manifest "$ssm_deploy_dir" > "$ssm_deploy_files" \
    || ssm_deploy_fail 83 "cannot record the checksums of $ssm_deploy_dir in $ssm_deploy_files; nothing was switched"
  printf '%s\n' "$ssm_deploy_sha256" > "$ssm_deploy_mark" \
    || ssm_deploy_fail 83 "cannot write $ssm_deploy_mark; nothing was switched"
}
ssm_deploy_remove() {
  # removes release $1 and its marks; when it was there, records when it went (boot id, seconds since
  # boot, the release) in removed: a process started before then, named by a path in it, runs a copy
  # deleted since, even once the release is installed again under its id (ssm_deploy_removed_since). A
  # line before the removal, which must be written (a full disk: nothing removed, so no removal goes
  # unrecorded and a copy installed again is never taken for the one a process runs), and one after
  [ -d "$ssm_deploy_app_dir/releases/$1" ] || set -- "$1" -
  [ -n "$2" ] || ssm_deploy_stamp removed "$1" || return 1
  rm -rf -- "$ssm_deploy_app_dir/releases/$1" "$ssm_deploy_state/ready/$1" "$ssm_deploy_state/files/$1" || return 1
  [ -n "$2" ] || ssm_deploy_stamp removed "$1"
  return 0
}
# The checksum manifest of a prepared release (every entry's type, mode, owner, path and link target,
# then every file's SHA-256), computed as the release's owner (never root reading through links
# RUN_AS controls), written when the release is prepared and compared before it is switched to
ssm_deploy_manifest() {
  ssm_deploy_as_owner sh -c "$ssm_deploy_manifest_script" ssm-deploy-manifest "$1"
}
ssm_deploy_unchanged() {
  # whether releases/<id> is as its manifest says (one prepared by an earlier version of the pipe has
  # none: nothing to compare); if not, ssm_deploy_change names the first entry that differs
  [ -f "$ssm_deploy_files" ] || return 0
  ssm_deploy_seen=$ssm_deploy_state/tmp.files.$$
  if ! ssm_deploy_manifest "$ssm_deploy_dir" > "$ssm_deploy_seen"; then
    ssm_deploy_change="its checksums could not be computed"
    rm -f -- "$ssm_deploy_seen"
    return 1
  fi
  if [ "$(sha256sum < "$ssm_deploy_seen")" = "$(sha256sum < "$ssm_deploy_files")" ]; then
    rm -f -- "$ssm_deploy_seen"
    return 0
  fi
  ssm_deploy_change=$(awk 'NR == FNR { staged[$0] = 1; next } !($0 in staged) { print "now: " $0; exit }' "$ssm_deploy_files" "$ssm_deploy_seen")
  [ -n "$ssm_deploy_change" ] \
    || ssm_deploy_change=$(awk 'NR == FNR { seen[$0] = 1; next } !($0 in seen) { print "gone: " $0; exit }' "$ssm_deploy_seen" "$ssm_deploy_files")
  rm -f -- "$ssm_deploy_seen"
  return 1
}
ssm_deploy_point() {
  ssm_deploy_link=$ssm_deploy_app_dir/current.tmp.$$
  ln -sfn -- "$1" "$ssm_deploy_link" && mv -T -- "$ssm_deploy_link" "$ssm_deploy_app_dir/current" || return 1
  # the switch's line again, its time read now that current has moved (a process started up to this
  # tick, before the move or after it, counts as started before the switch: ssm_deploy_switch_before),
  # then a wait for the next tick, so that what ACTIVATE_COMMANDS starts counts as started after it
  ssm_deploy_moved=$(awk '{ print $1 }' /proc/uptime)
  ssm_deploy_stamp switches "$ssm_deploy_left" "$ssm_deploy_moved"
  ssm_deploy_n=0
  until awk -v moved="$ssm_deploy_moved" '{ exit !($1 > moved + 0) }' /proc/uptime || [ "$ssm_deploy_n" -ge 100 ]; do
    sleep 0.01 2>/dev/null || sleep 1; ssm_deploy_n=$((ssm_deploy_n + 1))
  done
  return 0
}
ssm_deploy_record() {
  # before a switch: the release it leaves, the one it goes to, a line in switches (ssm_deploy_switch_before)
  { [ -f "$ssm_deploy_state/switches" ] || { ssm_deploy_switches > "$ssm_deploy_state/switches.tmp" \
    && mv -f -- "$ssm_deploy_state/switches.tmp" "$ssm_deploy_state/switches"; }; } \
    && printf '%s\n' "$1" > "$ssm_deploy_state/previous.tmp" \
    && mv -f -- "$ssm_deploy_state/previous.tmp" "$ssm_deploy_state/previous" \
    && { [ -z "$2" ] || printf '%s\n' "$2" >> "$ssm_deploy_state/history"; } \
    && ssm_deploy_left=${1:--} \
    && ssm_deploy_stamp switches "$ssm_deploy_left"
}
ssm_deploy_stamp() {
  # a line of $ssm_deploy_state/$1 (switches: ssm_deploy_switch_before; removed: ssm_deploy_removed_since):
  # boot id, seconds since boot ($3, or now), $2 (the release a switch leaves, or the release removed)
  echo "$(cat /proc/sys/kernel/random/boot_id 2>/dev/null) ${3:-$(awk '{ print $1 }' /proc/uptime)} $2" >> "$ssm_deploy_state/$1"
}
ssm_deploy_activate_current() {
  [ -n "$ssm_deploy_activate" ] || return 0
  SSM_DEPLOY_RELEASE=$(ssm_deploy_release_of "$(readlink -- "$ssm_deploy_app_dir/current")")
  export SSM_DEPLOY_RELEASE
  echo "ssm-deploy: running ACTIVATE_COMMANDS in $ssm_deploy_app_dir/current${ssm_deploy_user:+ as $ssm_deploy_user}"
  ssm_deploy_run "$ssm_deploy_user" "$ssm_deploy_app_dir/current" "$ssm_deploy_activate"
}
ssm_deploy_roll_back() {
  # $1: the exit code once the previous release is active again (85, 90); $2: what went wrong
  ssm_deploy_alone=$1
  [ "$1" != 85 ] || ssm_deploy_alone=89
  [ -n "$ssm_deploy_switched" ] \
    || ssm_deploy_fail "$ssm_deploy_alone" "$2 for release $ssm_deploy_release, which was already live before this run: nothing to switch back to; current is unchanged$ssm_deploy_fix"
  [ -n "$ssm_deploy_old_target" ] \
    || ssm_deploy_fail "$ssm_deploy_alone" "$2 for release $ssm_deploy_release, the first release on this instance: there is no earlier release to go back to; current stays on it$ssm_deploy_fix"
  (cd -- "$ssm_deploy_app_dir" && [ -d "$ssm_deploy_old_target" ]) \
    || ssm_deploy_fail 86 "$2 for release $ssm_deploy_release and the release before it ($ssm_deploy_old_target) is gone: current stays on $ssm_deploy_release$ssm_deploy_fix"
  ssm_deploy_record "$ssm_deploy_release" "$ssm_deploy_old" && ssm_deploy_point "$ssm_deploy_old_target" \
    || ssm_deploy_fail 86 "$2 for release $ssm_deploy_release and switching $ssm_deploy_app_dir/current back to $ssm_deploy_old_target failed$ssm_deploy_fix"
  echo "ssm-deploy: $2; $ssm_deploy_app_dir/current is back on $ssm_deploy_old_target"
  ssm_deploy_activate_current
  ssm_deploy_rc=$?
  [ "$ssm_deploy_rc" -eq 0 ] \
    || ssm_deploy_fail 86 "$2 for release $ssm_deploy_release, and ACTIVATE_COMMANDS failed again (exit $ssm_deploy_rc) for ${ssm_deploy_old:-$ssm_deploy_old_target} after switching back: this instance needs attention$ssm_deploy_fix"
  ssm_deploy_verify_back "$(ssm_deploy_release_of "$ssm_deploy_old_target")" \
    || ssm_deploy_fail 86 "$2 for release $ssm_deploy_release: rolled back to ${ssm_deploy_old:-$ssm_deploy_old_target}, but $ssm_deploy_stale: this instance needs attention (stop that process)$ssm_deploy_fix"
  ssm_deploy_fail "$1" "$2 for release $ssm_deploy_release: rolled back to ${ssm_deploy_old:-$ssm_deploy_old_target}, whose activation ran again and succeeded$ssm_deploy_fix"
}
ssm_deploy_pids() {
  # the pids of the scan's lines that start with $1 (ok, unread), on one line
  printf '%s\n' "$ssm_deploy_found" | sed -n "s/^$1 //p" | tr '\n' ' ' | sed 's/ $//'
}
ssm_deploy_verify_processes() {
  [ -n "$ssm_deploy_verify" ] || return 0
  ssm_deploy_hz=$(getconf CLK_TCK 2>/dev/null) || ssm_deploy_hz=100
  ssm_deploy_began=$(ssm_deploy_ticks)
  if [ "$(id -u)" != 0 ]; then
    echo "ssm-deploy: warning: the script does not run as root, so the processes were not verified (VERIFY_PROCESSES)" >&2
    return 0
  fi
  ssm_deploy_waited=0
  while :; do
    if [ "$ssm_deploy_waited" -lt "$ssm_deploy_verify_wait" ]; then
      ssm_deploy_found=$(ssm_deploy_scan settle)
    else
      # the last look judges every process, however young
      ssm_deploy_found=$(ssm_deploy_scan)
    fi
    case "
$ssm_deploy_found" in
      *"
settling "* | *"
process "*) ;;
      *)
        ssm_deploy_serving=$(ssm_deploy_pids ok)
        ssm_deploy_unread=$(ssm_deploy_pids unread)
        if [ -z "$ssm_deploy_serving$ssm_deploy_unread" ]; then
          ssm_deploy_serving="none runs release $ssm_deploy_release"
        elif [ -n "$ssm_deploy_serving" ] && [ -n "$ssm_deploy_verify_names" ] && [ -z "$ssm_deploy_back" ]; then
          ssm_deploy_serving="process(es) $ssm_deploy_serving run release $ssm_deploy_release with this deploy's values of $ssm_deploy_verify_names"
        elif [ -n "$ssm_deploy_serving" ]; then
          ssm_deploy_serving="process(es) $ssm_deploy_serving run release $ssm_deploy_release"
        fi
        [ -z "$ssm_deploy_unread" ] \
          || ssm_deploy_serving="${ssm_deploy_serving:+$ssm_deploy_serving; }process(es) $ssm_deploy_unread run release $ssm_deploy_release, values not compared: a process title was written over their environment (puma, nginx, setproctitle), which holds nothing to read"
        echo "ssm-deploy: processes verified: none runs a replaced release; $ssm_deploy_serving"
        return 0
        ;;
    esac
    [ "$ssm_deploy_waited" -lt "$ssm_deploy_verify_wait" ] || break
    sleep 1
    ssm_deploy_waited=$((ssm_deploy_waited + 1))
  done
  ssm_deploy_found=$(printf '%s\n' "$ssm_deploy_found" | grep '^process ')
  printf '%s\n' "$ssm_deploy_found" | sed 's/^/ssm-deploy: /' >&2
  ssm_deploy_stale=$(printf '%s\n' "$ssm_deploy_found" | head -n 1)
  ssm_deploy_fix="; $ssm_deploy_pm2_fix (or set VERIFY_PROCESSES: 'false' for a service that is no long-running process)"
  return 1
}
ssm_deploy_verify_back() {
  # after a switch back to release $1: no process may still run another release (the one that failed,
  # e.g. a worker only it had, which the activation of $1 does not stop). Values are not compared (the
  # processes of $1 hold what they were started with; ssm_deploy_back); the values are still masked in the
  # command lines a message names
  ssm_deploy_failed_release=$ssm_deploy_release
  ssm_deploy_release=$1
  ssm_deploy_back=1
  ssm_deploy_verify_processes
  ssm_deploy_back_rc=$?
  ssm_deploy_release=$ssm_deploy_failed_release
  ssm_deploy_back=
  return "$ssm_deploy_back_rc"
}
ssm_deploy_prune() {
  ssm_deploy_previous=$(cat -- "$ssm_deploy_state/previous" 2>/dev/null) || ssm_deploy_previous=
  ssm_deploy_kept=0
  for ssm_deploy_id in $({ tac -- "$ssm_deploy_state/history" 2>/dev/null; ls -1 -- "$ssm_deploy_app_dir/releases" | sort -r; } | awk '!seen[$0]++' | grep -E -x "$ssm_deploy_id_pattern"); do
    [ -d "$ssm_deploy_app_dir/releases/$ssm_deploy_id" ] || continue
    # kept: this release, the one before it, the ledger's live one (a rollback goes back to it), the one
    # RELEASE: previous goes back to after this deploy (back_to) and should it fail (back_now: this instance
    # prunes before the health check and the later batches), and the newest others up to KEEP_RELEASES in all
    if [ "$ssm_deploy_id" = "$ssm_deploy_release" ] || [ "$ssm_deploy_id" = "$ssm_deploy_previous" ] \
      || [ "$ssm_deploy_id" = "$ssm_deploy_live" ] || [ "$ssm_deploy_id" = "$ssm_deploy_back_to" ] \
      || [ "$ssm_deploy_id" = "$ssm_deploy_back_now" ] \
      || [ "$ssm_deploy_kept" -lt "$ssm_deploy_keep" ]; then
      ssm_deploy_kept=$((ssm_deploy_kept + 1))
    elif ssm_deploy_remove "$ssm_deploy_id"; then
      echo "ssm-deploy: removed release $ssm_deploy_id (KEEP_RELEASES=$ssm_deploy_keep)"
    else
      echo "ssm-deploy: warning: could not remove release $ssm_deploy_id" >&2
    fi
  done
  # history: a line per switch, switches: two, removed: one per release removed; the newest kept
  for ssm_deploy_log in history switches removed; do
    if [ -f "$ssm_deploy_state/$ssm_deploy_log" ] \
      && [ "$(wc -l < "$ssm_deploy_state/$ssm_deploy_log")" -gt "$ssm_deploy_history_limit" ]; then
      tail -n "$ssm_deploy_history_limit" -- "$ssm_deploy_state/$ssm_deploy_log" > "$ssm_deploy_state/$ssm_deploy_log.tmp" \
        && mv -f -- "$ssm_deploy_state/$ssm_deploy_log.tmp" "$ssm_deploy_state/$ssm_deploy_log"
    fi
  done
}
ssm_deploy_install() {
  ssm_deploy_fix=
  ssm_deploy_begin
  # before COMMANDS, whose output may push the switch's line past the 24,000 characters SSM keeps
  # (current_at_start): where the switch went from, as this run holds the lock
  echo "ssm-deploy: $ssm_deploy_app_dir/current points at ${ssm_deploy_old_target:-nothing} as this run begins"
  ssm_deploy_prepare "$@"
  ssm_deploy_switched=
  if [ "$ssm_deploy_release" = "$ssm_deploy_old" ]; then
    echo "ssm-deploy: release $ssm_deploy_release is already live on this instance; activating it again"
  else
    ssm_deploy_record "$ssm_deploy_old" "$ssm_deploy_release" && ssm_deploy_point "releases/$ssm_deploy_release" \
      || ssm_deploy_fail 80 "cannot switch $ssm_deploy_app_dir/current to releases/$ssm_deploy_release; current still points at ${ssm_deploy_old_target:-nothing}"
    ssm_deploy_switched=1
    echo "ssm-deploy: $ssm_deploy_app_dir/current -> releases/$ssm_deploy_release (was ${ssm_deploy_old_target:-nothing})"
  fi
  ssm_deploy_activate_current
  ssm_deploy_rc=$?
  [ "$ssm_deploy_rc" -eq 0 ] || ssm_deploy_roll_back 85 "ACTIVATE_COMMANDS failed (exit $ssm_deploy_rc)"
  ssm_deploy_verify_processes \
    || ssm_deploy_roll_back 90 "a process still runs a replaced release or holds an old value after ACTIVATE_COMMANDS ($ssm_deploy_stale)"
  ssm_deploy_prune
  echo "ssm-deploy: release $ssm_deploy_release is live on this instance (previous: ${ssm_deploy_old:-none})"
}
ssm_deploy_stage() {
  ssm_deploy_begin
  ssm_deploy_prepare "$@"
  echo "ssm-deploy: release $ssm_deploy_release is staged in $ssm_deploy_dir; $ssm_deploy_app_dir/current still points at ${ssm_deploy_old_target:-nothing}"
}
ssm_deploy_verify_after_check() {
  ssm_deploy_verify_processes \
    || ssm_deploy_fail 90 "a process still runs a replaced release or holds an old value after the health check passed ($ssm_deploy_stale): the pipe switches this instance back$ssm_deploy_fix"
}
"""  # noqa: E501 (each message is one line on the instance)

# sent only by the switch back (switch_back_body): the install and the staging leave its room to COMMANDS
_SWITCH_BACK_FUNCTION = r"""
ssm_deploy_switch_back() {
  ssm_deploy_begin
  ssm_deploy_to=$ssm_deploy_live_before
  if [ "$ssm_deploy_old" = "$ssm_deploy_to" ]; then
    echo "ssm-deploy: $ssm_deploy_app_dir/current is on release $ssm_deploy_to, the release live before this deploy: nothing to switch back"
    # a deploy script cut short after its own switch back may have left a process of the failed release
    ssm_deploy_verify_back "$ssm_deploy_to" \
      || ssm_deploy_fail 86 "current is on release $ssm_deploy_to, but $ssm_deploy_stale: this instance needs attention (stop that process)$ssm_deploy_fix"
    return 0
  fi
  [ -d "$ssm_deploy_app_dir/releases/$ssm_deploy_to" ] \
    || ssm_deploy_fail 87 "release $ssm_deploy_to, live before this deploy, is not on this instance (never installed here, or removed): current stays on ${ssm_deploy_old_target:-nothing}"
  ssm_deploy_record "$ssm_deploy_old" "$ssm_deploy_to" && ssm_deploy_point "releases/$ssm_deploy_to" \
    || ssm_deploy_fail 86 "cannot switch $ssm_deploy_app_dir/current back to releases/$ssm_deploy_to; current stays on ${ssm_deploy_old_target:-nothing}"
  echo "ssm-deploy: $ssm_deploy_app_dir/current -> releases/$ssm_deploy_to (was ${ssm_deploy_old_target:-nothing})"
  ssm_deploy_activate_current
  ssm_deploy_rc=$?
  [ "$ssm_deploy_rc" -eq 0 ] \
    || ssm_deploy_fail 86 "switched back to release $ssm_deploy_to but ACTIVATE_COMMANDS failed there (exit $ssm_deploy_rc): this instance needs attention"
  ssm_deploy_verify_back "$ssm_deploy_to" \
    || ssm_deploy_fail 86 "switched back to release $ssm_deploy_to, but $ssm_deploy_stale: this instance needs attention (stop that process)$ssm_deploy_fix"
  echo "ssm-deploy: release $ssm_deploy_to is live again on this instance"
}
"""  # noqa: E501 (each message is one line on the instance)


def _sent(functions: str) -> str:
    """Shell functions as sent: without their comment lines (a line whose first character that is not a
    blank is ``#``: a comment to the shell, and to the awk and python3 programs quoted inside), which the
    script's bound (MAX_SCRIPT_BYTES) cannot spare; the text in the pipe is the commented one."""
    return "\n".join(line for line in functions.strip().splitlines() if not line.lstrip().startswith("#"))


def _quote(value: str) -> str:
    return shlex.quote(value)  # POSIX single quotes: nothing inside is expanded by sh, dash or bash


def _forwarded(env_names: Iterable[str]) -> str:
    """The names handed to RUN_AS: the pipe's, then the agent's, each once."""
    return " ".join(dict.fromkeys([*env_names, *AGENT_VARIABLES]))


def _shared_spec(path: str) -> str:
    """``KIND:PATH`` for the shared script. A trailing / says directory; otherwise what already exists
    in shared/ (or in the release) decides, and a name with a dot (``.env``, ``app.json``) defaults
    to a file, any other (``logs``) to a directory."""
    if path.endswith("/"):
        return "D:" + path.rstrip("/")
    return ("f:" if "." in path.rsplit("/", 1)[-1] else "d:") + path


# What the process scan (_SCAN_FUNCTIONS) reads beside the plan, in the release scripts and the status read:
# a release id's pattern, POSIX ERE too (a word's release gone since: ssm_deploy_release_in_words; pruning
# touches only names that are release ids)
_SCAN_VALUES = {"id_pattern": RELEASE_ID.pattern}


def _assignments(plan: ReleasePlan) -> list[str]:
    values = {
        "app_dir": plan.app_dir,
        "release": plan.release_id,
        "url": plan.artifact_url,
        "sha256": plan.sha256,
        "format": plan.archive_format,
        "region": plan.region,
        "user": plan.run_as or "",
        "keep": str(plan.keep_releases),
        "live": plan.live_release,
        "back_to": plan.back_to,
        "back_now": plan.back_now,
        "history_limit": str(HISTORY_LIMIT),
        "runs_before": str(2 * (RUNS_KEPT - 1)),  # the lines of .ssm-deploy/run kept after a new record (two)
        "state_dir": STATE_DIR,
        **_SCAN_VALUES,
        "commands": plan.commands,
        "activate": plan.activate_commands,
        "env_names": _forwarded((*plan.env_names, RELEASE_VARIABLE)),
        "verify": "1" if plan.verify_processes else "",
        "verify_names": " ".join(dict.fromkeys(plan.env_names)),
        "mask_min": str(MIN_LENGTH),  # the masking's own bound: shorter values would mask ordinary text
        "verify_wait": str(plan.verify_grace),
        "verify_settle": str(plan.verify_settle),
        "pm2_fix": PM2_FIX.format(app_dir=plan.app_dir),
        "shared_script": _SHARED_SCRIPT,
        "manifest_script": _MANIFEST_SCRIPT,
        "staged": "",
        "run": "",  # the pipe run this script belongs to (install, staging): ssm_deploy_once
    }
    return [f"ssm_deploy_{name}={_quote(value)}" for name, value in values.items()] + _read_assignments()


def _read_assignments() -> list[str]:
    values = {"current_report": CURRENT_REPORT, "no_release": NO_RELEASE_REPORTED}
    return [f"ssm_deploy_{name}={_quote(value)}" for name, value in values.items()]


def _program_text(source: str) -> str:
    """The unpack program as sent: contents.py without its docstrings and comments, indented by one space
    a level instead of four, which the script's bound (MAX_SCRIPT_BYTES) cannot spare; the file in the
    pipe is the commented text. ``ast.unparse`` writes every string on one line (a newline as ``\\n``), so
    each line's leading blanks are indentation, never part of a string."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef) and ast.get_docstring(node) is not None:
            node.body = node.body[1:] or [ast.Pass()]
    lines = ast.unparse(tree).splitlines()
    return "\n".join(" " * ((len(line) - len(line.lstrip(" "))) // 4) + line.lstrip(" ") for line in lines)


@cache
def unpack_program() -> str:
    """contents.py as the install runs it; made when a release script is first built, not when the
    pipe starts: most runs send none, and parsing contents.py costs ~10 ms of CPU."""
    return _program_text(Path(contents.__file__).read_text(encoding="utf-8"))


@cache
def packed_unpack_program() -> str:
    """unpack_program as the script carries it: zlib-compressed, in base64 (no character the shell or a
    Python string literal treats specially), about 40 % of the text's bytes, which the script's bound
    (MAX_SCRIPT_BYTES) leaves to the team's commands; the instance's python3 decompresses it with its
    own zlib and runs it."""
    return base64.b64encode(zlib.compress(unpack_program().encode(), 9)).decode("ascii")


def _unpack_definition() -> list[str]:
    """``ssm_deploy_unpack``: the program the install runs with python3 to inspect and unpack the artifact."""
    return [
        f"ssm_deploy_refused={contents.REFUSED}",
        f"ssm_deploy_unpack={packed_unpack_program()}",
    ]


def _body(plan: ReleasePlan, title: str, call: str, definitions: list[str] | None = None, **more: str) -> str:
    """The release functions, then ``call``; the script ends by reporting where ``current`` points
    (``ssm_deploy_fail`` reports it on every failure path too). ``definitions``: what only this script
    sends (the unpack program, the switch back's function)."""
    header = f"# --- ssm-deploy: {title} in {plan.app_dir} ---"
    extra = [f"ssm_deploy_{name}={_quote(value)}" for name, value in more.items()]
    functions = [_sent(_RUN_FUNCTIONS), _sent(_READ_FUNCTIONS), _sent(_SCAN_FUNCTIONS), _sent(_RELEASE_FUNCTIONS)]
    ending = ["ssm_deploy_rc=$?", "ssm_deploy_report", 'exit "$ssm_deploy_rc"']
    return "\n".join([header, *_assignments(plan), *extra, *(definitions or []), *functions, call, *ending])


def install_body(plan: ReleasePlan, staged: bool = False, run_id: str = "") -> str:
    """Install ``plan`` and make it live: download and verify the artifact unless releases/<id> is
    already prepared and unchanged since (its checksum manifest), inspect every entry (91 and nothing
    unpacked when one is refused), unpack, link SHARED_PATHS, run COMMANDS (84 and nothing switched on
    failure), record the manifest, switch ``current`` atomically, run ACTIVATE_COMMANDS (on failure:
    switch back and activate the previous release, 85 or 86), read /proc (VERIFY_PROCESSES: a process
    of a replaced release, or of this one without this deploy's values, switches back the same way and
    exits 90), then prune to KEEP_RELEASES. A release that is already live is activated again (no
    switch, previous unchanged).

    ``staged``: this deploy staged the release (``stage_body``) before: a prepared release that no
    longer matches its manifest is refused (92, nothing switched) instead of installed again; an
    instance where it was never staged (launched since) installs it here.

    ``run_id``: the pipe run's (``once``): the SSM Agent starting this script again on an instance (after a
    reboot) is refused there with 79. None for the Auto Scaling association, which AWS applies again on purpose."""
    call = " ".join(["ssm_deploy_install", *_shared_arguments(plan)])
    title = f"install release {plan.release_id}"
    return _body(plan, title, call, _unpack_definition(), staged="1" if staged else "", run=once(run_id, "install"))


def stage_body(plan: ReleasePlan, run_id: str = "") -> str:
    """Stage ``plan`` without switching: what ``install_body`` does before its switch (download,
    verify, inspect, unpack, SHARED_PATHS, COMMANDS, the checksum manifest), while the instance still
    serves the live release. A release already prepared and unchanged is left as it is; one changed
    since it was prepared is installed again from the artifact. Nothing is pruned: KEEP_RELEASES
    counts the releases that went live. ``run_id``: as for ``install_body``."""
    call = " ".join(["ssm_deploy_stage", *_shared_arguments(plan)])
    return _body(plan, f"stage release {plan.release_id}", call, _unpack_definition(), run=once(run_id, "stage"))


def once(run_id: str, script: str) -> str:
    """What an instance records as ``script`` of pipe run ``run_id`` begins (``.ssm-deploy/run``): the same
    record found there as it begins is the SSM Agent running it again. Empty (nothing recorded) without a run."""
    if run_id and not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"run id {run_id!r} must be letters, digits and dashes")
    return f"{run_id} {script}" if run_id else ""


def _shared_arguments(plan: ReleasePlan) -> list[str]:
    return [_quote(_shared_spec(path)) for path in plan.shared_paths]


def switch_back_body(plan: ReleasePlan, live_before: str) -> str:
    """Switch ``current`` to ``live_before``, the release that was live before this deploy (told by
    the pipe, never guessed from the instance's own history), and run ACTIVATE_COMMANDS there (86
    when they fail, 87 when that release is not on the instance). An instance already on it is left
    alone: a retried switch back, or one after a re-deploy of the live release, never goes past it."""
    problem = release_id_problem(live_before)
    if problem:
        raise ValueError(f"the release to switch back to: {problem}")
    title = f"switch back from release {plan.release_id} to release {live_before}"
    return _body(plan, title, "ssm_deploy_switch_back", [_sent(_SWITCH_BACK_FUNCTION)], live_before=live_before)


def verified_after(check: str, plan: ReleasePlan) -> str:
    """``check`` (the health check) in a subshell, then, once it passed, VERIFY_PROCESSES again: a
    process of a replaced release, or one without this deploy's values, fails the instance with exit
    90 and switches nothing (the pipe's rollback switches it back with the other failed instances).
    Reports ``current`` like the release scripts. Just ``check`` with VERIFY_PROCESSES off."""
    if not plan.verify_processes:
        return check
    then = _body(plan, f"verify the processes of release {plan.release_id}", "ssm_deploy_verify_after_check")
    return "\n".join(
        [
            "(",
            check,
            ")",
            "ssm_deploy_check_rc=$?",
            '[ "$ssm_deploy_check_rc" -eq 0 ] || exit "$ssm_deploy_check_rc"',
            then,
        ]
    )


def read_current_body(app_dir: str, processes: bool = False) -> str:
    """Read where ``APP_DIR/current`` points and print it as the release scripts do; changes nothing.
    Waits (READ_LOCK_SECONDS at most) for a release script still running on the instance, and exits 1
    without a report when one still holds the lock.

    ``processes`` (ACTION: status): then list the processes running from another release than the one
    ``current`` points to, found by the deploy's own scan (VERIFY_PROCESSES) as after a switch back: by
    their paths only, never a value (the read has no prelude and knows no secret); read by
    ``other_processes``."""
    problem = app_dir_problem(app_dir)
    if problem:
        raise ValueError(problem)
    lock = f"{app_dir}/{STATE_DIR}/lock"
    listing = [_sent(_SCAN_FUNCTIONS), _sent(_LIST_FUNCTIONS), "ssm_deploy_list_processes"] if processes else []
    more = (
        {
            "processes_report": PROCESSES_REPORT,
            "process_report": PROCESS_REPORT,
            "not_read": PROCESSES_NOT_READ,
            "shown": str(PROCESSES_SHOWN),
            "verify_settle": "0",
            "state": f"{app_dir}/{STATE_DIR}",
            **_SCAN_VALUES,
        }
        if processes
        else {}
    )
    what = " and the processes of other releases" if processes else ""
    return "\n".join(
        [
            f"# --- ssm-deploy: read which release {app_dir}/current points to{what} (changes nothing) ---",
            f"ssm_deploy_app_dir={_quote(app_dir)}",
            *_read_assignments(),
            *(f"ssm_deploy_{name}={_quote(value)}" for name, value in more.items()),
            _sent(_READ_FUNCTIONS),
            f"if [ -f {_quote(lock)} ] && command -v flock >/dev/null 2>&1; then",
            f"  exec 9<{_quote(lock)} || exit 1",
            f"  flock -s -w {READ_LOCK_SECONDS} 9 || {{ echo {_quote(_BUSY)} >&2; exit 1; }}",
            "fi",
            "ssm_deploy_report",
            *listing,
        ]
    )


_BUSY = f"ssm-deploy: a release script still runs on this instance after {READ_LOCK_SECONDS} s; current was not read"


def current_report(stdout: str) -> str | None:
    """The release ``current`` pointed to when a release script ended, from its last report line:
    a release id, NO_RELEASE when ``current`` points to none; None without a (well-formed) report."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(CURRENT_REPORT):
            value = line.removeprefix(CURRENT_REPORT).strip()
            if value == NO_RELEASE_REPORTED:
                return NO_RELEASE
            return value if _REPORTED_ID.fullmatch(value) else None
    return None


def current_at_start(stdout: str) -> str | None:
    """The release ``current`` pointed to as an install script began, held its lock and before it ran
    COMMANDS (``points at releases/<id> as this run begins``): within the first 24,000 characters of its
    output SSM keeps, where the switch's own line may not be. A start the SSM Agent made again (79) says
    where its pipe run's first start found it (``pointed at ... as this deploy's first run here began``):
    SSM keeps only the refused start's output. None without it, or with no release."""
    for line in stdout.splitlines():
        for said, ending in _AT_START:
            if line.startswith("ssm-deploy: ") and line.endswith(ending):
                value = line.removesuffix(ending).rpartition(f"/current {said} at releases/")[2]
                return value if _REPORTED_ID.fullmatch(value) else None
    return None


_AT_START = (("points", " as this run begins"), ("pointed", " as this deploy's first run here began"))


@dataclass(frozen=True)
class OtherProcess:
    """A process the status read found running from another release than the one ``current`` points to."""

    pid: int
    release: str  # the release directory it runs from ("?" for a name that is no release id)
    deleted: bool  # it runs a copy of that release deleted since it started
    user: str
    command: str  # its command name (/proc/PID/comm), never its arguments


@dataclass(frozen=True)
class OtherProcesses:
    """What the status read says of one instance's processes: how many run another release than
    ``current``'s, the first PROCESSES_SHOWN of them, or why they were not read."""

    count: int = 0
    shown: tuple[OtherProcess, ...] = ()
    not_read: str = ""


def other_processes(stdout: str) -> OtherProcesses | None:
    """The processes of other releases the status read listed (``read_current_body`` with processes);
    None when its output holds no count (the output was cut, or the list never ran)."""
    lines = stdout.splitlines()
    reports = [line.removeprefix(PROCESSES_REPORT) for line in lines if line.startswith(PROCESSES_REPORT)]
    if not reports:
        return None
    said = reports[-1].strip()
    if said.startswith(PROCESSES_NOT_READ):
        return OtherProcesses(not_read=_CONTROL.sub("?", said.removeprefix(PROCESSES_NOT_READ)))
    if not said.isdigit():
        return None
    shown = tuple(
        process
        for line in lines
        if line.startswith(PROCESS_REPORT) and (process := _other_process(line.removeprefix(PROCESS_REPORT)))
    )
    return OtherProcesses(count=max(int(said), len(shown)), shown=shown[:PROCESSES_SHOWN])


def _other_process(text: str) -> OtherProcess | None:
    """``PID RELEASE running|deleted USER COMMAND`` (the command name may hold blanks)."""
    words = text.split(" ", 4)
    if len(words) != 5 or not words[0].isdigit() or words[2] not in ("running", "deleted"):
        return None
    pid, release, copy, user, command = words
    release = release if _SHOWN_RELEASE.fullmatch(release) else "?"
    return OtherProcess(
        int(pid), release, copy == "deleted", _CONTROL.sub("?", user), _CONTROL.sub("?", command.strip())
    )


def as_user(run_as: str | None, commands: str, cwd: str, env_names: Iterable[str] = ()) -> str:
    """Run ``commands`` with bash in ``cwd``: as ``run_as`` with that user's login environment (HOME,
    PATH from ~/.bash_profile or ~/.profile), receiving ``env_names`` (and the SSM Agent's
    AWS_SSM_INSTANCE_ID/AWS_SSM_REGION_NAME) through an inherited pipe, never through argv or a file;
    or, with None, as the current user (root under SSM) in a new bash that inherits the environment.
    The snippet's exit status is the commands' own; their stdin is /dev/null."""
    names = tuple(env_names)
    problems = [_env_name_problem(name) for name in names]
    problems += [run_as_problem(run_as) if run_as is not None else None]
    if any(problems):
        raise ValueError("; ".join(problem for problem in problems if problem))
    return "\n".join(
        [
            f"ssm_deploy_env_names={_quote(_forwarded(names))}",
            _sent(_RUN_FUNCTIONS),
            f"ssm_deploy_run {_quote(run_as or '')} {_quote(cwd)} {_quote(commands)}",
        ]
    )


def install_steps(plan: ReleasePlan, staged: bool = False) -> tuple[str, ...]:
    """What install_body does on each instance, in words (for DRY_RUN)."""
    release = f"{plan.app_dir}/releases/{plan.release_id}"
    who = f" as {plan.run_as} (login environment)" if plan.run_as else " as root"
    if staged:
        steps = [
            f"compare {release} with the checksums recorded when it was staged: if anything changed, stop "
            "(exit 92, nothing switched)",
            "where it was not staged (an instance launched since), prepare it first:",
            *(f"  {step}" for step in prepare_steps(plan)),
        ]
    else:
        steps = list(prepare_steps(plan))
    steps.append(f"switch {plan.app_dir}/current -> releases/{plan.release_id} (atomic rename)")
    if plan.activate_commands:
        steps.append(
            f"run ACTIVATE_COMMANDS in {plan.app_dir}/current{who}; if they fail, switch back to the "
            "previous release and run them there"
        )
    if plan.verify_processes:
        names = f" of {', '.join(dict.fromkeys(plan.env_names))}" if plan.env_names else ""
        steps.append(
            f"read the processes (/proc, as root): none may still run a replaced release, and those running {release} "
            f"must hold this deploy's values{names} (compared on the instance); if not, switch back to the previous "
            "release and run ACTIVATE_COMMANDS there (exit 90)"
        )
    steps.append(
        "a second start of this script on an instance (the SSM Agent runs a command again after a reboot) stops "
        "before anything (exit 79): nothing runs twice"
    )
    kept = f", nor {plan.back_now}, where RELEASE: previous goes should this deploy fail" if plan.back_now else ""
    steps.append(
        f"keep the {plan.keep_releases} most recently activated releases (never the live one nor the one before "
        f"it{kept})"
    )
    return tuple(steps)


def prepare_steps(plan: ReleasePlan) -> tuple[str, ...]:
    """What stage_body does on each instance (and install_body before its switch), in words."""
    release = f"{plan.app_dir}/releases/{plan.release_id}"
    who = f" as {plan.run_as} (login environment)" if plan.run_as else " as root"
    steps = [
        f"if {release} is not there yet (or changed since it was prepared): download {plan.artifact_url} with the "
        "instance role",
        f"  verify its SHA-256 is {plan.sha256} before unpacking anything",
        "  inspect every entry with python3 before unpacking anything: only files, directories and symlinks that "
        "stay inside the release, no setuid, setgid or sticky bit; otherwise stop (exit 91, nothing unpacked)",
        f"  unpack the .{plan.archive_format} into {release}" + (f", owned by {plan.run_as}" if plan.run_as else ""),
    ]
    for path in plan.shared_paths:
        kind = _shared_spec(path)[0]
        name = path.rstrip("/")
        what = "directory" if kind in "Dd" else "file"
        steps.append(f"  link {release}/{name} -> {plan.app_dir}/shared/{name} (a {what} unless it exists already)")
    if plan.commands:
        steps.append(f"  run COMMANDS in {release}{who}; if they fail, remove it and stop (nothing switched)")
    steps.append("  record the checksums of every entry of it (type, mode, owner, link target, content)")
    return tuple(steps)
