"""Reading a stored snapshot dict field by field, so a damaged one fails naming the field."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import SnapshotError


class Fields:
    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, Mapping):
            raise SnapshotError(f"{path}: expected an object")
        self.data = data
        self.path = path

    def error(self, key: str, message: str) -> SnapshotError:
        return SnapshotError(f"{self.path}.{key}: {message}")

    def _get(self, key: str) -> Any:
        if key not in self.data:
            raise self.error(key, "missing")
        return self.data[key]

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self.error(key, "expected a string")
        return value

    def opt_text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is not None and not isinstance(value, str):
            raise self.error(key, "expected a string or null")
        return value

    def number(self, key: str) -> float:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.error(key, "expected a number")
        return float(value)

    def opt_number(self, key: str) -> float | None:
        return None if self.data.get(key) is None else self.number(key)

    def integer(self, key: str) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, "expected an integer")
        return value

    def opt_integer(self, key: str) -> int | None:
        return None if self.data.get(key) is None else self.integer(key)

    def flag(self, key: str) -> bool:
        value = self.data.get(key, False)
        if not isinstance(value, bool):
            raise self.error(key, "expected true or false")
        return value

    def sub(self, key: str) -> Fields:
        return Fields(self._get(key), f"{self.path}.{key}")

    def opt_sub(self, key: str) -> Fields | None:
        return None if self.data.get(key) is None else self.sub(key)

    def items(self, key: str) -> list[Fields]:
        value = self.data.get(key) or []
        if not isinstance(value, list):
            raise self.error(key, "expected a list")
        return [Fields(item, f"{self.path}.{key}[{i}]") for i, item in enumerate(value)]

    def raw(self, key: str) -> Any:
        return self.data.get(key)
