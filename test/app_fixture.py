"""The users' app as a test fixture: ``test/fixtures/web-api`` packed into a release artifact.

``pack_release`` packs the files the README's build step packs (with ``tar -czf`` and fixed file
times, the real tar) from a copy of the fixture that knows its release id (``release.txt``, which the app
answers on ``/`` and ``/version``) and, when asked, is ``broken`` (its ``/health`` answers 500).
The same release packs to the same bytes every time (fixed file times; GNU tar's gzip header carries
no time), so a test can pack it again and get the same SHA-256, as a rebuilt commit would not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "web-api"
APP_FILES = ("server.js", "package.json", "package-lock.json", "ecosystem.config.js")  # what the build ships
ARTIFACT_NAME = "web-api.tgz"
RELEASE_FILE = "release.txt"
BROKEN_MARKER = "broken"  # present in a release packed broken: GET /health answers 500
PACKED_AT = 1_704_067_200  # 2024-01-01T00:00:00Z, every packed file's mtime
# How the README's Releases example installs and starts it (test_docs_contract.py checks ACTIVATE)
INSTALL = "npm ci --omit=dev"
ACTIVATE = "pm2 startOrReload ecosystem.config.js --env {environment}"
HEALTH_CHECK = "curl -fsS --max-time 5 http://localhost:3000/health"


def pack_release(folder: Path, release: str, *, broken: bool = False, ecosystem: str | None = None) -> Path:
    """Pack the fixture as release ``release`` under ``folder``; return the .tgz's path.

    The build tree is ``folder/web-api-<release>[-broken]/`` (replaced if there), the artifact
    ``web-api.tgz`` inside it, holding the app's files plus ``release.txt`` (and ``broken``).
    ``ecosystem`` replaces the text of ``ecosystem.config.js`` (a recipe other than the README's).
    """
    if not release or release != release.strip() or "/" in release or release in (".", ".."):
        raise ValueError(f"a release id is one path component without surrounding spaces: {release!r}")
    build = folder / f"web-api-{release}{'-broken' if broken else ''}"
    if build.exists():
        shutil.rmtree(build)
    build.mkdir(parents=True)
    for name in APP_FILES:
        shutil.copyfile(FIXTURE_DIR / name, build / name)
    if ecosystem is not None:
        (build / "ecosystem.config.js").write_text(ecosystem, encoding="utf-8")
    (build / RELEASE_FILE).write_text(release + "\n", encoding="utf-8")
    files = [*APP_FILES, RELEASE_FILE]
    if broken:
        (build / BROKEN_MARKER).write_text("packed broken by the tests: /health answers 500\n", encoding="utf-8")
        files.append(BROKEN_MARKER)
    for name in files:
        (build / name).chmod(0o644)
        os.utime(build / name, (PACKED_AT, PACKED_AT))
    subprocess.run(["tar", "-czf", ARTIFACT_NAME, *files], cwd=build, check=True, capture_output=True, timeout=60)
    return build / ARTIFACT_NAME
