"""Derivation: readings → status, alarms, downtime, part counts → events. Pure except ``store``."""

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
    "Categories",
    "Category",
    "DerivationSpec",
    "DeriveError",
    "InvalidCategorization",
    "MachineDeriver",
    "SnapshotError",
    "UnknownCategory",
    "UnknownDowntime",
    "parse_categories",
    "parse_derivation",
]
