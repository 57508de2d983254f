"""Names of the environment variables the pipe sets on the instances: their grammar, and the reserved ones.

VARIABLES, SECRETS and PARAMETERS_PATH each become a variable exported before COMMANDS. A few names
change how the shell that runs the script behaves, or the dynamic loader, or the AWS CLI that reads
SECRETS. A value under such a name can run code (``BASH_ENV`` is sourced by the next ``bash``,
``LD_PRELOAD`` loads a library into every program) or quietly break the deploy (``PATH``). So these
names are refused, and this table is the only list of them (README: "Reserved names").

Names are compared without case: Windows, where AWS-RunPowerShellScript runs, treats ``path`` and
``PATH`` as the same variable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Reserved:
    """Names (exact, or a prefix written with a trailing ``*``) and why they are refused."""

    patterns: tuple[str, ...]
    why: str
    # False: refused only when PARAMETERS_PATH makes the name from a parameter's name. A name written
    # in VARIABLES or SECRETS is the pipeline author's choice, like any line of COMMANDS.
    everywhere: bool = True

    def matches(self, name: str) -> bool:
        upper = name.upper()
        return any(upper == p or (p.endswith("*") and upper.startswith(p[:-1])) for p in self.patterns)


RESERVED: tuple[Reserved, ...] = (
    Reserved(
        ("BASH_ENV", "ENV", "ZDOTDIR", "FPATH", "PS1", "PS2", "PS3", "PS4", "PROMPT_COMMAND"),
        "the shell runs code from it (a startup file, a prompt, the set -x prefix)",
    ),
    Reserved(
        ("PATH", "IFS", "CDPATH", "GLOBIGNORE", "EXECIGNORE", "SHELLOPTS", "BASHOPTS", "POSIXLY_CORRECT", "TMOUT"),
        "it changes how the shell finds commands, splits words or sets its options",
    ),
    Reserved(("BASH_*",), "bash reads its own BASH_ variables (BASH_FUNC_ defines functions, BASH_XTRACEFD, ...)"),
    Reserved(("HOME",), "it moves ~ and the configuration every program reads, the AWS CLI's included"),
    Reserved(
        (
            "LD_*",
            "GCONV_PATH",
            "GETCONF_DIR",
            "GLIBC_TUNABLES",
            "HOSTALIASES",
            "LOCALDOMAIN",
            "LOCPATH",
            "MALLOC_TRACE",
            "NIS_PATH",
            "NLSPATH",
            "RESOLV_HOST_CONF",
            "RES_OPTIONS",
        ),
        # glibc's own list of variables it drops for setuid programs (sysdeps/generic/unsecvars.h),
        # without TMPDIR and TZDIR, which only choose where files are
        "the dynamic loader and the C library load code or files from it",
    ),
    Reserved(("AWS_*",), "it configures the AWS CLI and SDKs on the instance (credentials, endpoint, config file)"),
    Reserved(
        ("PATHEXT", "COMSPEC", "PSMODULEPATH", "PSEXECUTIONPOLICYPREFERENCE", "__PSLOCKDOWNPOLICY"),
        "it changes how Windows and PowerShell find and run commands",
    ),
    Reserved(("SSM_DEPLOY_*",), "the pipe's own script uses these names"),
    Reserved(
        (
            "NODE_OPTIONS",
            "NODE_PATH",
            "PYTHON*",
            "PERL5OPT",
            "PERL5LIB",
            "PERLLIB",
            "RUBYOPT",
            "RUBYLIB",
            "JAVA_TOOL_OPTIONS",
            "JDK_JAVA_OPTIONS",
            "_JAVA_OPTIONS",
        ),
        "interpreters load code from it",
        everywhere=False,
    ),
)


def reserved_reason(name: str, *, from_parameter_name: bool = False) -> str | None:
    """Why ``name`` may not be set on the instances, or None. ``from_parameter_name``: the name was
    made by PARAMETERS_PATH from a parameter's name, which whoever writes parameters chooses."""
    for entry in RESERVED:
        if (entry.everywhere or from_parameter_name) and entry.matches(name):
            return entry.why
    return None


def name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a VARIABLES or SECRETS name, or None."""
    if not ENV_NAME.fullmatch(name):
        return (
            f"{name[:60]!r} is not a valid environment variable name (letters, digits and _, not starting with a digit)"
        )
    why = reserved_reason(name)
    if why is not None:
        return f"{name} is reserved: {why}. Use another name, or set it yourself in COMMANDS if you mean it"
    return None
