"""A sandbox for running the release scripts for real: APP_DIR in a temp dir, a fake ``aws`` that
serves ``s3 cp`` from a local folder (and ``ssm get-parameter`` for the prelude), and helpers to
build artifacts and read what the scripts left behind."""

from __future__ import annotations

import hashlib
import io
import os
import pwd
import shutil
import stat
import struct
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipe.model import SecretRef
from pipe.plan.script import build_script
from pipe.release.remote import ReleasePlan
from unit.unit_support import make_settings

A, B, C, D = "000001-aaaaaaa", "000002-bbbbbbb", "000003-ccccccc", "000004-ddddddd"
BUCKET = "acme-artifacts"
SHELLS = [shell for shell in ("dash", "bash") if shutil.which(shell)]  # AWS-RunShellScript runs `sh`
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
APP_USER = "ssmdeploy-unit"  # created by the app_user fixture (tests run as root in CI)

# the fake CLI logs its arguments, serves `aws s3 cp s3://bucket/key dest` from $S3_ROOT/bucket/key
# and `aws ssm get-parameter --name N` from $PARAMS/<N with / as _>, failing like the real one
FAKE_AWS = r"""#!/bin/sh
{ printf 'aws'; for arg in "$@"; do printf ' %s' "$arg"; done; printf '\n'; } >> "$AWS_LOG"
if [ "$1" = s3 ] && [ "$2" = cp ]; then
  while [ $# -gt 2 ]; do shift; done
  source_key=${1#s3://}
  if [ ! -f "$S3_ROOT/$source_key" ]; then
    echo "fatal error: An error occurred (404) when calling the HeadObject operation: Not Found" >&2
    exit 1
  fi
  exec cp "$S3_ROOT/$source_key" "$2"
fi
if [ "$1" = ssm ] && [ "$2" = get-parameter ]; then
  while [ $# -gt 0 ]; do
    if [ "$1" = --name ]; then name=$2; fi
    shift
  done
  file="$PARAMS/$(printf '%s' "$name" | tr / _)"
  if [ ! -f "$file" ]; then
    echo "An error occurred (ParameterNotFound) when calling the GetParameter operation:" >&2
    exit 254
  fi
  cat "$file" && echo  # the text output: the value, then a newline (awscli/text.py)
  exit
fi
echo "fake aws: unsupported call" >&2
exit 2
"""

# record every attempt (the release's physical directory name), then fail when asked to
COMMANDS = """\
printf '%s\\n' "$(basename "$PWD")" >> "$OUT/commands"
if [ -e fail-commands ]; then exit 7; fi
"""
ACTIVATE = """\
printf '%s\\n' "$(basename "$(pwd -P)")" >> "$OUT/activations"
if [ -e fail-activation ] || [ -e "$OUT/fail-activation" ]; then exit 9; fi
"""


@dataclass(frozen=True)
class Artifact:
    url: str
    sha256: str
    path: Path
    archive_format: str


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def messages(self) -> list[str]:
        """The lines the scripts print to stderr about what failed (user output excluded)."""
        return [line for line in self.stderr.splitlines() if line.startswith("ssm-deploy:")]


