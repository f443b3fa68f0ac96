"""What derivation refuses, as exceptions whose message names the problem in plain words."""

from __future__ import annotations


class DeriveError(Exception):
    """Base of every refusal from ``agent.derive`` (bad categorization request, unusable snapshot, ...)."""


class UnknownDowntime(DeriveError):
    """``categorize`` named a downtime id that is neither open nor among the recent ones."""


class UnknownCategory(DeriveError):
    """A category that is not in the plant's ``downtime_categories`` list."""


class InvalidCategorization(DeriveError):
    """Notes or operator of a categorization request have the wrong shape."""


class SnapshotError(DeriveError):
    """A stored snapshot cannot be restored; the message names the field."""
