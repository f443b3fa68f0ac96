"""``edge-agent read MACHINE``: the real CLI, in a subprocess, against the Modbus simulator.

A subprocess, because the command runs its own event loop (``asyncio.run``) while the simulator is
served by the test's loop.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sys
from pathlib import Path

import pytest

from agent.cli import main
from simulators.modbus_server import ModbusSimulator
from simulators.model import Execution, MachineState

REPO = Path(__file__).resolve().parents[2]
AGENT_YAML = "agent: {name: read-test, state_dir: state}\ndowntime_categories: [Setup]\n"


def machine_file(port: int, unit: int = 1, machine_id: str = "mill-01") -> str:
    # The profile's map plus the spindle speed again at 6-7 in the word-swapped (CDAB) order.
    return f"""\
id: {machine_id}
name: CNC Mill 01
group: Milling
profile: modbus-sim
modbus: {{host: 127.0.0.1, port: {port}, unit: {unit}, timeout: 500ms}}
poll_interval: 100ms
tags:
  spindle_rpm_cdab: {{table: holding, address: 6, type: float32, byte_order: CDAB}}
"""


def write_config(folder: Path, machines: dict[str, str]) -> Path:
    (folder / "machines").mkdir(parents=True)
    for name, text in machines.items():
        (folder / "machines" / f"{name}.yaml").write_text(text, encoding="utf-8")
    path = folder / "agent.yaml"
    path.write_text(AGENT_YAML, encoding="utf-8")
    return path


async def edge_agent(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def table(out: str) -> dict[str, tuple[str, str]]:
    """``{tag: (value, quality and reason)}`` from the printed table."""
    rows: dict[str, tuple[str, str]] = {}
    for line in out.splitlines()[1:]:
        tag, rest = line.strip().split(None, 1)
        value, quality = rest[:25].rstrip(), rest[25:].strip()
        rows[tag] = (value, quality)
    return rows


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_read_prints_decoded_values_with_quality(
    tmp_path: Path, modbus_sim: ModbusSimulator, machines: dict[str, MachineState]
) -> None:
    mill = machines["mill-01"]
    mill.execution = Execution.FEED_HOLD
    mill.program = "O4711 BRACKET"
    mill.spindle_speed = 1234.5
    mill.axis_temperature = -12.3
    mill.part_count = 4_000_000_000
    modbus_sim.publish(1)
    config = write_config(tmp_path / "config", {"mill-01": machine_file(modbus_sim.port)})

    code, out, err = await edge_agent("read", "mill-01", "-c", str(config))

    assert code == 0, err
    assert re.fullmatch(r"mill-01  \d\d:\d\d:\d\d", out.splitlines()[0])  # stdout is the table alone
    rows = table(out)
    assert rows["program"] == ("'O4711 BRACKET'", "good")  # STRING(32), NUL padding stripped
    assert rows["spindle_rpm"] == ("1234.5", "good")  # FLOAT32 ABCD
    assert rows["spindle_rpm_cdab"] == ("1234.5", "good")  # the same value word-swapped
    assert rows["execution"] == ("'FEED_HOLD'", "good")  # raw 3 through the profile's map
    assert rows["mode"] == ("'AUTOMATIC'", "good")
    assert rows["axis_temperature"] == ("-12.3", "good")  # INT16 -123, scale 0.1
    assert rows["part_count"] == ("4000000000", "good")  # UINT32 above the INT32 range
    assert rows["estop"] == ("False", "good")


async def test_read_watch_prints_one_table_per_poll(
    tmp_path: Path, modbus_sim: ModbusSimulator, machines: dict[str, MachineState]
) -> None:
    machines["mill-01"].program = "O9000"
    modbus_sim.publish(1)
    config = write_config(tmp_path / "config", {"mill-01": machine_file(modbus_sim.port)})
    code, out, err = await edge_agent("read", "mill-01", "--watch", "--count", "3", "-c", str(config))
    assert code == 0, err
    headers = [line for line in out.splitlines() if line.startswith("mill-01  ")]
    assert len(headers) == 3
    assert out.count("'O9000'") == 3


async def test_read_a_hung_device_shows_bad_quality_with_the_reason(
    tmp_path: Path, modbus_sim: ModbusSimulator, machines: dict[str, MachineState]
) -> None:
    config = write_config(tmp_path / "config", {"lathe-02": machine_file(modbus_sim.port, 2, "lathe-02")})
    modbus_sim.hang(2, True)
    try:
        code, out, err = await edge_agent("read", "lathe-02", "-c", str(config))
    finally:
        modbus_sim.hang(2, False)
    assert code == 1, (out, err)
    rows = table(out)
    assert "program" in rows and "execution" in rows
    for value, quality in rows.values():  # no stale or made-up value; each reading says why
        assert value == "None"
        assert re.fullmatch(r"(bad|disconnected)  \(no answer within .*\(unit 2\)\)", quality), quality


def test_read_unknown_machine_exits_2_listing_the_machines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path / "config",
        {"mill-01": machine_file(5020), "lathe-02": machine_file(5020, 2, "lathe-02")},
    )
    code = main(["read", "mill-99", "-c", str(config)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.strip() == "unknown machine 'mill-99'; configured: lathe-02, mill-01"
    assert captured.out == ""


async def test_read_unreachable_device_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    port = unused_port()  # nothing listens there
    config = write_config(tmp_path / "config", {"mill-01": machine_file(port)})
    code, out, err = await edge_agent("read", "mill-01", "-c", str(config), "--connect-timeout", "3")
    assert code == 1
    assert out == ""
    assert err.strip().splitlines()[-1] == (
        f"mill-01: cannot connect: cannot connect to 127.0.0.1:{port} (refused or unreachable)"
    )