@dataclass
class Box:
    root: Path
    counter: list[int] = field(default_factory=lambda: [0])

    def __post_init__(self) -> None:
        for name in ("bin", "s3", "params", "out", "src"):
            (self.root / name).mkdir(exist_ok=True)
        (self.root / "out").chmod(0o777)  # RUN_AS writes its observations there
        fake = self.root / "bin" / "aws"
        fake.write_text(FAKE_AWS)
        fake.chmod(0o755)
        (self.root / "aws.log").touch()

    @property
    def app_dir(self) -> Path:
        return self.root / "srv" / "web-api"

    @property
    def out(self) -> Path:
        return self.root / "out"

    def artifact(self, files: Mapping[str, str | None], archive_format: str = "tar.gz") -> Artifact:
        """Pack ``files`` (name -> text, or None for a directory) and put it in the fake S3 under its
        content-derived key, as the pipe does."""
        self.counter[0] += 1
        staging = self.root / "src" / f"artifact-{self.counter[0]}.{archive_format}"
        _pack(staging, files, archive_format)
        return self.upload(staging, archive_format)

    def upload(self, staging: Path, archive_format: str = "tar.gz") -> Artifact:
        """Put the archive at ``staging`` in the fake S3 under its content-derived key."""
        sha = hashlib.sha256(staging.read_bytes()).hexdigest()
        key = f"web-api/{sha}.{archive_format}"
        target = self.root / "s3" / BUCKET / key
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(staging, target)
        return Artifact(f"s3://{BUCKET}/{key}", sha, target, archive_format)

    def release_artifact(self, release: str, archive_format: str = "tar.gz", **extra: str | None) -> Artifact:
        return self.artifact({"app.txt": release, "bin": None, "bin/start.sh": "echo start", **extra}, archive_format)

    def plan(self, release: str, artifact: Artifact, **changes: Any) -> ReleasePlan:
        values: dict[str, Any] = {
            "app_dir": str(self.app_dir),
            "release_id": release,
            "artifact_url": artifact.url,
            "sha256": artifact.sha256,
            "archive_format": artifact.archive_format,
            "region": "eu-west-1",
            "commands": COMMANDS,
            "activate_commands": ACTIVATE,
            "env_names": ("OUT",),
        }
        values.update(changes)
        return ReleasePlan(**values)

    def env(self, path: str | None = None) -> dict[str, str]:
        return {
            "PATH": path if path is not None else f"{self.root / 'bin'}:{SYSTEM_PATH}",
            "AWS_LOG": str(self.root / "aws.log"),
            "S3_ROOT": str(self.root / "s3"),
            "PARAMS": str(self.root / "params"),
            "OUT": str(self.out),
            "AWS_SSM_INSTANCE_ID": "i-0123456789abcdef0",  # the SSM Agent sets these two
            "AWS_SSM_REGION_NAME": "eu-west-1",
        }

    def script(
        self, body: str, secrets: tuple[SecretRef, ...] = (), variables: tuple[tuple[str, str], ...] = ()
    ) -> Path:
        """The whole script an instance runs: the pipe's prelude (secrets, variables), then ``body``."""
        settings = make_settings(secrets=list(secrets), variables=list(variables))
        script = self.root / "_script.sh"  # the SSM Agent writes the commands to a file and runs `sh -c` on it
        script.write_text("\n".join(build_script(settings, body)) + "\n")
        return script

    def run(
        self,
        body: str,
        shell: str = SHELLS[0],
        path: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        **script: Any,
    ) -> Run:
        done = subprocess.run(
            [shell, str(self.script(body, **script))],
            env={**self.env(path), **(extra_env or {})},
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return Run(done.returncode, done.stdout, done.stderr)

    def store_parameter(self, name: str, value: str) -> None:
        (self.root / "params" / name.replace("/", "_")).write_text(value)

    # --- what the scripts left behind -----------------------------------------------------------

    def current(self) -> str | None:
        link = self.app_dir / "current"
        return os.readlink(link) if link.is_symlink() else None

    def releases(self) -> list[str]:
        folder = self.app_dir / "releases"
        return sorted(entry.name for entry in folder.iterdir()) if folder.is_dir() else []

    def state(self, name: str) -> str:
        path = self.app_dir / ".ssm-deploy" / name
        return path.read_text() if path.exists() else ""

    def history(self) -> list[str]:
        return self.state("history").split()

    def observed(self, name: str) -> list[str]:
        path = self.out / name
        # only newlines end a line: splitlines() would also cut a path at U+2028 and friends
        return path.read_text().split("\n")[:-1] if path.exists() else []

    def downloads(self) -> list[str]:
        return [line for line in (self.root / "aws.log").read_text().splitlines() if line.startswith("aws s3 cp")]


def _pack(path: Path, files: Mapping[str, str | None], archive_format: str) -> None:
    if archive_format == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            for name, text in files.items():
                if text is None:
                    archive.writestr(name.rstrip("/") + "/", "")
                else:
                    archive.writestr(name, text)
        return
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if text is None else 0o644
            if text is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                data = text.encode()
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))


# --- archives with any entry, hostile ones included ------------------------------------------------

Member = tuple[str, bytes, int, str]  # name, tar type, mode, data or link target


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, data: str = "") -> Member:
    return (name, kind, mode, data)


def write_tgz(path: Path, members: list[Member]) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, mode, data in members:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = kind, mode, 1_600_000_000
            content = None
            if kind == tarfile.REGTYPE:
                content = io.BytesIO(data.encode())
                info.size = len(data.encode())
            else:
                info.linkname = data
            tar.addfile(info, content)
    return path


def write_zip(path: Path, members: list[tuple[str, int, str]]) -> Path:
    """(name, st_mode with its file type, data or link target) -> a zip with Unix attributes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, mode, data in members:
            info = zipfile.ZipInfo(name, (2020, 1, 2, 3, 4, 6))
            info.create_system = 3
            info.external_attr = mode << 16
            archive.writestr(info, data)
    return path


def declare_size(path: Path, size: int) -> Path:
    """Rewrite every zip entry's uncompressed size, in its local header and in the central directory, to
    ``size`` (what a zip bomb declares; the bytes stay as they are)."""
    raw = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = raw.find(signature)
        while at >= 0:
            struct.pack_into("<I", raw, at + offset, size)
            at = raw.find(signature, at + 4)
    path.write_bytes(bytes(raw))
    return path


def open_temp_dir() -> Iterator[Path]:
    """A temp dir every user can traverse (pytest's tmp_path lives under a 0700 directory, which
    the RUN_AS user could not enter)."""
    root = Path(tempfile.mkdtemp(prefix="ssm-release-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def is_root() -> bool:
    return os.geteuid() == 0


def ensure_app_user() -> pwd.struct_passwd:
    """The second user for RUN_AS, created once (idempotent), with a login profile that puts a
    marker directory on PATH, the way nvm's lines in ~/.profile put node there. Its shell is
    nologin, like a service account: RUN_AS must not depend on it."""
    try:
        entry = pwd.getpwnam(APP_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/usr/sbin/nologin", APP_USER], check=True)
        entry = pwd.getpwnam(APP_USER)
    home = Path(entry.pw_dir)
    home.mkdir(exist_ok=True)
    for stale in (".bash_profile", ".bash_login"):  # bash would read these instead of ~/.profile
        (home / stale).unlink(missing_ok=True)
    tools = home / "login-bin"
    tools.mkdir(exist_ok=True)
    marker = tools / "ssm-unit-marker"
    marker.write_text("#!/bin/sh\necho marker-from-login-path\n")
    marker.chmod(0o755)
    (home / ".profile").write_text('PATH="$HOME/login-bin:$PATH"\nexport SSM_UNIT_LOGIN=from-profile\n')
    for path in (home, tools, marker, home / ".profile"):
        os.lchown(path, entry.pw_uid, entry.pw_gid)
    return entry


def owners(root: Path) -> set[int]:
    """The owner uid of ``root`` and of everything under it (links themselves, not their targets)."""
    found = {root.lstat().st_uid}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(os.lstat(os.path.join(folder, name)).st_uid)
    return found


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)
