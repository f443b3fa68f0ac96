"""``${NAME}`` and ``${NAME:-default}`` in config values, filled from the environment.

The shipped files name their ports this way (``bind: 127.0.0.1:${EDGE_AGENT_API_PORT:-8787}``), and
``simulate``/``receive`` read the same variables, so moving the quick start off a taken port is one
``export`` instead of edits in nine files. The syntax is the one docker-compose and systemd users
already know; ``$${`` is a literal ``${``. Pure: the environment is passed in.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping

# Ports the shipped config/ and the simulate/receive commands share (the one place to move them).
PORT_VARIABLES = {
    "EDGE_AGENT_API_PORT": 8787,
    "EDGE_AGENT_MODBUS_PORT": 5020,
    "EDGE_AGENT_OPCUA_PORT": 4840,
    "EDGE_AGENT_RECEIVER_PORT": 8090,
}

_REFERENCE = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)\}|\$\{")
_BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)
SYNTAX = "write ${NAME} or ${NAME:-default} ($${ for a literal ${)"


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``text`` with every reference replaced; ValueError names the first unset or malformed one.

    ``${NAME:-default}`` uses the default when NAME is unset or empty (as in sh and docker-compose).
    """

    def replace(match: re.Match[str]) -> str:
        whole = match.group(0)
        if whole == "$${":
            return "${"
        body = match.group("body")
        parsed = _BODY.fullmatch(body) if body is not None else None
        if parsed is None:
            # The text is not echoed: the value may be a literal secret that happens to hold "${".
            raise ValueError(f"a '${{' that is not a variable reference: {SYNTAX}")
        name, default = parsed.group("name"), parsed.group("default")
        value = env.get(name, "")
        if value:
            return value
        if default is not None:
            return default
        raise ValueError(
            f"environment variable {name} is not set or empty (used as ${{{name}}}); "
            f"set it, or give a default: ${{{name}:-...}}"
        )

    return _REFERENCE.sub(replace, text)


def port_variable(name: str, env: Mapping[str, str]) -> int:
    """The port in one of ``PORT_VARIABLES`` (its default when unset); ValueError names the variable."""
    raw = env.get(name, "").strip()
    if not raw:
        return PORT_VARIABLES[name]
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise ValueError(f"environment variable {name}={raw!r} is not a port number (0..65535)")
    return int(raw)


def port_number(text: str) -> int:
    """A port given on a command line (argparse type), 0 meaning "any free one" (the kernel picks)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0..65535)")
    return value
