"""Entry point: ``python3 pipe/pipe.py`` from a checkout, or the image's ENTRYPOINT."""

import sys
from pathlib import Path

# Run as a script, Python puts this folder first on sys.path, where this file would shadow the
# ``pipe`` package; put the folder that holds the package there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from pipe.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
