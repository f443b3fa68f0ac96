"""Shared pieces of the OPC-UA tests: one simulator per session, config from YAML text, a recording sink."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from asyncua.crypto import cert_gen
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent.config.source import ConfigError, Problems, Section, as_duration, as_str, parse_yaml
from drivers.base import AlarmNotice, Reading, Sample
from drivers.opcua.config import OpcuaMachineConfig, parse
from simulators.model import MachineState
from simulators.opcua_server import APPLICATION_URI, OpcuaSimulator, start_opcua_server

SESSION_MACHINES = ("lathe-01", "mill-07")


@dataclass(frozen=True)
class Pki:
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="session")
async def opcua_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Self-signed application certificates for the simulator and the agent (generated once)."""
    base = tmp_path_factory.mktemp("pki")
    pki = Pki(base / "server.der", base / "server.pem", base / "client.der", base / "client.pem")
    for key, cert, uri, use in (
        (pki.server_key, pki.server_cert, APPLICATION_URI, ExtendedKeyUsageOID.SERVER_AUTH),
        (pki.client_key, pki.client_cert, "urn:edge-agent:test-client", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        await cert_gen.setup_self_signed_certificate(key, cert, uri, socket.gethostname(), [use], {})
    return pki


@pytest.fixture(scope="session")
async def opcua_sim(opcua_pki: Pki) -> AsyncIterator[OpcuaSimulator]:
    """One simulator hosting two machines for every OPC-UA test module that only reads and writes values.

    It offers the None policy and Basic256Sha256, so the same server serves the security test.
    """
    sim = await start_opcua_server(
        [MachineState(name) for name in SESSION_MACHINES],
        certificate=opcua_pki.server_cert,
        private_key=opcua_pki.server_key,
    )
    yield sim
    await sim.stop()


def parse_machine(
    text: str, *, file: str = "machines/test.yaml", base_dir: Path | None = None
) -> tuple[OpcuaMachineConfig | None, Problems]:
    """Parse the ``opcua:`` and ``tags:`` of a machine file given as YAML text, as the loader does."""
    problems = Problems()
    data = parse_yaml(text, file, problems)
    top = Section(data, file=file, path="", problems=problems, base_dir=base_dir)
    poll = top.get("poll_interval", as_duration, 1.0)
    for key in ("name", "group"):  # the machine loader's keys, not the driver's
        top.raw(key)
    conn = top.sub("opcua", required=True)
    tags = top.sub("tags", required=True)
    cfg = parse(top.get("id", as_str, "test"), conn, tags, poll)
    top.done()
    return (None if problems else cfg), problems


def machine_config(text: str, **kwargs: object) -> OpcuaMachineConfig:
    cfg, problems = parse_machine(text, **kwargs)  # type: ignore[arg-type]
    if problems:
        raise ConfigError(problems.items)
    assert cfg is not None
    return cfg


class Recorder:
    """A ``Sink`` that remembers every sample and lets a test await a condition with a bounded timeout."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self._changed = asyncio.Event()

    def __call__(self, samples: Sequence[Sample]) -> None:
        self.samples.extend(samples)
        self._changed.set()

    @property
    def readings(self) -> list[Reading]:
        return [s for s in self.samples if isinstance(s, Reading)]

    @property
    def alarms(self) -> list[AlarmNotice]:
        return [s for s in self.samples if isinstance(s, AlarmNotice)]

    async def wait_for(self, predicate: Callable[[Recorder], object], within: float = 5.0) -> None:
        async def until() -> None:
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(until(), within)
        except TimeoutError:
            raise AssertionError(
                f"condition not met within {within}s; last samples: {self.samples[-5:]}"
            ) from None

    def last(self, tag: str) -> Reading | None:
        for r in reversed(self.readings):
            if r.tag == tag:
                return r
        return None


REFERENCE_DIR = Path(__file__).resolve().parents[1] / "opcua_reference"


class ReferenceServer:
    """node-opcua (tests/opcua_reference/server.js) in a subprocess on 127.0.0.1: an OPC UA server with
    its own, independent Alarms & Conditions implementation."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, namespace_index: int) -> None:
        self.proc = proc
        self.port = port
        self.namespace_index = namespace_index

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}"

    async def set_temperature(self, furnace: int, value: float) -> None:
        """Write a furnace's temperature; node-opcua's limit alarm evaluates it (High above 80)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"set {furnace} {value}\n".encode())
        await self.proc.stdin.drain()
        async with asyncio.timeout(10):
            while True:  # node-opcua logs to stdout too: wait for the command's own answer
                line = (await self.proc.stdout.readline()).decode()
                if line.startswith(("OK ", "ERROR ")) or not line:
                    break
        assert line.startswith("OK "), line or "the node-opcua server exited"

    async def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def start_reference_server() -> ReferenceServer:
    """Start it, or skip with the reason when node or its packages are missing (never under CI=true:
    ``.ci/run`` installs them, so a missing one there is a failure)."""
    node = shutil.which("node")
    missing = None
    if node is None:
        missing = "node (Debian package nodejs) is not installed"
    elif not (REFERENCE_DIR / "node_modules" / "node-opcua").is_dir():
        missing = f"node-opcua is not installed: run `npm ci` in {REFERENCE_DIR}"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the independent OPC UA server cannot start under CI: {missing}")
        pytest.skip(missing)
    assert node is not None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        node,
        str(REFERENCE_DIR / "server.js"),
        str(port),
        cwd=REFERENCE_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(60):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"node-opcua server exited with {await proc.wait()}")
                if line.startswith("READY"):
                    return ReferenceServer(proc, port, int(line.split()[1]))
    except BaseException:
        proc.kill()
        await proc.wait()
        raise


@pytest.fixture(scope="session")
async def reference_opcua() -> AsyncIterator[ReferenceServer]:
    server = await start_reference_server()
    yield server
    await server.stop()
