"""Full-stack rig: a config directory in tmp_path, the real ``Runtime`` (collectors, derivation, workflows,
outbox, dispatcher, API), the bundled simulators on 127.0.0.1 and a verifying webhook receiver.

Time: the runtime's clock is a ``FakeClock`` that the test moves, so downtimes, thresholds and
schedules are crossed by assignment instead of by waiting. It stays days in the past: deliveries are
then due at once for the outbox and the dispatcher, which run on real time (signature timestamps are
checked against real time by the receiver). Waiting is only ever for I/O to happen, with a bound.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from standardwebhooks import Webhook

from agent.config.agent_file import Config, load_config
from agent.receiver import Received, Receiver, start_receiver
from agent.runtime import Runtime
from simulators.modbus_server import ModbusSimulator, start_modbus_server
from simulators.model import MachineState

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TOKEN = "tok_e2e_0123456789abcdef0123"
DAY = 86400.0
CATEGORIES = ["Maintenance Required", "Waiting for Material", "Setup", "Tooling", "No Operator"]

AGENT_YAML = """\
agent:
  name: e2e
  state_dir: state
  machines_dir: machines
  workflows_dir: workflows
log: {{level: warning}}
api:
  bind: 127.0.0.1:{port}
  token_file: secrets/api-token
delivery:
  timeout: 5s
  retry_schedule: [0s, 200ms, 500ms]
downtime_categories: [{categories}]
"""


def modbus_machine(machine_id: str, name: str, group: str, port: int, unit: int, *, extra: str = "") -> str:
    """A machine on the Modbus simulator through the ``modbus-sim`` profile, polled every 50 ms and
    reporting every state at once (min_state 0s); ``extra`` adds sections (downtime rules...)."""
    return f"""\
id: {machine_id}
name: {name}
group: {group}
profile: modbus-sim
modbus: {{host: 127.0.0.1, port: {port}, unit: {unit}, timeout: 1s}}
poll_interval: 50ms
status: {{min_state: 0s}}
{extra}"""


def webhook(url: str, **options: str) -> str:
    extra = "".join(f", {k}: {v}" for k, v in options.items())
    return f"actions:\n  - webhook: {{url: '{url}', secret: {SECRET}{extra}}}\n"


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def past_clock() -> FakeClock:
    return FakeClock(float(int(time.time() - 3 * DAY)))


class Changes:
    """Wakes a waiting test whenever something it may wait for could have changed (samples ingested,
    a tick, a request at the receiver); the test then re-checks its condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def poke(self) -> None:
        self._event.set()

    # A Receiver writes each request it records to its ``out`` stream: that is the receiver's poke.
    def write(self, text: str) -> int:
        self.poke()
        return len(text)

    def flush(self) -> None:
        self.poke()

    async def until(self, predicate: Callable[[], object], limit: float, what: str) -> None:
        try:
            async with asyncio.timeout(limit):
                while not predicate():
                    self._event.clear()
                    await self._event.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {limit}s waiting for {what}") from None


@dataclasses.dataclass
class Agent:
    """A running agent and what a test needs to talk to it."""

    folder: Path
    runtime: Runtime
    clock: FakeClock
    api_url: str
    changes: Changes

    @property
    def config_file(self) -> Path:
        return self.folder / "agent.yaml"

    def deriver(self, machine_id: str) -> Any:
        return self.runtime.pipeline.derivers[machine_id]

    async def wait_until(self, predicate: Callable[[], object], what: str, limit: float = 10.0) -> None:
        """Wait for a condition on derived state; re-checked after every ingest and tick."""
        await self.changes.until(predicate, limit, what)

    async def wait_status(self, machine_id: str, status: str, limit: float = 10.0) -> None:
        d = self.deriver(machine_id)
        await self.wait_until(lambda: str(d.status) == status, f"{machine_id} to be {status}", limit)

    async def api(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, *, token: str | None = TOKEN
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.api_url + path, json=body, headers=headers) as resp,
        ):
            return resp.status, await resp.json()

    async def metrics(self) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.api_url + "/metrics", headers=headers) as resp,
        ):
            return resp.status, await resp.text()

    async def rows(self, workflow: str) -> list[Any]:
        page = await self.runtime.outbox.list(workflow=workflow, limit=100)
        return list(reversed(page.items))  # oldest first

    async def stop(self) -> None:
        await self.runtime.stop(grace=1.0)


def write_config(
    folder: Path, machines: Mapping[str, str], workflows: Mapping[str, str], api_port: int = 8787
) -> Path:
    (folder / "machines").mkdir(parents=True, exist_ok=True)
    (folder / "workflows").mkdir(exist_ok=True)
    (folder / "secrets").mkdir(exist_ok=True)
    (folder / "secrets" / "api-token").write_text(TOKEN + "\n", encoding="utf-8")
    for name, text in machines.items():
        (folder / "machines" / f"{name}.yaml").write_text(text, encoding="utf-8")
    for name, text in workflows.items():
        (folder / "workflows" / f"{name}.yaml").write_text(text, encoding="utf-8")
    path = folder / "agent.yaml"
    path.write_text(AGENT_YAML.format(port=api_port, categories=", ".join(CATEGORIES)), encoding="utf-8")
    return path


def with_api_port(config: Config, port: int) -> Config:
    api = dataclasses.replace(config.agent.api, port=port)
    return dataclasses.replace(config, agent=dataclasses.replace(config.agent, api=api))


async def start_agent(
    folder: Path, machines: Mapping[str, str], workflows: Mapping[str, str], clock: FakeClock
) -> Agent:
    path = write_config(folder, machines, workflows)
    # Port 0 picks a free port; agent.yaml is then rewritten with it so the CLI finds the API.
    config = with_api_port(load_config(path), 0)
    runtime = Runtime(config, config_path=path, clock=clock)
    await runtime.start()
    assert runtime.api_url is not None
    port = int(runtime.api_url.rsplit(":", 1)[1])
    path.write_text(path.read_text(encoding="utf-8").replace(":8787", f":{port}"), encoding="utf-8")
    return Agent(folder, runtime, clock, runtime.api_url, watch(runtime))


def watch(runtime: Runtime) -> Changes:
    """Poke after every ``ingest`` and ``tick`` of each machine's deriver (their documented contract),
    whoever in the runtime calls them; the wrapped methods behave exactly as before."""
    changes = Changes()
    for deriver in runtime.pipeline.derivers.values():
        for name in ("ingest", "tick"):
            setattr(deriver, name, _poking(getattr(deriver, name), changes))
    return changes


def _poking(method: Callable[..., Any], changes: Changes) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        finally:
            changes.poke()

    return call


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await start_receiver(SECRET, out=Changes())  # type: ignore[arg-type]
    yield r
    await r.stop()


def payload(rec: Received) -> dict[str, Any]:
    """The body, after checking the signature with the official Standard Webhooks verifier too."""
    assert rec.valid, rec.error
    verified = Webhook(SECRET).verify(rec.body, rec.headers)
    body = json.loads(rec.body)
    assert verified == body
    assert isinstance(body, dict)
    return body


def at_path(receiver: Receiver, path: str) -> list[Received]:
    return [r for r in receiver.received if r.path == path]


async def wait_at(receiver: Receiver, path: str, count: int, limit: float = 10.0) -> list[Received]:
    """At least ``count`` requests to ``path`` (receivers from the ``receiver`` fixture only)."""
    changes = receiver.out
    assert isinstance(changes, Changes)
    await changes.until(lambda: len(at_path(receiver, path)) >= count, limit, f"{count} deliveries to {path}")
    return at_path(receiver, path)


ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


MODBUS_MACHINES = {1: "mill-01", 2: "lathe-02"}


@pytest.fixture(scope="module")
async def modbus_sim() -> AsyncIterator[ModbusSimulator]:
    """One Modbus simulator per module: unit 1 is mill-01, unit 2 lathe-02."""
    sim = await start_modbus_server({u: MachineState(name=n) for u, n in MODBUS_MACHINES.items()})
    yield sim
    await sim.stop()


@pytest.fixture
def machines(modbus_sim: ModbusSimulator) -> dict[str, MachineState]:
    """The simulated machines by id, reset to powered, READY, automatic, no alarms."""
    out: dict[str, MachineState] = {}
    for unit, name in MODBUS_MACHINES.items():
        fresh = MachineState(name=name)
        state = modbus_sim.machines[unit]
        for f in dataclasses.fields(MachineState):
            setattr(state, f.name, getattr(fresh, f.name))
        modbus_sim.publish(unit)
        out[name] = state
    return out
