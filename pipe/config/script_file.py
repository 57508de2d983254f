"""SCRIPT: a script from the repository sent as the command body instead of COMMANDS."""

from __future__ import annotations

from pathlib import Path

from pipe.config.parsers import shown, unix_line_endings
from pipe.limits import MAX_SCRIPT_BYTES


def read_script(path_text: str, clone_dir: str) -> str:
    """The script's text, with CRLF line endings as LF (a script saved on Windows would otherwise end
    in ``exit 0\r``); refuses paths outside the clone directory, big files and non-UTF-8."""
    try:
        return _read(path_text, clone_dir)
    except RuntimeError:  # Path.resolve() on a symlink loop, before Python 3.13
        raise ValueError(f"{shown(path_text)} cannot be read (a symlink loop): give a path to a file") from None
    except OSError as error:  # a name too long, a loop (Python 3.13+), no permission...
        reason = error.strerror or type(error).__name__
        raise ValueError(f"{shown(path_text)} cannot be read ({reason}): give a path to a file") from None


def _read(path_text: str, clone_dir: str) -> str:
    base = Path(clone_dir).resolve()
    path = (base / path_text).resolve()  # an absolute path_text replaces base; symlinks are followed
    if path != base and base not in path.parents:
        raise ValueError(f"{shown(path_text)} is outside the clone directory {base}: give a path inside the repository")
    if not path.is_file():
        raise ValueError(f"{shown(path_text)} is not a file in the clone directory ({shown(str(path))})")
    size = path.stat().st_size
    if size > MAX_SCRIPT_BYTES:
        raise ValueError(
            f"{shown(path_text)} is {size:,} bytes; at most {MAX_SCRIPT_BYTES:,} can be sent. Ship it to the "
            "instances with your release (e.g. in the artifact they download) and run it there with COMMANDS"
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{shown(path_text)} is not UTF-8 text") from None
    return unix_line_endings(text)
