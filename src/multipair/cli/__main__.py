"""``python -m multipair.cli``: the same as the ``multipair`` script."""

from __future__ import annotations

import sys

from multipair.cli import main

sys.exit(main())
