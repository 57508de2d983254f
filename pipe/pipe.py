"""Entry point: ``python3 pipe/pipe.py`` from a checkout, or the image's ENTRYPOINT."""

import gc
import sys
from pathlib import Path

# Run as a script, Python puts this folder first on sys.path, where this file would shadow the
# ``pipe`` package; put the folder that holds the package there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from pipe.main import main  # noqa: E402

if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        # The interpreter's last garbage collection would walk every object still alive (botocore's
        # service models above all): a fifth of a second of CPU, most of a second on a busy runner,
        # after the work is done. Frozen objects are left to the process's end; files, logging and
        # atexit handlers are closed as usual.
        gc.freeze()
