"""What the pipe does before it reads its variables, paid on every run: counted, never timed."""

from __future__ import annotations

import subprocess
import sys

from support import ROOT


def test_starting_the_pipe_reads_no_source_file_of_its_own() -> None:
    """The release install's unpack program (contents.py without its comments, made with ``ast``) is
    made when a release script is first built, not when the pipe starts: most runs send none."""
    probe = (
        "import pathlib\n"
        "read = []\n"
        "read_text = pathlib.Path.read_text\n"
        "pathlib.Path.read_text = lambda path, *args, **kwargs: read.append(path) or read_text(path, *args, **kwargs)\n"
        "import pipe.main\n"
        "print(*[path for path in read if path.suffix == '.py'], sep='\\n')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []
