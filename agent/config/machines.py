"""Machine files: one YAML file per machine, optionally on top of a ready-made profile."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config.source import (
    LineDict,
    LineList,
    Problems,
    Section,
    as_duration,
    as_str,
    in_range,
    load_yaml,
    parse_yaml,
)
from agent.events import MachineRef

if TYPE_CHECKING:
    from agent.derive.spec import Categories, DerivationSpec
    from drivers.modbus.config import ModbusMachineConfig
    from drivers.opcua.config import OpcuaMachineConfig

PROTOCOLS = ("modbus", "opcua")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class MachineConfig:
    id: str
    name: str
    group: str | None
    file: str
    protocol: str
    poll_interval: float
    connection: ModbusMachineConfig | OpcuaMachineConfig
    derivation: DerivationSpec
    profile: str | None = None

    @property
    def ref(self) -> MachineRef:
        return MachineRef(self.id, self.name, self.group)

    @property
    def subscribes(self) -> bool:
        return getattr(self.connection, "mode", "poll") == "subscribe"


def profile_names() -> list[str]:
    folder = resources.files("agent.profiles")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


# Parsed bundled profiles by (name, text): parsing modbus-sim once per machine was 2-3 s of the start
# at 500 machines. Callers only ever use a ``_relabel`` copy, so sharing the parsed tree is safe.
_PROFILES: dict[tuple[str, str], Any] = {}


def _load_profile(name: str, problems: Problems) -> Any:
    path = resources.files("agent.profiles").joinpath(f"{name}.yaml")
    text = path.read_text(encoding="utf-8")
    cached = _PROFILES.get((name, text))
    if cached is not None:
        return cached
    before = len(problems.items)
    parsed = parse_yaml(text, f"profile {name}", problems)
    if len(problems.items) == before:  # a profile with problems is parsed (and reported) every time
        _PROFILES[(name, text)] = parsed
    return parsed


def _relabel(node: Any, line: int | None) -> Any:
    """A copy of a profile subtree whose lines all point at the machine file's ``profile:`` key.

    Errors in profile-provided keys then name the machine file (the one the user can edit) and the
    line where the profile was chosen, instead of a line in a file inside the installed package.
    """
    if isinstance(node, dict):
        out = LineDict((k, _relabel(v, line)) for k, v in node.items())
        out.line = line
        out.key_lines = dict.fromkeys(out, line or 0)
        return out
    if isinstance(node, list):
        lst = LineList(_relabel(v, line) for v in node)
        lst.line = line
        lst.item_lines = [line or 0] * len(lst)
        return lst
    return node


# A profile relabeled for the line its machine files name it on (a fleet's files mostly say
# ``profile:`` on the same line): copying the modbus-sim tree for each of 500 machines was a quarter
# of loading them. Only ever read (``_merge`` copies what it changes), so one copy serves them all.
_RELABELED: dict[tuple[int, int | None], tuple[Any, Any]] = {}


def _relabeled(tree: Any, line: int | None) -> Any:
    key = (id(tree), line)
    kept = _RELABELED.get(key)
    if kept is not None and kept[0] is tree:  # the same parsed profile, not a new one at its address
        return kept[1]
    copy = _relabel(tree, line)
    if len(_RELABELED) >= 1_000:
        _RELABELED.clear()
    _RELABELED[key] = (tree, copy)
    return copy


def _merge(base: Any, over: Any) -> Any:
    """Machine file over profile: mappings merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = LineDict(base)
        out.line = getattr(over, "line", None)
        out.key_lines = {**getattr(base, "key_lines", {}), **getattr(over, "key_lines", {})}
        for key, value in over.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    return over


