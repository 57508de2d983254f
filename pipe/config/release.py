"""The release mode's names and pure checks: release ids, APP_DIR, SHARED_PATHS, RUN_AS, the artifact's
S3 prefix, the ledger's name and its archive's folder. The stages that render, upload and record use
the same facts."""

from __future__ import annotations

import posixpath
import re

from pipe.limits import PARAMETER_NAME_MAX, S3_KEY_MAX_BYTES

RELEASE_ID = re.compile(r"[0-9]{6,}-[0-9a-z]{1,40}", re.ASCII)
RELEASE_ID_MAX = 64  # characters of a release id the ledger records (a 20-digit build number fits)
NO_COMMIT = "nocommit"
DEFAULT_KEEP_RELEASES = 5
MIN_KEEP_RELEASES = 2  # the live release and the one before it are never pruned
MAX_KEEP_RELEASES = 100
PREVIOUS = "previous"  # RELEASE: the release that was live before the live one, from the ledger
LEDGER_ROOT = "/release-ledger"  # Parameter Store refuses names whose first segment starts with aws or ssm
SEGMENT = re.compile(r"[A-Za-z0-9_.-]{1,128}")
ARN_ALLOWANCE = 64  # PARAMETER_NAME_MAX counts the ARN before the name: arn:aws:ssm:<region>:<account>:parameter
PREFIX_PATTERN = re.compile(r"[A-Za-z0-9!_.*'()/-]*")  # S3's safe characters for keys
KEY_SUFFIX_BYTES = 64 + len(".tar.gz")  # the SHA-256 and the archive's suffix after the prefix
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,31}", re.ASCII)  # useradd's portable names
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def release_id(build_number: str, commit: str) -> str:
    """``<build number, 6 digits>-<short commit>``, e.g. 000042-0123456: sorts in build order."""
    short = re.sub(r"[^0-9a-z]", "", commit.lower())[:7] or NO_COMMIT
    number = int(build_number) if build_number.isdigit() else 0
    return f"{number:06d}-{short}"


def release_id_problem(text: str) -> str | None:
    if RELEASE_ID.fullmatch(text):
        return None
    return f"{text!r} is not a release id: expected <6+ digit build number>-<short commit>, e.g. 000042-0123456"


def app_dir_problem(text: str) -> str | None:
    if _CONTROL.search(text):
        return "APP_DIR must not contain control characters (newline, tab...)"
    # normpath keeps a leading // (POSIX leaves its meaning to the system): refuse it explicitly
    if not text.startswith("/") or text == "/" or "//" in text or posixpath.normpath(text) != text:
        return f"APP_DIR {text!r} must be an absolute, normalized directory path other than /, e.g. /srv/web-api"
    return None


def shared_path_problem(text: str) -> str | None:
    """A SHARED_PATHS entry: relative to the release, no ``..``; a trailing ``/`` marks a directory."""
    core = text[:-1] if text.endswith("/") else text
    if _CONTROL.search(text):
        return f"SHARED_PATHS entry {text!r} must not contain control characters"
    if not core or core.startswith("/") or any(part in ("", ".", "..") for part in core.split("/")):
        return (
            f"SHARED_PATHS entry {text!r} must be a relative path inside the release without . or .., "
            "e.g. .env or logs/"
        )
    return None


def run_as_problem(text: str) -> str | None:
    if _USER.fullmatch(text) and not text.isdigit():
        return None
    return f"RUN_AS {text!r} is not a user name (letters, digits, . _ -; at most 32 characters)"


def check_artifact_prefix(prefix: str) -> str | None:
    """What is wrong with ARTIFACT_PREFIX as the start of an S3 key, or None."""
    if not PREFIX_PATTERN.fullmatch(prefix):
        return (
            f"{prefix!r} may only use letters, digits and !_.*'()/- (S3's safe characters for keys); "
            "no spaces, and nothing secret: the key is visible to anyone who can list the bucket"
        )
    if prefix.startswith("/") or "//" in prefix or any(part in (".", "..") for part in prefix.split("/")):
        return f"{prefix!r} must not start with /, contain // or have . or .. segments (e.g. web-api/)"
    if len(prefix.encode()) + KEY_SUFFIX_BYTES > S3_KEY_MAX_BYTES:
        return f"is {len(prefix)} characters: S3 keys are at most {S3_KEY_MAX_BYTES} bytes with the digest"
    return None


def check_ledger_name(service: str, environment: str) -> str | None:
    """What keeps (service, environment) from naming a ledger parameter, or None."""
    for what, value in (("service", service), ("environment", environment)):
        if not SEGMENT.fullmatch(value):
            return (
                f"the ledger's {what} {value!r} must be 1-128 letters, digits or _.- (a Parameter Store path segment)"
            )
        if not value.strip("."):  # '..' in the ledger's, the lock's and the archive's names: a relative path
            return f"the ledger's {what} {value!r} must not be only dots (a path segment of the ledger's names)"
    if len(ledger_path(service, environment)) + ARN_ALLOWANCE > PARAMETER_NAME_MAX:
        return f"the ledger name {ledger_path(service, environment)} is too long for Parameter Store"
    return None


def ledger_path(service: str, environment: str) -> str:
    return f"{LEDGER_ROOT}/{service}/{environment}/release"


def ledger_archive_folder(artifact_prefix: str, service: str, environment: str) -> str:
    """``<ARTIFACT_PREFIX>ledger/<service>/<environment>/``: the release bucket's folder that keeps a
    copy of every ledger version, beyond the 100 Parameter Store keeps."""
    return f"{artifact_prefix}ledger/{service}/{environment}/"


def default_name(repo: str) -> str:
    """The repository's slug as a ledger segment and key prefix: characters S3 keys and Parameter
    Store paths both take (others become ``-``), at most 128."""
    slug = re.sub(r"[^A-Za-z0-9_.-]", "-", repo.rsplit("/", 1)[-1])[:128].strip(".")
    return slug or "app"
