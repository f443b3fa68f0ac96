"""``python -m simulators`` / ``edge-agent simulate`` as a user runs it: serve, answer, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from simulators.cli import main
from simulators.model import Execution

ROOT = Path(__file__).resolve().parents[2]


async def test_simulate_serves_modbus_and_stops_cleanly_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators",
        "--machines",
        "2",
        "--protocol",
        "modbus",
        "--modbus-port",
        "0",
        "--scenario",
        "steady",
        "--log-format",
        "json",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        port = None
        while port is None:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line, "simulator exited before printing where it serves"
            if m := re.search(r"Modbus TCP\s+127\.0\.0\.1:(\d+)\s+unit ids 1\.\.2", line):
                port = int(m.group(1))
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        assert await client.connect()
        rr = await client.read_holding_registers(0, count=1, device_id=2)
        client.close()
        assert not rr.isError() and rr.registers == [Execution.ACTIVE]
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        assert b"simulate: stopping" in out
        assert b"Traceback" not in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scenario", "/nonexistent/s.yaml"], "/nonexistent/s.yaml: file not found"),
        (["--machines", "0"], "machines must be at least 1"),
        (["--machines", "300", "--modbus-port", "65535"], "300 machines need Modbus ports up to 65536"),
        (["--speed", "0"], "speed and tick must be positive"),
        (["--modbus-port", "70000"], "--modbus-port: 70000 is not a port number"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err
