"""Workflow engine figures: matching + payloads (pure), events through the pipeline into a real outbox,
and manual triggers through the operator API on 127.0.0.1.

Run: .venv/bin/python bench/workflows.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import structlog

from agent.api.server import bound_port, create_app, start_api
from agent.api.settings import ApiConfig
from agent.config.source import Problems, Secret, Section, parse_yaml
from agent.delivery.outbox import Outbox
from agent.delivery.settings import DeliveryConfig, OutboxConfig
from agent.derive import Categories, MachineDeriver, parse_derivation
from agent.events import ALARM_TRIGGERED, Event, MachineRef
from agent.pipeline import Pipeline
from agent.workflows.match import fires
from agent.workflows.payload import build_payload, encode
from agent.workflows.plan import Firing
from agent.workflows.spec import Workflow, parse_workflow
from drivers.base import Quality, Reading

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TOKEN = "bench-token-0123456789"
MACHINES = 20
CATEGORIES = Categories.of(["Maintenance Required", "Setup"])
MACHINE_YAML = """
status:
  min_state: 0s
  rules:
    - {when: {alarm_code: {ne: 0}}, state: ALARM}
    - {when: {execution: ACTIVE}, state: ACTIVE}
  otherwise: IDLE
alarms: {code_tag: alarm_code, severity_tag: alarm_severity}
downtime: {micro_stop: 1m}
parts: {counter: part_count}
"""
FLOWS = [
    "name: Spindle\ntrigger: {type: alarm_triggered, codes: [1001], min_severity: 500}\n",
    "name: Coolant\ntrigger: {type: alarm_triggered, code_patterns: ['20*']}\n",
    "name: Stops\ntrigger: {type: machine_status_changed, from: [ACTIVE]}\n",
    "name: Maint\ntrigger: {type: downtime_categorized, categories: [Maintenance Required]}\n",
    "name: Sup\ntrigger: {type: downtime_exceeded, after: 30m}\n",
    "name: QA\ntrigger: {type: manual}\n",
]


def workflows() -> list[Workflow]:
    out = []
    for text in FLOWS:
        problems = Problems()
        data = parse_yaml(
            text + f"actions:\n  - webhook: {{url: 'http://127.0.0.1:9/x', secret: {SECRET}}}\n",
            "wf.yaml",
            problems,
        )
        wf = parse_workflow(Section(data, file="wf.yaml", path="", problems=problems), DeliveryConfig())
        assert wf is not None and not problems, problems.items
        out.append(wf)
    return out


def bench_pure(flows: list[Workflow]) -> None:
    machine = MachineRef("mill-01", "CNC Mill 01", "Milling")
    events = [
        Event(
            f"E{i}",
            ALARM_TRIGGERED,
            1.7e9 + i,
            machine,
            {"alarm": {"code": "1001" if i % 2 else "2040", "description": "x", "severity": 800}},
        )
        for i in range(20000)
    ]
    t0 = time.perf_counter()
    bodies = 0
    for e in events:
        for wf in flows:
            if fires(wf, e):
                encode(build_payload(wf, e))
                bodies += 1
    dt = time.perf_counter() - t0
    print(
        f"match+payload: {len(events)} events x {len(flows)} workflows in {dt * 1000:.0f} ms "
        f"= {len(events) / dt:,.0f} events/s ({bodies} bodies, {dt / len(events) * 1e6:.1f} µs/event)"
    )


def derivers() -> dict[str, MachineDeriver]:
    problems = Problems()
    data = parse_yaml(MACHINE_YAML, "m.yaml", problems)
    spec = parse_derivation(
        Section(data, file="m.yaml", path="", problems=problems),
        {"execution", "alarm_code", "alarm_severity", "part_count"},
        CATEGORIES,
    )
    return {
        f"m{i:02d}": MachineDeriver(spec, MachineRef(f"m{i:02d}", f"M {i}", "Milling"), CATEGORIES)
        for i in range(MACHINES)
    }


async def poll(pipeline: Pipeline, machine_id: str, samples: list[Reading]) -> list[Firing]:
    """One poll as the runtime's collector sink hands it on: derive, then fire what came out."""
    events = pipeline.derive(machine_id, samples)
    return await pipeline.fire(events) if events else []


async def bench_pipeline(flows: list[Workflow], folder: Path) -> None:
    outbox = await Outbox.open(folder / "outbox.sqlite3", OutboxConfig())
    ds = derivers()
    pipeline = Pipeline({mid: d.machine for mid, d in ds.items()}, ds, flows, outbox, None, clock=time.time)
    try:
        rounds = 100
        t = time.time()
        for mid in ds:
            await poll(pipeline, mid, [Reading(mid, "execution", "ACTIVE", Quality.GOOD, t)])
        t0 = time.perf_counter()
        fired = 0
        for r in range(rounds):
            code = (1001, 0, 2040, 0)[r % 4]
            batch = [
                poll(
                    pipeline,
                    mid,
                    [
                        Reading(mid, "alarm_code", code, Quality.GOOD, t + r),
                        Reading(mid, "alarm_severity", 800, Quality.GOOD, t + r),
                        Reading(mid, "part_count", r, Quality.GOOD, t + r),
                    ],
                )
                for mid in ds
            ]
            fired += sum(len(x) for x in await asyncio.gather(*batch))
        dt = time.perf_counter() - t0
        samples = rounds * len(ds) * 3
        print(
            f"pipeline -> outbox: {samples} readings from {len(ds)} machines, {fired} deliveries durable "
            f"in {dt * 1000:.0f} ms = {fired / dt:,.0f} deliveries/s, {samples / dt:,.0f} readings/s"
        )
    finally:
        await outbox.close()


async def bench_api(flows: list[Workflow], folder: Path) -> None:
    outbox = await Outbox.open(folder / "outbox-api.sqlite3", OutboxConfig())
    ds = derivers()
    pipeline = Pipeline({mid: d.machine for mid, d in ds.items()}, ds, flows, outbox, None, clock=time.time)
    config = ApiConfig(enabled=True, host="127.0.0.1", port=0, token=Secret(TOKEN, "bench"))
    runner = await start_api(create_app(pipeline, outbox, config), config)
    url = f"http://127.0.0.1:{bound_port(runner)}/api/v1/workflows/QA/trigger"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with aiohttp.ClientSession() as http:

            async def one(i: int) -> int:
                async with http.post(url, json={"machine": f"m{i % MACHINES:02d}"}, headers=headers) as resp:
                    await resp.read()
                    return resp.status

            n = 300
            t0 = time.perf_counter()
            statuses = [await one(i) for i in range(n)]
            seq = time.perf_counter() - t0
            t0 = time.perf_counter()
            statuses += await asyncio.gather(*(one(i) for i in range(n)))
            par = time.perf_counter() - t0
        assert set(statuses) == {202}, set(statuses)
        print(
            f"API manual trigger (durable before 202): sequential {n / seq:,.0f} req/s "
            f"({seq / n * 1000:.2f} ms each); {n} concurrent {n / par:,.0f} req/s"
        )
    finally:
        await runner.cleanup()
        await outbox.close()


async def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    flows = workflows()
    bench_pure(flows)
    with tempfile.TemporaryDirectory() as tmp:
        await bench_pipeline(flows, Path(tmp))
        await bench_api(flows, Path(tmp))


if __name__ == "__main__":
    asyncio.run(main())
