"""``${NAME}`` / ``${NAME:-default}`` in config values, and the quick start's ports in one place.

The shipped config/ names each port as a variable with its default, and ``simulate``/``receive`` take
their default ports from the same variables: one ``export`` moves both sides of a connection.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.config.agent_file import collect_config
from agent.config.interpolate import PORT_VARIABLES, interpolate, port_variable
from agent.config.source import Problems, parse_yaml

from .test_corpus import secrets_env, shipped_copy  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "env", "filled"),
    [
        ("127.0.0.1:${PORT}", {"PORT": "9000"}, "127.0.0.1:9000"),
        ("127.0.0.1:${PORT:-8787}", {}, "127.0.0.1:8787"),
        ("127.0.0.1:${PORT:-8787}", {"PORT": ""}, "127.0.0.1:8787"),  # empty counts as unset, as in sh
        ("127.0.0.1:${PORT:-8787}", {"PORT": "9000"}, "127.0.0.1:9000"),
        ("${A}-${B:-b}", {"A": "a"}, "a-b"),
        ("price $5, literal $${HOME}", {"HOME": "/root"}, "price $5, literal ${HOME}"),
        ("${EMPTY_DEFAULT:-}", {}, ""),
    ],
)
def test_references_are_filled_from_the_environment(text: str, env: dict[str, str], filled: str) -> None:
    assert interpolate(text, env) == filled


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${NOPE}", "environment variable NOPE is not set or empty (used as ${NOPE})"),
        ("${two words}", "a '${' that is not a variable reference"),
        ("${}", "a '${' that is not a variable reference"),
        ("${UNCLOSED", "a '${' that is not a variable reference"),
    ],
)
def test_an_unset_or_malformed_reference_is_an_error_saying_how_to_write_it(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)) as error:
        interpolate(text, {})
    assert "${NAME:-default}" in str(error.value) or "${NOPE:-...}" in str(error.value)


def test_a_malformed_reference_in_a_literal_secret_does_not_echo_the_secret() -> None:
    problems = Problems()
    assert parse_yaml('secret: "whsec_s3cr3t${not a ref}tail"\n', "wf.yaml", problems) is None
    [problem] = [str(p) for p in problems.items]
    assert problem.startswith("wf.yaml:1: a '${' that is not a variable reference")
    assert "s3cr3t" not in problem and "not a ref" not in problem and "tail" not in problem


def test_unquoted_values_are_read_as_yaml_would_read_the_filled_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EA_TEST_PORT", "9000")
    monkeypatch.delenv("EA_TEST_UNSET", raising=False)
    problems = Problems()
    data = parse_yaml(
        'port: ${EA_TEST_PORT}\nquoted: "${EA_TEST_PORT}"\nflag: ${EA_TEST_UNSET:-true}\n'
        "${EA_TEST_PORT}: key\n",
        "m.yaml",
        problems,
    )
    assert not problems
    assert data == {"port": 9000, "quoted": "9000", "flag": True, "${EA_TEST_PORT}": "key"}  # keys stay


def test_every_unset_variable_of_a_file_is_reported_with_its_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EA_TEST_A", raising=False)
    monkeypatch.delenv("EA_TEST_B", raising=False)
    problems = Problems()
    data = parse_yaml("a: 1\nb: ${EA_TEST_A}\nc:\n  - x${EA_TEST_B}y\n", "m.yaml", problems)
    assert data is None  # the file failed: checks that depend on it are skipped
    assert [str(p) for p in problems.items] == [
        "m.yaml:2: environment variable EA_TEST_A is not set or empty (used as ${EA_TEST_A}); "
        "set it, or give a default: ${EA_TEST_A:-...}",
        "m.yaml:4: environment variable EA_TEST_B is not set or empty (used as ${EA_TEST_B}); "
        "set it, or give a default: ${EA_TEST_B:-...}",
    ]


MOVED = {
    "EDGE_AGENT_API_PORT": "18787",
    "EDGE_AGENT_MODBUS_PORT": "15020",
    "EDGE_AGENT_OPCUA_PORT": "14840",
    "EDGE_AGENT_RECEIVER_PORT": "18090",
}


def endpoints(folder: Path) -> tuple[int, set[str], set[str]]:
    """The API port, the machines' device addresses and the webhook hosts the shipped config names."""
    config, problems = collect_config(folder / "agent.yaml", folder.parent / "state")
    assert config is not None, [str(p) for p in problems.items]
    devices = {
        m.connection.url if m.protocol == "opcua" else f"{m.connection.host}:{m.connection.port}"  # type: ignore[union-attr]
        for m in config.machines
    }
    hosts = {ep.url.split("/")[2] for wf in config.workflows for ep in wf.endpoints}
    return config.agent.api.port, devices, hosts


@pytest.mark.usefixtures("secrets_env")
def test_the_shipped_config_keeps_its_ports_without_the_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in PORT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    api, devices, hosts = endpoints(shipped_copy(tmp_path))
    assert api == 8787
    assert devices == {"127.0.0.1:5020", "opc.tcp://127.0.0.1:4840"}
    assert hosts == {"127.0.0.1:8090"}


@pytest.mark.usefixtures("secrets_env")
def test_four_variables_move_every_port_of_the_shipped_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in MOVED.items():
        monkeypatch.setenv(name, value)
    api, devices, hosts = endpoints(shipped_copy(tmp_path))
    assert api == 18787
    assert devices == {"127.0.0.1:15020", "opc.tcp://127.0.0.1:14840"}
    assert hosts == {"127.0.0.1:18090"}


def test_a_port_variable_that_is_not_a_port_names_the_variable() -> None:
    assert port_variable("EDGE_AGENT_OPCUA_PORT", {}) == 4840
    assert port_variable("EDGE_AGENT_OPCUA_PORT", {"EDGE_AGENT_OPCUA_PORT": "4841"}) == 4841
    with pytest.raises(ValueError, match="EDGE_AGENT_OPCUA_PORT='opc' is not a port number"):
        port_variable("EDGE_AGENT_OPCUA_PORT", {"EDGE_AGENT_OPCUA_PORT": "opc"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_simulate_and_receive_listen_on_the_variables_ports() -> None:
    modbus, receiver = free_port(), free_port()
    env = {
        **os.environ,
        "EDGE_AGENT_MODBUS_PORT": str(modbus),
        "EDGE_AGENT_OPCUA_PORT": "0",
        "EDGE_AGENT_RECEIVER_PORT": str(receiver),
    }
    sim = subprocess.run(
        [sys.executable, "-m", "simulators", "--duration", "0.5", "--protocol", "modbus"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    assert f"Modbus TCP  127.0.0.1:{modbus} " in sim.stdout
    rec = subprocess.Popen(
        [sys.executable, "-m", "agent", "receive", "--quiet"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        listening = False
        for _ in range(600):  # until it listens on the variable's port (or exits with an error)
            if rec.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", receiver), 1).close()
                listening = True
                break
            except OSError:
                time.sleep(0.1)
        assert listening, rec.communicate() if rec.poll() is not None else "nothing listens on the port"
    finally:
        rec.terminate()
        rec.wait(30)


@pytest.mark.parametrize("command", [["-m", "simulators"], ["-m", "agent", "receive"]])
def test_a_bad_port_variable_is_a_usage_error_naming_it(command: list[str]) -> None:
    env = {**os.environ, "EDGE_AGENT_MODBUS_PORT": "x", "EDGE_AGENT_RECEIVER_PORT": "x"}
    proc = subprocess.run(
        [sys.executable, *command], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "environment variable EDGE_AGENT_" in proc.stderr and "is not a port number" in proc.stderr
