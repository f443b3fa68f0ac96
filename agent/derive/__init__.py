"""Derivation: readings → status, alarms, downtime, part counts → events.

Pure: no I/O. The snapshots are stored by the shell (``agent.state.store``).
"""

from .alarms import ActiveAlarm
from .downtime import Downtime
from .errors import (
    DeriveError,
    InvalidCategorization,
    SnapshotError,
    UnknownCategory,
    UnknownDowntime,
)
from .machine import MachineDeriver
from .spec import Categories, Category, DerivationSpec, parse_categories, parse_derivation

__all__ = [
    "ActiveAlarm",
    "Categories",
    "Category",
    "DerivationSpec",
    "DeriveError",
    "Downtime",
    "InvalidCategorization",
    "MachineDeriver",
    "SnapshotError",
    "UnknownCategory",
    "UnknownDowntime",
    "parse_categories",
    "parse_derivation",
]
