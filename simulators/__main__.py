"""``python -m simulators``: the same as ``edge-agent simulate``."""

from __future__ import annotations

import sys

from simulators.cli import main

if __name__ == "__main__":
    sys.exit(main())
