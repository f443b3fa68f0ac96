"""The daemon as a plant runs it: ``python -m agent run`` in its own process, a config directory written
here, real simulators and receivers on 127.0.0.1, and a real AF_UNIX datagram socket as systemd.

``AgentDir`` writes agent.yaml, one file per machine and per workflow, and the secrets as files;
``AgentProcess`` starts the daemon on it and talks to its API; ``NotifySocket`` records what the
daemon tells the service manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.delivery.signing import generate_secret
from agent.receiver import Receiver, start_receiver
from simulators.modbus_server import ModbusSimulator, start_modbus_server
from simulators.model import MachineState

REPO = Path(__file__).resolve().parents[2]
# Bounds for things that take well under a second when all is well; generous for 2 busy cores.
START_WITHIN = 30.0
EVENT_WITHIN = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the config directory


def machine_yaml(machine_id: str, modbus_port: int, unit: int, *, group: str = "Milling") -> str:
    """A Modbus machine on the bundled simulator; every status is reported at once (min_state 0s)."""
    return (
        f"id: {machine_id}\n"
        f"name: Test {machine_id}\n"
        f"group: {group}\n"
        "profile: modbus-sim\n"
        f"modbus: {{host: 127.0.0.1, port: {modbus_port}, unit: {unit}, timeout: 1s}}\n"
        "poll_interval: 1s\n"
        "status: {min_state: 0s}\n"
    )


def workflow_yaml(name: str, trigger: str, actions: list[tuple[str, str]], secret_file: Path) -> str:
    """``actions``: (url, extra webhook keys such as ``delay: 3s``); the secret comes from a file."""
    lines = [f"name: {name}", f"trigger: {trigger}", "actions:"]
    for url, extra in actions:
        more = f", {extra}" if extra else ""
        lines.append(f'  - webhook: {{url: "{url}", secret_file: {secret_file}{more}}}')
    return "\n".join(lines) + "\n"


@dataclass
class AgentDir:
    """A temporary config directory (``root/config``) with its state directory beside it."""

    root: Path
    api_port: int = field(default_factory=free_port)
    token: str = field(default_factory=generate_secret)
    secret: str = field(default_factory=generate_secret)
    delivery: str = "{timeout: 5s}"
    agent_extra: str = ""  # more ``agent:`` keys, e.g. ", event_loop: uvloop"
    api_extra: str = ""  # more ``api:`` keys, e.g. ", max_connections: 4"

    def __post_init__(self) -> None:
        for sub in ("machines", "workflows", "secrets"):
            (self.config_dir / sub).mkdir(parents=True, exist_ok=True)
        (self.config_dir / "secrets" / "api-token").write_text(self.token + "\n")
        self.secret_file.write_text(self.secret + "\n")
        self.write_agent()

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def agent_yaml(self) -> Path:
        return self.config_dir / "agent.yaml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def write_agent(self) -> None:
        self.agent_yaml.write_text(
            f"agent: {{name: test-cell, state_dir: {self.state_dir}{self.agent_extra}}}\n"
            "log: {level: info, format: json}\n"
            f"api: {{bind: 127.0.0.1:{self.api_port}, token_file: secrets/api-token{self.api_extra}}}\n"
            f"delivery: {self.delivery}\n"
            "downtime_categories: [Maintenance Required, Setup]\n"
        )

    def machine(self, machine_id: str, modbus_port: int, unit: int) -> Path:
        path = self.config_dir / "machines" / f"{machine_id}.yaml"
        path.write_text(machine_yaml(machine_id, modbus_port, unit))
        return path

    @property
    def secret_file(self) -> Path:
        return self.config_dir / "secrets" / "webhook.secret"

    def workflow(self, name: str, trigger: str, actions: list[tuple[str, str]]) -> Path:
        path = self.config_dir / "workflows" / f"{name.lower().replace(' ', '-')}.yaml"
        path.write_text(workflow_yaml(name, trigger, actions, self.secret_file))
        return path


# -- the service manager's side of sd_notify


class NotifySocket:
    """A bound AF_UNIX datagram socket; every datagram is kept as a dict of its ``KEY=value`` lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[dict[str, str]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.setblocking(False)
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self._sock, 65536)
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            async with self._changed:
                self.messages.append(fields)
                self._changed.notify_all()

    def count(self, key: str, value: str | None = None) -> int:
        return sum(1 for m in self.messages if key in m and (value is None or m[key] == value))

    async def wait_for(self, key: str, value: str | None = None, *, count: int = 1, within: float) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: self.count(key, value) >= count)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._sock.close()


# -- the daemon process


class AgentProcess:
    """``python -m agent run --config <dir>/agent.yaml`` with its log (JSON lines) in ``root/agent-N.log``."""

    def __init__(self, files: AgentDir, notify: NotifySocket, *, watchdog_usec: int | None = None) -> None:
        self.files = files
        self.notify = notify
        self.watchdog_usec = watchdog_usec
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = files.root / "agent.log"

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        env.update(NOTIFY_SOCKET=str(self.notify.path), PYTHONUNBUFFERED="1")
        if self.watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        n = 1
        while (self.files.root / f"agent-{n}.log").exists():
            n += 1
        self.log_path = self.files.root / f"agent-{n}.log"
        with self.log_path.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agent", "run", "--config", str(self.files.agent_yaml),
                cwd=REPO, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip

    async def wait_ready(self, count: int = 1) -> None:
        try:
            await self.notify.wait_for("READY", "1", count=count, within=START_WITHIN)
        except TimeoutError:
            raise AssertionError(f"no READY=1 from the agent; its log:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None and self.proc.returncode is None
        self.proc.send_signal(sig)

    async def wait(self, within: float = START_WITHIN) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), within)

    async def stop(self) -> int | None:
        """SIGTERM, and SIGKILL if that did not end it (the test then fails on the exit code)."""
        if self.proc is None or self.proc.returncode is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), START_WITHIN)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return None

    async def api(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.files.token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.files.api_url + path, headers=headers, **kw) as resp,
        ):
            return resp.status, await resp.json(content_type=None)


async def run_cli(*argv: str) -> tuple[int, str, str]:
    """``python -m agent <argv>``: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", *argv, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), START_WITHIN)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# -- fixtures


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer."""
    with tempfile.TemporaryDirectory(prefix="ea-") as d:
        yield Path(d)


@pytest.fixture
async def notify_socket(short_dir: Path) -> AsyncIterator[NotifySocket]:
    sock = NotifySocket(short_dir / "notify.sock")
    sock.start()
    yield sock
    await sock.close()


@pytest.fixture(scope="module")
async def modbus() -> AsyncIterator[ModbusSimulator]:
    """Four simulated machines on units 1..4, all READY; tests change them and call ``publish``."""
    sim = await start_modbus_server({u: MachineState(name=f"m{u}") for u in range(1, 5)})
    yield sim
    await sim.stop()


@pytest.fixture
def agent_dir(tmp_path: Path) -> AgentDir:
    return AgentDir(tmp_path)


@pytest.fixture
async def receiver(agent_dir: AgentDir) -> AsyncIterator[Receiver]:
    """Verifies every delivery with the config's webhook secret."""
    rec = await start_receiver(agent_dir.secret)
    yield rec
    await rec.stop()
