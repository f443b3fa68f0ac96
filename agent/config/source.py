"""YAML loading that remembers where each key came from, and a reader that collects every problem.

Every error names file, line and key path (``machines/mill-01.yaml:14: tags.spindle.type: ...``), and
all problems of a file are reported together rather than one per run.
"""

from __future__ import annotations

import builtins
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml

from agent.config import yaml_events
from agent.config.interpolate import interpolate
from agent.config.yaml_events import LineDict as LineDict  # re-exported: parsers import them from here
from agent.config.yaml_events import LineList as LineList

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """One or more problems in configuration files; ``str()`` lists them all, one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass
class Problems:
    items: list[Problem] = field(default_factory=list)

    def add(self, file: str, line: int | None, path: str, message: str) -> None:
        self.items.append(Problem(file, line, path, message))

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.in_key = False  # set while a mapping's key is built: only values are interpolated
        self.unfilled: list[tuple[int, str]] = []  # (line, message) of each ${...} that failed


def _construct_str(loader: _Loader, node: yaml.ScalarNode) -> Any:
    value = loader.construct_scalar(node)
    if loader.in_key or "$" not in value:
        return value
    try:
        text = interpolate(value, os.environ)
    except ValueError as exc:
        loader.unfilled.append((node.start_mark.line + 1, str(exc)))
        return value
    if node.style is not None:  # quoted: stays a string, as written
        return text
    # Unquoted: read as YAML would have read the filled-in text (``enabled: ${X:-true}`` is a bool).
    tag = loader.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    if tag == node.tag:
        return text
    return loader.construct_object(yaml.ScalarNode(tag, text, node.start_mark, node.end_mark))


# libyaml's parser (when PyYAML was built with it) reads a file ~10x faster than the pure one, and
# yaml_events builds the tree from its events without PyYAML's composer and constructors (another
# ~3x: 2,000 machine files took 1.4 s of CPU that way, 0.5 s now). Files that use more of YAML than
# plain mappings, lists and scalars go through libyaml with PyYAML's constructors. Same line marks
# either way. libyaml's recursion is C with no limit, so deeply nested flow collections, and
# anything a YAML error was found in (for the exact message), go to the pure-Python loader.
_FastLoader: type[Any] | None = None
_FastParser: type[Any] | None = None
if getattr(yaml, "__with_libyaml__", False):
    from yaml._yaml import CParser

    class _CLoader(yaml.CSafeLoader):  # type: ignore[misc, name-defined, unused-ignore]
        pass

    _FastLoader = _CLoader
    _FastParser = CParser
_FAST_MAX_FLOW = 100


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        loader.in_key = True
        try:
            key = loader.construct_object(key_node, deep=True)
        finally:
            loader.in_key = False
        if not isinstance(key, str | int | float | bool):
            raise yaml.constructor.ConstructorError(
                None, None, f"unhashable key {key!r}", key_node.start_mark
            )
        skey = str(key) if not isinstance(key, str) else key
        if skey in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {skey!r}", key_node.start_mark
            )
        out[skey] = loader.construct_object(value_node, deep=True)
        out.key_lines[skey] = key_node.start_mark.line + 1
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


for _loader in (_Loader, _FastLoader):
    if _loader is not None:
        _loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
        _loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
_Loader.add_constructor("tag:yaml.org,2002:str", _construct_str)


def load_yaml(path: Path, problems: Problems, display: str | None = None) -> Any:
    """Parse one YAML file; a missing file or a syntax error becomes a problem and ``None``."""
    name = display or str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        problems.add(name, None, "", "file not found")
        return None
    except IsADirectoryError:
        problems.add(name, None, "", "is a directory, not a YAML file")
        return None
    except OSError as exc:
        problems.add(name, None, "", f"cannot read: {exc.strerror or exc}")
        return None
    text = decode_utf8(raw, name, problems)
    return None if text is None else parse_yaml(text, name, problems)


def decode_utf8(raw: bytes, name: str, problems: Problems) -> str | None:
    """YAML files are UTF-8 (YAML 1.1 allows UTF-16 with a BOM; no editor on a plant PC writes it)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        problems.add(
            name,
            line,
            "",
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {column}); save the file as UTF-8",
        )
        return None


