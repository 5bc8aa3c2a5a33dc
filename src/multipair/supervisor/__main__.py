"""``python -m multipair.supervisor``: the same as ``multipair supervise``."""

from __future__ import annotations

import sys

from multipair.supervisor.cli import main

if __name__ == "__main__":
    sys.exit(main())
