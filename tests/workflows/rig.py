"""Real parts for pipeline and API specs: derivers, a tmp_path outbox, the dispatcher, and a receiver
that verifies every request with the official ``standardwebhooks`` package."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from agent.config.source import Problems, Section, parse_yaml
from agent.delivery.dispatcher import Dispatcher
from agent.delivery.outbox import Outbox
from agent.delivery.settings import DeliveryConfig, EndpointConfig, OutboxConfig
from agent.derive import Categories, MachineDeriver, parse_derivation
from agent.events import MachineRef
from agent.pipeline import Pipeline
from agent.workflows.plan import Firing
from agent.workflows.spec import Workflow, load_workflows
from drivers.base import Quality, Reading

OPERATOR_SEED = {"id": "op456", "name": "John Smith"}
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CATEGORIES = Categories.of(
    ["Maintenance Required", "Waiting for Material", "Setup", "Tooling", "No Operator"]
)
MILL = MachineRef("mill-01", "CNC Mill 01", "Milling")
LATHE = MachineRef("lathe-02", "CNC Lathe 02", "Turning")
MACHINES = {MILL.id: MILL, LATHE.id: LATHE}
TAGS = {"execution", "alarm_code", "alarm_severity", "part_count"}
MACHINE_YAML = """
timezone: Europe/Berlin
status:
  min_state: 0s
  rules:
    - {when: {alarm_code: {ne: 0}}, state: ALARM}
    - {when: {execution: ACTIVE}, state: ACTIVE}
  otherwise: IDLE
alarms:
  code_tag: alarm_code
  severity_tag: alarm_severity
  texts: {1001: Spindle overload, 2040: Coolant low}
  events: false          # Modbus: the register is the only alarm source
downtime:
  micro_stop: 1m
  categorize:
    - {when: {alarm_code: [1001]}, category: Maintenance Required}
parts: {counter: part_count}
"""


class FakeClock:
    """The pipeline's clock. Tests keep it in the past so deliveries are due at once for the real-time
    outbox and dispatcher, whose signature timestamps the receiver checks against real time."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def derivers() -> dict[str, MachineDeriver]:
    problems = Problems()
    data = parse_yaml(MACHINE_YAML, "machine.yaml", problems)
    spec = parse_derivation(Section(data, file="machine.yaml", path="", problems=problems), TAGS, CATEGORIES)
    assert not problems, problems.items
    return {m.id: MachineDeriver(spec, m, CATEGORIES) for m in MACHINES.values()}


def readings(machine: MachineRef, t: float, **values: Any) -> list[Reading]:
    return [Reading(machine.id, tag, v, Quality.GOOD, t) for tag, v in values.items()]


def workflows_from(tmp_path: Path, files: Mapping[str, str]) -> list[Workflow]:
    folder = tmp_path / "workflows"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(text, encoding="utf-8")
    problems = Problems()
    flows = load_workflows(
        folder,
        delivery=DeliveryConfig(),
        problems=problems,
        machine_ids=set(MACHINES),
        groups={m.group for m in MACHINES.values() if m.group},
        categories=CATEGORIES,
    )
    assert not problems, "\n".join(str(p) for p in problems.items)
    return flows


def hook(url: str, **extra: Any) -> str:
    options = "".join(f", {k}: {v}" for k, v in extra.items())
    return f"actions:\n  - webhook: {{url: '{url}', secret: {SECRET}{options}}}\n"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    payload: Any  # None when the signature did not verify
    error: str | None


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1 that checks signatures with the official verifier."""

    secret: str = SECRET
    got: list[Received] = field(default_factory=list)
    status: int = 200
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    port: int = 0

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        try:
            payload = Webhook(self.secret).verify(body, headers)
            error = None
        except WebhookVerificationError as exc:
            payload, error = None, str(exc)
        self.got.append(Received(request.path, headers, body, payload, error))
        self._arrived.set()
        return web.Response(status=self.status)

    async def wait_for(self, count: int, limit: float = 10.0) -> list[Received]:
        async with asyncio.timeout(limit):
            while len(self.got) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return list(self.got)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Rig:
    pipeline: Pipeline
    outbox: Outbox
    dispatcher: Dispatcher | None
    clock: FakeClock

    async def close(self) -> None:
        if self.dispatcher is not None:
            await self.dispatcher.stop(grace=1.0)
        await self.outbox.close()


def endpoints(flows: Sequence[Workflow]) -> dict[str, EndpointConfig]:
    return {ep.key: ep for wf in flows for ep in wf.endpoints}


async def make_rig(
    tmp_path: Path,
    flows: Sequence[Workflow],
    clock: FakeClock,
    *,
    dispatch: bool = True,
    store: Any = None,
    outbox_clock: Callable[[], float] | None = None,
    machine_derivers: Mapping[str, MachineDeriver] | None = None,
    on_firings: Callable[[Sequence[Firing]], None] | None = None,
) -> Rig:
    import time

    outbox = await Outbox.open(tmp_path / "outbox.sqlite3", OutboxConfig(), outbox_clock or time.time)
    dispatcher = None
    if dispatch:
        dispatcher = Dispatcher(outbox, endpoints(flows), DeliveryConfig(retry_schedule=(0.0, 0.2)))
        await dispatcher.start()
    pipeline = Pipeline(
        MACHINES,
        dict(machine_derivers) if machine_derivers is not None else derivers(),
        flows,
        outbox,
        store,
        clock=clock,
        on_enqueued=dispatcher.wake if dispatcher is not None else None,
        on_firings=on_firings,
    )
    await pipeline.start()
    return Rig(pipeline, outbox, dispatcher, clock)


def body_of(r: Received) -> dict[str, Any]:
    data = json.loads(r.body)
    assert isinstance(data, dict)
    return data


async def poll(pipeline: Pipeline, machine_id: str, samples: Sequence[Any]) -> list[Firing]:
    """One poll's samples, as the runtime's collector sink hands them on: derive, then fire."""
    events = pipeline.derive(machine_id, samples)
    return await pipeline.fire(events) if events else []