def parse_yaml(text: str, name: str, problems: Problems) -> Any:
    # The fast loader has no ${...} interpolation: a file that may use it goes to the pure loader.
    if _FastParser is not None and "$" not in text and text.count("[") + text.count("{") < _FAST_MAX_FLOW:
        try:
            return yaml_events.read(text, _FastParser)
        except yaml_events.Unusual:  # anchors, tags, merge keys, ...: PyYAML's constructors build them
            try:
                return yaml.load(text, Loader=cast(type[yaml.SafeLoader], _FastLoader))  # a CSafeLoader
            except Exception:  # the pure loader below reads it again and says why
                pass
        except Exception:  # a YAML error: the pure loader below reads it again and says why
            pass
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # derives from SafeLoader; reading the text may already fail
        data = loader.get_single_data()
        for at, message in loader.unfilled:
            problems.add(name, at, "", message)
        # A file with an unfilled ${...} failed as a whole: its other checks would only echo it.
        return None if loader.unfilled else data
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problems.add(name, line, "", f"YAML syntax error: {exc.problem or exc}")
    except yaml.YAMLError as exc:
        problems.add(name, None, "", f"YAML error: {exc}")
    except RecursionError:
        problems.add(name, None, "", "YAML nested too deeply to read")
    except (ValueError, TypeError, OverflowError) as exc:
        # PyYAML's constructors raise these for values that parse but cannot be built, such as the
        # date 2024-02-30 or a !!binary that is not base64; the parser has no line for them.
        problems.add(name, None, "", f"YAML value cannot be read: {exc}")
    finally:
        if loader is not None:
            loader.dispose()
    return None


# --- value converters: each takes the raw YAML value and returns the typed value or raises ValueError


def as_str(value: Any) -> str:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected a non-empty string, got {_show(value)}")


def as_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?(0x[0-9a-fA-F]+|\d+)", value.strip()):
        return int(value.strip(), 0)
    raise ValueError(f"expected an integer, got {_show(value)}")


