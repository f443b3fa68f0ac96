"""The broker link's state where operators look: /metrics, /readyz and systemd's STATUS= line.

The real ``Runtime`` with its API against a real Mosquitto that requires a password; the broker is
killed and started again on the same port while the agent runs. The password never appears.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from agent.runtime import Runtime
from simulators.modbus_server import ModbusSimulator
from tests.mqtt.broker import Broker, free_port
from tests.mqtt.test_agent import run_agent, sim, write_config  # noqa: F401 - sim is a fixture

PASSWORD = "agent-pw-Zq81"
TOKEN = "t" * 40


async def until(check: Callable[[], Awaitable[Any]], what: str, within: float = 30.0) -> Any:
    """Polled: /metrics has no change signal (bounded wait, not a speed threshold)."""
    deadline = asyncio.get_running_loop().time() + within
    while not (result := await check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return result


async def get(runtime: Runtime, path: str, token: str | None = TOKEN) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(runtime.api_url + path, headers=headers) as r:
        return r.status, await r.text()


def sample(metrics: str, name: str, broker: str) -> float | None:
    found = re.search(rf'^{name}{{broker="{re.escape(broker)}"}} (\S+)$', metrics, re.M)
    return float(found.group(1)) if found else None


async def test_metrics_health_and_status_follow_the_broker_going_away_and_back(
    tmp_path: Path,
    sim: ModbusSimulator,  # noqa: F811
) -> None:
    broker = await Broker(tmp_path / "broker", users={"agent": PASSWORD}).start()
    (tmp_path / "mqtt.pw").write_text(PASSWORD + "\n")
    (tmp_path / "cfg" / "secrets").mkdir(parents=True)
    (tmp_path / "cfg" / "secrets" / "api-token").write_text(TOKEN + "\n")
    path = write_config(
        tmp_path / "cfg", broker.port, sim.port, extra_mqtt=", username: agent, password_file: ../mqtt.pw"
    )
    path.write_text(
        path.read_text().replace(
            "api: {enabled: false}",
            f"api: {{bind: '127.0.0.1:{free_port()}', token_file: secrets/api-token}}",
        )
    )
    runtime = await run_agent(path)
    name = f"127.0.0.1:{broker.port}"
    seen: list[str] = []

    async def metric(metric_name: str, want: float) -> bool:
        status, text = await get(runtime, "/metrics")
        assert status == 200
        seen.append(text)
        return sample(text, metric_name, name) == want

    try:
        await until(lambda: metric("edge_agent_mqtt_connected", 1.0), "connected 1")
        assert sample(seen[-1], "edge_agent_mqtt_reconnects_total", name) == 0.0
        status, ready = await get(runtime, "/readyz", token=None)
        assert status == 200, ready
        assert runtime.status_line().endswith(f"; mqtt {name} up")

        await broker.stop()
        await until(lambda: metric("edge_agent_mqtt_connected", 0.0), "connected 0")
        status, public = await get(runtime, "/readyz", token=None)
        assert status == 503
        assert f"MQTT broker {name} not connected" in public
        assert "detail" not in public  # the error text is for token holders
        status, private = await get(runtime, "/readyz")
        assert f'"mqtt {name}": "broker {name}: ' in private  # the last error, named
        assert runtime.status_line().endswith(f"; mqtt {name} down")

        await broker.start()
        await until(lambda: metric("edge_agent_mqtt_reconnects_total", 1.0), "a reconnect counted")
        await until(lambda: metric("edge_agent_mqtt_connected", 1.0), "connected again")
        status, ready = await get(runtime, "/readyz", token=None)
        assert status == 200, ready
        texts = [*seen, public, private, runtime.status_line()]
        assert not [t for t in texts if PASSWORD in t]
    finally:
        await runtime.stop(grace=1.0)
        await broker.stop()