def parse_machine(
    data: Any,
    file: str,
    problems: Problems,
    base_dir: Path | None = None,
    categories: Categories | None = None,
) -> MachineConfig | None:
    """Read one machine file's content; problems are collected, ``None`` when the file is unusable."""
    top = Section(data, file=file, path="", problems=problems, base_dir=base_dir)
    if not top.ok:
        return None
    before = len(problems.items)
    profile = top.opt("profile", as_str)
    if profile is not None:
        names = profile_names()
        if profile not in names:
            top.error("profile", f"unknown profile {profile!r}; expected one of {', '.join(names)}")
            # Without its profile the file lacks tags and rules: more errors would only be echoes.
            return None
        else:
            merged = _merge(_relabeled(_load_profile(profile, problems), top.line_of("profile")), data)
            top = Section(merged, file=file, path="", problems=problems, base_dir=base_dir)
            top.raw("profile")

    stem = Path(file).stem
    machine_id = top.get("id", as_str, stem)
    if machine_id and not _ID.match(machine_id):
        top.error("id", f"invalid machine id {machine_id!r}: use letters, digits, '.', '_' or '-' (max 64)")
    name = top.get("name", as_str, machine_id)
    group = top.opt("group", as_str)
    poll_interval = top.get("poll_interval", in_range(as_duration, 0.01, 3600), 1.0)

    given = [p for p in PROTOCOLS if top.has(p)]
    if len(given) != 1:
        top.error_here(
            "exactly one connection section is needed: modbus or opcua"
            + (f" (found {', '.join(given)})" if given else "")
        )
        for key in ("modbus", "opcua", "tags", "status", "alarms", "downtime", "parts"):
            top.raw(key)
        top.done()
        return None
    protocol = given[0]
    conn = top.sub(protocol)
    tags = top.sub("tags", required=True)
    connection: ModbusMachineConfig | OpcuaMachineConfig
    if protocol == "modbus":
        from drivers.modbus.config import parse as parse_modbus

        connection = parse_modbus(machine_id, conn, tags, poll_interval)
    else:
        from drivers.opcua.config import parse as parse_opcua

        connection = parse_opcua(machine_id, conn, tags, poll_interval)

    # Only OPC-UA delivers alarm events; elsewhere a register alarm must not wait for one.
    derivation = _derivation(top, set(connection.tag_names), categories, alarm_events=(protocol == "opcua"))
    top.done()
    if len(problems.items) > before:
        return None
    return MachineConfig(
        id=machine_id,
        name=name,
        group=group,
        file=file,
        protocol=protocol,
        poll_interval=poll_interval,
        connection=connection,
        derivation=derivation,
        profile=profile,
    )


# Machines of one kind share their status, alarms, downtime and parts sections word for word:
# reading them through Section was half of parse_machine at 2,000 machines. A derivation read
# without a problem is kept and handed out again for the same sections (values with their types),
# tags, plant categories and protocol (a DerivationSpec is frozen; its conditions keep no state). One
# with a problem is read every time, so each file gets its own messages and lines.
_DERIVATION_KEYS = ("timezone", "status", "alarms", "downtime", "parts")
_DERIVATIONS: dict[tuple[Any, ...], DerivationSpec] = {}
_DERIVATIONS_LIMIT = 5_000


def _derivation(
    top: Section, tag_names: set[str], categories: Categories | None, *, alarm_events: bool
) -> DerivationSpec:
    from agent.derive.spec import parse_derivation

    key: tuple[Any, ...] | None = (
        tuple(_frozen(top.data.get(k)) for k in _DERIVATION_KEYS),
        frozenset(tag_names),
        categories,
        alarm_events,
    )
    try:
        hash(key)
    except TypeError:  # a YAML set or the like: the reader says what is wrong with it
        key = None
    spec = _DERIVATIONS.get(key) if key is not None else None
    if spec is not None:
        for k in _DERIVATION_KEYS:
            top.raw(k)  # read, as far as unknown-key checks go
        return spec
    before = len(top.problems.items)
    spec = parse_derivation(top, tag_names, categories, alarm_events=alarm_events)
    if key is not None and len(top.problems.items) == before:
        if len(_DERIVATIONS) >= _DERIVATIONS_LIMIT:
            _DERIVATIONS.clear()
        _DERIVATIONS[key] = spec
    return spec


def _frozen(value: Any) -> Any:
    """A YAML value as a hashable key; types kept (``1``, ``1.0`` and ``true`` are equal keys)."""
    if isinstance(value, dict):
        return (dict, tuple((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list):
        return (list, tuple(_frozen(v) for v in value))
    return (type(value), value)


def load_machines(
    folder: Path,
    problems: Problems,
    display_root: Path | None = None,
    categories: Categories | None = None,
    base_dir: Path | None = None,
) -> list[MachineConfig]:
    """Every ``*.yaml`` / ``*.yml`` in ``folder``; duplicate ids are reported with both files."""
    if not folder.is_dir():
        problems.add(str(folder), None, "", "machines directory not found")
        return []
    machines: list[MachineConfig] = []
    seen: dict[str, str] = {}
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    for path in files:
        shown = _display(path, display_root)
        before = len(problems.items)
        data = load_yaml(path, problems, shown)
        if data is None:
            if len(problems.items) == before:  # no syntax error: nothing but comments, or `~`
                problems.add(shown, None, "", "file is empty")
            continue
        machine = parse_machine(
            data, shown, problems, base_dir=base_dir or path.parent, categories=categories
        )
        if machine is None:
            continue
        if machine.id in seen:
            line = getattr(data, "key_lines", {}).get("id")
            problems.add(
                shown, line, "id", f"duplicate machine id {machine.id!r}: also defined in {seen[machine.id]}"
            )
            continue
        seen[machine.id] = shown
        machines.append(machine)
    return machines


def _display(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)