def as_float(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise ValueError(f"expected a number, got {_show(value)}")


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected true or false, got {_show(value)}")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def as_duration(value: Any) -> float:
    """Seconds from ``250ms``, ``5s``, ``30m``, ``2h``, ``7d`` or a bare number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(f"expected a duration like 250ms, 5s, 30m, 2h or 7d, got {_show(value)}")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 10**6, "MiB": 2**20, "GB": 10**9, "GiB": 2**30}


def as_size(value: Any) -> int:
    """Bytes from ``512MiB``, ``2GB`` or a bare number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
    raise ValueError(f"expected a size like 64MiB or 2GiB, got {_show(value)}")


def one_of(*choices: str, case: bool = False) -> Callable[[Any], str]:
    """A converter accepting only the given words (case-insensitive unless ``case``)."""

    def convert(value: Any) -> str:
        if isinstance(value, str):
            for choice in choices:
                if value == choice or (not case and value.lower() == choice.lower()):
                    return choice
        raise ValueError(f"unknown value {_show(value)}; expected one of {', '.join(choices)}")

    return convert


def in_range(
    conv: Callable[[Any], T], lo: float | None = None, hi: float | None = None
) -> Callable[[Any], T]:
    def convert(value: Any) -> T:
        out = conv(value)
        num = cast(float, out)
        if lo is not None and num < lo:
            raise ValueError(f"must be at least {lo:g}, got {num:g}")
        if hi is not None and num > hi:
            raise ValueError(f"must be at most {hi:g}, got {num:g}")
        return out

    return convert


def _show(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return repr(value)


class Secret:
    """A secret value that never shows itself in ``repr``, ``str``, logs or errors."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(<redacted>, source={self.source!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


_MISSING: Any = object()


class Section:
    """Reads one YAML mapping; records problems instead of raising, and reports unknown keys on ``done``.

    A key that failed to convert yields the default (or ``None`` where required): the caller still
    builds its object, and the collected problems decide whether the whole file is accepted.
    """

    def __init__(
        self,
        data: Any,
        *,
        file: str,
        path: str,
        problems: Problems,
        line: int | None = None,
        base_dir: Path | None = None,
    ) -> None:
        self.file = file
        self.path = path
        self.problems = problems
        self.base_dir = base_dir or Path(file).parent
        self.line = getattr(data, "line", None) or line
        self.ok = True
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            self.error_here(f"expected a mapping, got {_show(data)}")
            data = {}
            self.ok = False
        self.data: Mapping[str, Any] = data
        self._key_lines: dict[str, int] = getattr(data, "key_lines", {})
        self._used: set[str] = set()
        self._reported: set[str] = set()

    # -- locating

    def key_path(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key

    def line_of(self, key: str) -> int | None:
        return self._key_lines.get(key, self.line)

    def error(self, key: str, message: str) -> None:
        self.problems.add(self.file, self.line_of(key), self.key_path(key), message)

    def error_here(self, message: str) -> None:
        self.problems.add(self.file, self.line, self.path, message)

    # -- reading

    def has(self, key: str) -> bool:
        return key in self.data

    def keys(self) -> builtins.list[str]:
        return list(self.data.keys())

    def raw(self, key: str, default: Any = None) -> Any:
        self._used.add(key)
        return self.data.get(key, default)

    def need(self, key: str, conv: Callable[[Any], T]) -> T:
        """A required key."""
        self._used.add(key)
        if key not in self.data or self.data[key] is None:
            self.problems.add(self.file, self.line, self.key_path(key), "required key is missing")
            return cast(T, None)
        return self._convert(key, conv)

    def get(self, key: str, conv: Callable[[Any], T], default: T) -> T:
        self._used.add(key)
        if key not in self.data or self.data[key] is None:
            return default
        value = self._convert(key, conv, default)
        return value

    def opt(self, key: str, conv: Callable[[Any], T]) -> T | None:
        self._used.add(key)
        if key not in self.data or self.data[key] is None:
            return None
        return self._convert(key, conv, None)

    def _convert(self, key: str, conv: Callable[[Any], T], fallback: Any = None) -> T:
        try:
            return conv(self.data[key])
        except ValueError as exc:
            self.error(key, str(exc))
            return cast(T, fallback)

    def sub(self, key: str, *, required: bool = False) -> Section:
        """A nested mapping (an empty one when absent and not required)."""
        self._used.add(key)
        if key not in self.data and required:
            self.problems.add(self.file, self.line, self.key_path(key), "required key is missing")
        return Section(
            self.data.get(key),
            file=self.file,
            path=self.key_path(key),
            problems=self.problems,
            line=self.line_of(key),
            base_dir=self.base_dir,
        )

    def list(self, key: str, *, required: bool = False) -> builtins.list[tuple[str, int | None, Any]]:
        """A list value as ``(key path, line, item)`` triples; a single scalar counts as a list of one."""
        self._used.add(key)
        value = self.data.get(key)
        if value is None:
            if required:
                self.problems.add(self.file, self.line, self.key_path(key), "required key is missing")
            return []
        if not isinstance(value, list):
            if isinstance(value, str) and "," in value:
                # `downtime_categories: Setup, Tooling` would be one category named "Setup, Tooling".
                items = ", ".join(part.strip() for part in value.split(","))
                if key not in self._reported:  # readers may ask for a list twice; one error
                    self._reported.add(key)
                    self.error(key, f"one value with commas; for a list write [{items}]")
                return []
            value = [value]
        lines: list[int] = getattr(value, "item_lines", [])
        out = []
        for i, item in enumerate(value):
            line = lines[i] if i < len(lines) else self.line_of(key)
            out.append((f"{self.key_path(key)}[{i}]", line, item))
        return out

    def sections(self, key: str, *, required: bool = False) -> builtins.list[Section]:
        """A list of mappings."""
        return [
            Section(
                item, file=self.file, path=path, problems=self.problems, line=line, base_dir=self.base_dir
            )
            for path, line, item in self.list(key, required=required)
        ]

    def named_sections(self, key: str) -> Iterator[tuple[str, Section]]:
        """A mapping of name -> mapping, such as ``tags:``."""
        sub = self.sub(key)
        for name in sub.keys():  # noqa: SIM118 - Section is not a dict
            yield name, sub.sub(name)

    def list_of(self, key: str, conv: Callable[[Any], T]) -> builtins.list[T]:
        out: builtins.list[T] = []
        for path, line, item in self.list(key):
            try:
                out.append(conv(item))
            except ValueError as exc:
                self.problems.add(self.file, line, path, str(exc))
        return out

    def secret(self, key: str, *, required: bool = False) -> Secret | None:
        """A secret given as ``key`` (literal), ``key_file`` (path) or ``key_env`` (variable name)."""
        literal, file_key, env_key = key, f"{key}_file", f"{key}_env"
        given = [k for k in (literal, file_key, env_key) if self.data.get(k) is not None]
        for k in (literal, file_key, env_key):
            self._used.add(k)
        if len(given) > 1:
            self.error(given[1], f"give only one of {literal}, {file_key}, {env_key}")
            return None
        if not given:
            if required:
                self.problems.add(
                    self.file,
                    self.line,
                    self.key_path(key),
                    f"required: one of {literal}, {file_key}, {env_key}",
                )
            return None
        k = given[0]
        raw = self.data[k]
        if not isinstance(raw, str) or not raw:
            # Never echo the value: it may be a secret pasted in the wrong place.
            self.error(k, "expected a non-empty string")
            return None
        if k == literal:
            return Secret(raw, f"{self.file}:{self.line_of(k)}")
        if k == env_key:
            value = os.environ.get(raw)
            if not value:
                self.error(k, f"environment variable {raw} is not set or empty")
                return None
            return Secret(value, f"env {raw}")
        path = Path(raw)
        if not path.is_absolute():
            path = self.base_dir / path
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            self.error(k, f"cannot read secret file {path}: {exc.strerror or exc}")
            return None
        except UnicodeDecodeError:
            self.error(k, f"secret file {path} is not UTF-8 text")
            return None
        if not value:
            self.error(k, f"secret file {path} is empty")
            return None
        return Secret(value, f"file {path}")

    def done(self) -> None:
        """Report every key that no reader asked for: unknown keys are errors, not ignored."""
        for key in self.data:
            if key not in self._used:
                known = sorted(self._used)
                hint = f"; known keys here: {', '.join(known)}" if known else ""
                self.error(key, f"unknown key{hint}")
