"""The line-marked YAML tree (``LineDict`` / ``LineList``), built straight from libyaml's events.

PyYAML's composer and constructors spend ~0.7 ms of Python per machine file (nodes, resolver
regexes and a constructor call per scalar): 1.4 s of CPU for 2,000 machine files, most of the
agent's start. Plain configuration (mappings, lists and untagged scalars) needs none of that
machinery: one pass over the parser's events builds the same tree, and a plain scalar's value,
which depends only on its text, is resolved once per distinct text. Anything else (anchors,
aliases, tags, merge keys, timestamps, complex or duplicate keys, several documents, deep
nesting) raises ``Unusual``, and the caller reads the file with PyYAML's own constructors, which
give the exact result or the exact error.
"""

from __future__ import annotations

from typing import Any

import yaml


class LineDict(dict[str, Any]):
    """A mapping from YAML that knows the line of itself and of each of its keys (1-based)."""

    line: int | None = None
    key_lines: dict[str, int]


class LineList(list[Any]):
    line: int | None = None
    item_lines: list[int]


class Unusual(Exception):
    """The text uses more of YAML than this reader builds; PyYAML's constructors must read it."""


# Untagged plain scalars resolve to one of these (YAML 1.1 core schema); the others (timestamp,
# merge, value, yaml) are left to the constructors.
_SIMPLE_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null"))
MAX_DEPTH = 100  # as deep as the pure loader's recursion is trusted to go for the same file
_CACHE_LIMIT = 50_000  # distinct plain scalars remembered (a 2,000-machine plant has ~10,000)
_plain: dict[str, Any] = {}
_resolver = yaml.resolver.Resolver()
_constructor = yaml.constructor.SafeConstructor()
_NO_KEY: Any = object()


def _plain_value(text: str) -> Any:
    """The value of an untagged plain scalar: ``12`` is an int, ``yes`` a bool, ``~`` None."""
    value = _plain.get(text, _NO_KEY)
    if value is not _NO_KEY:
        return value
    tag = _resolver.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    if tag not in _SIMPLE_TAGS:
        raise Unusual(tag)
    value = _constructor.yaml_constructors[tag](_constructor, yaml.ScalarNode(tag, text))
    if len(_plain) >= _CACHE_LIMIT:
        _plain.clear()
    _plain[text] = value
    return value


def read(text: str, parser_class: type[Any]) -> Any:
    """The document in ``text`` as ``LineDict`` / ``LineList`` / scalars; ``None`` for no document.

    ``parser_class`` is libyaml's ``CParser`` (or a subclass); a YAML error it finds propagates.
    """
    parser = parser_class(text)
    try:
        return _build(parser.get_event)
    finally:
        parser.dispose()


def _build(get: Any) -> Any:
    get()  # StreamStartEvent
    if type(get()) is yaml.StreamEndEvent:  # nothing but comments: no document
        return None
    root = _node(get)
    if type(get()) is not yaml.DocumentEndEvent or type(get()) is not yaml.StreamEndEvent:
        raise Unusual("more than one document")
    return root


def _node(get: Any) -> Any:
    """One whole node (the document's root), read without recursion."""
    # One frame per open collection: [container, pending key (or _NO_KEY), line of that key].
    frames: list[list[Any]] = []
    plain = _plain  # looked up once: this loop runs ~130 times per machine file
    while True:
        event = get()
        kind = type(event)
        if kind is yaml.ScalarEvent:
            if event.anchor is not None or event.tag is not None:
                raise Unusual("anchor or tag")
            value: Any = event.value
            if event.implicit[0]:  # plain: its text decides its type
                known = plain.get(value, _NO_KEY)
                value = _plain_value(value) if known is _NO_KEY else known
            opens = False
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            value = _collection(event)
            opens = True
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            done = frames.pop()[0]
            if not frames:
                return done
            continue
        else:  # an alias
            raise Unusual(kind.__name__)
        if frames:
            frame = frames[-1]
            container = frame[0]
            if type(container) is LineList:
                container.append(value)
                container.item_lines.append(event.start_mark.line + 1)
            elif frame[1] is _NO_KEY:
                frame[1] = value if type(value) is str and value not in container else _key(value, container)
                frame[2] = event.start_mark.line + 1
            else:  # a value: its key holds the line
                container[frame[1]] = value
                container.key_lines[frame[1]] = frame[2]
                frame[1] = _NO_KEY
        if opens:
            if len(frames) >= MAX_DEPTH:
                raise Unusual("nested too deeply")
            frames.append([value, _NO_KEY, 0])
        elif not frames:
            return value  # the document is one scalar


def _collection(event: Any) -> LineDict | LineList:
    """The empty mapping or list a start event opens, with its line."""
    if event.anchor is not None or event.tag is not None:
        raise Unusual("anchor or tag")
    out: LineDict | LineList
    if type(event) is yaml.MappingStartEvent:
        out = LineDict()
        out.key_lines = {}
    else:
        out = LineList()
        out.item_lines = []
    out.line = event.start_mark.line + 1
    return out


def _key(value: Any, mapping: LineDict) -> str:
    if type(value) is not str:
        if isinstance(value, LineDict | LineList) or not isinstance(value, int | float | bool):
            raise Unusual("complex or null key")
        value = str(value)
    if value in mapping:
        raise Unusual("duplicate key")  # the constructors name it with its line
    return str(value)
