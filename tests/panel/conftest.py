"""Browser rig: the real runtime on 127.0.0.1 (free port) with the Modbus simulator, a verifying webhook
receiver, role tokens in agent.yaml, and headless Debian Chromium driven by Playwright.

Chromium is the distribution's (/usr/bin/chromium, installed by .ci/run), never a downloaded build.
The runtime runs on real time: the browser counts durations from the agent's timestamps.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from agent.config.agent_file import load_config
from agent.receiver import Receiver, start_receiver
from agent.runtime import Runtime
from simulators.modbus_server import ModbusSimulator, start_modbus_server
from simulators.model import MachineState
from tests.e2e.conftest import SECRET, Changes, modbus_machine, watch, webhook, with_api_port

CHROMIUM = os.environ.get("PANEL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
TOKENS = {
    "viewer": "view_0123456789abcdef_wall",
    "operator": "oper_0123456789abcdef_tablet",
    "admin": "admin_0123456789abcdef_it",
}
CATEGORIES = ["Maintenance Required", "Waiting for Material", "Tooling"]
# A device's alarm text that tries to run script in the board: it must stay text.
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
QUALITY = "Quality inspection"

AGENT_YAML = """\
agent: {{name: panel-test, state_dir: state, machines_dir: machines, workflows_dir: workflows}}
log: {{level: warning}}
api:
  bind: 127.0.0.1:{port}
  tokens:
    - {{name: wall, role: viewer, token: {viewer}}}
    - {{name: tablet, role: operator, token: {operator}}}
    - {{name: plant-it, role: admin, token: {admin}}}
delivery: {{timeout: 5s, retry_schedule: [0s, 200ms]}}
downtime_categories: [{categories}]
"""

EXTRA = f"""\
downtime: {{micro_stop: 0s}}
alarms:
  texts: {{7777: '{HOSTILE}', 1001: Spindle overload}}
"""


@dataclass
class PanelAgent:
    folder: Path
    runtime: Runtime
    url: str
    changes: Changes
    port: int

    def deriver(self, machine_id: str) -> Any:
        return self.runtime.pipeline.derivers[machine_id]

    async def wait_until(self, predicate: Any, what: str, limit: float = 10.0) -> None:
        await self.changes.until(predicate, limit, what)


def write_config(
    folder: Path, sim: ModbusSimulator, receiver: Receiver, port: int, categorized: Receiver | None = None
) -> Path:
    for sub in ("machines", "workflows"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "machines" / "mill-01.yaml").write_text(
        modbus_machine("mill-01", "CNC Mill 01", "Milling", sim.port, 1, extra=EXTRA), encoding="utf-8"
    )
    (folder / "machines" / "lathe-02.yaml").write_text(
        modbus_machine("lathe-02", "CNC Lathe 02", "Turning", sim.port, 2, extra=EXTRA), encoding="utf-8"
    )
    (folder / "workflows" / "quality.yaml").write_text(
        f"name: {QUALITY}\ndescription: Request Quality Inspection\n"
        "trigger: {type: manual, description: Request Quality Inspection}\n"
        + webhook(receiver.url + "quality"),
        encoding="utf-8",
    )
    (folder / "workflows" / "categorized.yaml").write_text(
        "name: Downtime categorized\ntrigger: {type: downtime_categorized}\n"
        + webhook((categorized or receiver).url + "categorized"),
        encoding="utf-8",
    )
    path = folder / "agent.yaml"
    path.write_text(
        AGENT_YAML.format(port=port, categories=", ".join(CATEGORIES), **TOKENS), encoding="utf-8"
    )
    return path


async def start_panel_agent(
    folder: Path,
    sim: ModbusSimulator,
    receiver: Receiver,
    port: int = 0,
    categorized: Receiver | None = None,
    clock: Callable[[], float] = time.time,
) -> PanelAgent:
    """``categorized``: where the ``downtime_categorized`` workflow sends (default: ``receiver``)."""
    path = write_config(folder, sim, receiver, port or 8787, categorized)
    config = with_api_port(load_config(path), port)
    runtime = Runtime(config, config_path=path, clock=clock)
    await runtime.start()
    assert runtime.api_url is not None
    bound = int(runtime.api_url.rsplit(":", 1)[1])
    return PanelAgent(folder, runtime, runtime.api_url, watch(runtime), bound)


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[ModbusSimulator]:
    s = await start_modbus_server({1: MachineState(name="mill-01"), 2: MachineState(name="lathe-02")})
    yield s
    await s.stop()


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    r = await start_receiver(SECRET, out=Changes())  # type: ignore[arg-type]
    yield r
    await r.stop()


@pytest.fixture(scope="module")
async def agent(
    tmp_path_factory: pytest.TempPathFactory, sim: ModbusSimulator, receiver: Receiver
) -> AsyncIterator[PanelAgent]:
    a = await start_panel_agent(tmp_path_factory.mktemp("panel"), sim, receiver)
    yield a
    await a.runtime.stop(grace=1.0)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} missing: .ci/run installs Debian's chromium package"
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield b
        await b.close()


@pytest.fixture
async def new_page(browser: Browser) -> AsyncIterator[Any]:
    """``await new_page(width, height)``: a page in a fresh context (its own cookies)."""
    contexts = []

    async def make(width: int = 1280, height: int = 800) -> Page:
        ctx = await browser.new_context(viewport={"width": width, "height": height})
        contexts.append(ctx)
        return await ctx.new_page()

    yield make
    for ctx in contexts:
        await ctx.close()


async def login(
    page: Page, base: str, role: str, operator: str | None = None, op_id: str | None = None
) -> None:
    await page.goto(base + "/panel/login")
    await page.fill("input[name=token]", TOKENS[role])
    if operator:
        await page.fill("input[name=operator_name]", operator)
    if op_id:
        await page.fill("input[name=operator_id]", op_id)
    async with page.expect_navigation():
        await page.click("button[type=submit]")


def screenshot_dir(tmp_path: Path) -> Path:
    """Test artefacts; ``PANEL_SCREENSHOTS=docs/img`` refreshes the README's pictures."""
    out = Path(os.environ.get("PANEL_SCREENSHOTS") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def show(sim: ModbusSimulator, unit: int, **changes: Any) -> None:
    state = sim.machines[unit]
    for k, v in changes.items():
        setattr(state, k, v)
    sim.publish(unit)


PAGE_WEIGHT = """() => {
  const nav = performance.getEntriesByType("navigation").map(e => e.transferSize);
  const res = performance.getEntriesByType("resource").map(e => e.transferSize);
  return nav.concat(res).reduce((a, b) => a + b, 0);
}"""

# Every control a finger may need: links styled as buttons, buttons, fields, the navigation.
SMALL_TARGETS = """() => Array.from(document.querySelectorAll(
    "a.btn, button, input:not([type=hidden]), select, summary, nav a, .tile a.name"))
  .filter(el => el.offsetParent !== null)
  .map(el => [el.outerHTML.slice(0, 80), el.getBoundingClientRect()])
  .filter(([, r]) => r.height < 44 || r.width < 44)
  .map(([html, r]) => `${html} ${Math.round(r.width)}x${Math.round(r.height)}`)"""
