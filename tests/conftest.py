"""Suite-wide ordering: the long subprocess tests start first.

Under pytest-xdist (``make test``) a worker that picks up the 75 s demo test at the end would keep
the whole run waiting for it; started first, it overlaps with everything else. Without xdist the
order does not matter (every test sets up its own ports, folders and processes).
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
