"""Shared pieces of the OPC-UA tests: one simulator per session, config from YAML text, a recording sink."""

from __future__ import annotations

import asyncio
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
