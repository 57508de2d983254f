"""What the e2e tests of release mode share beyond their fixtures (conftest.py): the release ids a build number
gives, and the build steps' artifacts (a .tgz in the clone directory, named as ARTIFACT takes it)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

# the release ids builds 1 to 4 of commit 0123456 get
A, B, C, D = "000001-0123456", "000002-0123456", "000003-0123456", "000004-0123456"


def _tgz(clone: Path, name: str, files: dict[str, str]) -> str:
    """``files`` ({path: text}) as clone/``name``, each a regular file of mode 644 (TarInfo's default)."""
    with tarfile.open(clone / name, "w:gz") as archive:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return name


def build_bare(clone: Path, version: str, name: str = "web-api.tgz") -> str:
    """A build step's artifact: a .tgz with the app's version in it, nothing else."""
    return _tgz(clone, name, {"version.txt": f"{version}\n"})


def build(clone: Path, version: str) -> str:
    """A .tgz holding version.txt (what the static server serves) and index.html."""
    return _tgz(clone, "web-api.tgz", {"version.txt": f"{version}\n", "index.html": f"<p>{version}</p>\n"})


# An app whose code says which release it is: VERSION is in the code, so a process keeps serving the
# release it was started from whatever `current` points to later (as node, python, java all do).
SERVER = """import http.server, sys
VERSION = {version!r}
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (VERSION + "\\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def build_server(clone: Path, version: str, entry: str = "server.py", **more: str) -> str:
    """A .tgz holding version.txt, the server as ``entry`` (serving ``version``) and ``more`` files."""
    files = {"version.txt": f"{version}\n", entry: SERVER.format(version=version), **more}
    return _tgz(clone, "web-api.tgz", files)
