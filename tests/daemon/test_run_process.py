"""``edge-agent run`` as systemd runs it: sd_notify, SIGHUP reloads, SIGTERM without losing deliveries.

Every test drives a real daemon process against an in-process Modbus simulator and a verifying
receiver on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.delivery.outbox import Outbox
from agent.delivery.settings import OUTBOX_FILE, OutboxConfig
from agent.receiver import Received, Receiver, start_receiver
from simulators.modbus_server import ModbusSimulator
from simulators.model import Execution
from tests.daemon.conftest import EVENT_WITHIN, AgentDir, AgentProcess, NotifySocket, run_cli

pytestmark = pytest.mark.slow


async def wait_delivery(receiver: Receiver, match: Callable[[Received], bool], within: float) -> Received:
    """The first request ``match`` accepts, waiting for more as they arrive (bounded)."""
    async with asyncio.timeout(within):
        seen = 0
        while True:
            for rec in receiver.received[seen:]:
                if match(rec):
                    return rec
            seen = len(receiver.received)
            await receiver.wait_for(seen + 1, within=within)


def body(rec: Received) -> dict[str, Any]:
    data = rec.json()
    assert isinstance(data, dict)
    return data


def status_change(machine_id: str, to: str) -> Callable[[Received], bool]:
    def match(rec: Received) -> bool:
        b = body(rec)
        return (
            rec.valid
            and b.get("event") == "machine_status_changed"
            and b.get("machine", {}).get("id") == machine_id
            and b.get("status", {}).get("to") == to
        )

    return match


def accepted(path: str) -> Callable[[Received], bool]:
    return lambda rec: rec.path == f"/{path}" and rec.status == 200


def set_execution(sim: ModbusSimulator, unit: int, execution: Execution) -> None:
    sim.machines[unit].execution = execution
    sim.publish(unit)


def log_events(agent: AgentProcess) -> list[dict[str, Any]]:
    out = []
    for line in agent.log().splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


# -- one daemon shared by the notify and reload tests (it is started once: start-up is the slow part)


@dataclass
class Daemon:
    files: AgentDir
    agent: AgentProcess
    notify: NotifySocket
    receiver: Receiver
    healthz_at_ready: int


@pytest.fixture(scope="module")
async def daemon(modbus: ModbusSimulator, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Daemon]:
    files = AgentDir(tmp_path_factory.mktemp("daemon"))
    receiver = await start_receiver(files.secret)
    files.machine("mill-01", modbus.port, 1)
    files.workflow("Status feed", "{type: machine_status_changed}", [(receiver.url + "status", "")])
    with tempfile.TemporaryDirectory(prefix="ea-") as short:
        notify = NotifySocket(Path(short) / "notify.sock")
        notify.start()
        agent = AgentProcess(files, notify, watchdog_usec=2_000_000)
        await agent.start()
        try:
            await agent.wait_ready()
            # Right as READY=1 arrived: the API must already answer.
            status, _ = await agent.api("GET", "/healthz")
            yield Daemon(files, agent, notify, receiver, status)
        finally:
            rc = await agent.stop()
            await notify.close()
            await receiver.stop()
        assert rc == 0, agent.log()


async def test_ready_only_once_the_api_answers_then_status_and_watchdog(daemon: Daemon) -> None:
    assert daemon.healthz_at_ready == 200
    ready = next(m for m in daemon.notify.messages if m.get("READY") == "1")
    assert "outbox pending=" in ready["STATUS"]
    first_ready = daemon.notify.messages.index(ready)
    # The once-a-second tick refreshes STATUS; WATCHDOG_USEC=2 s asks for a ping at least every second.
    await daemon.notify.wait_for("WATCHDOG", "1", count=3, within=EVENT_WITHIN)
    await daemon.notify.wait_for("STATUS", count=3, within=EVENT_WITHIN)
    later = [m for m in daemon.notify.messages[first_ready + 1 :] if "STATUS" in m]
    assert later and all("outbox pending=" in m["STATUS"] for m in later)
    assert any(m["STATUS"].startswith("IDLE=1;") for m in later)  # mill-01 is READY on the simulator
    assert all(
        set(m) <= {"READY", "STATUS", "WATCHDOG", "RELOADING", "MONOTONIC_USEC"}
        for m in daemon.notify.messages
    )


async def test_sighup_adds_a_machine_and_a_workflow(daemon: Daemon, modbus: ModbusSimulator) -> None:
    files, agent, notify = daemon.files, daemon.agent, daemon.notify
    files.machine("mill-02", modbus.port, 2)
    files.workflow("Part alert", "{type: manual}", [(daemon.receiver.url + "parts", "")])
    readies, reloads = notify.count("READY", "1"), notify.count("RELOADING", "1")

    agent.signal(signal.SIGHUP)
    await notify.wait_for("READY", "1", count=readies + 1, within=EVENT_WITHIN)

    assert notify.count("RELOADING", "1") == reloads + 1
    status, machines = await agent.api("GET", "/api/v1/machines")
    assert status == 200 and {m["id"] for m in machines["items"]} == {"mill-01", "mill-02"}
    status, flows = await agent.api("GET", "/api/v1/workflows")
    assert status == 200 and {w["name"] for w in flows["items"]} == {"Status feed", "Part alert"}
    # The new machine is really collected: its change arrives as a signed webhook.
    set_execution(modbus, 2, Execution.ACTIVE)
    got = await wait_delivery(daemon.receiver, status_change("mill-02", "ACTIVE"), EVENT_WITHIN)
    assert got.path == "/status"
    set_execution(modbus, 2, Execution.READY)


async def test_bad_config_is_rejected_and_the_old_one_keeps_running(
    daemon: Daemon, modbus: ModbusSimulator
) -> None:
    files, agent, notify = daemon.files, daemon.agent, daemon.notify
    _, before = await agent.api("GET", "/api/v1/machines")
    bad = files.config_dir / "machines" / "mill-03.yaml"
    bad.write_text(
        "id: mill-03\nname: Broken\nprofile: modbus-sim\nmodbus: {host: 127.0.0.1, port: 1, unit: 3}\npoll_interval: fast\n"
    )
    try:
        readies = notify.count("READY", "1")
        agent.signal(signal.SIGHUP)
        await notify.wait_for("READY", "1", count=readies + 1, within=EVENT_WITHIN)

        rejected = [e for e in log_events(agent) if e.get("event") == "reload_rejected"]
        assert rejected, agent.log()
        assert any(re.search(r"mill-03\.yaml:5\b.*poll_interval", e.get("problem", "")) for e in rejected)

        code, out, err = await run_cli("reload", "--config", str(files.agent_yaml))
        assert code == 2, (out, err)
        assert "rejected" in err and re.search(r"mill-03\.yaml:5\b.*poll_interval", err)

        assert agent.proc is not None and agent.proc.returncode is None
        _, after = await agent.api("GET", "/api/v1/machines")
        assert [m["id"] for m in after["items"]] == [m["id"] for m in before["items"]]
        # Still collecting with the old config.
        set_execution(modbus, 1, Execution.ACTIVE)
        await wait_delivery(daemon.receiver, status_change("mill-01", "ACTIVE"), EVENT_WITHIN)
    finally:
        bad.unlink()
        set_execution(modbus, 1, Execution.READY)


# -- SIGTERM: exit 0, and what was pending is still pending and is delivered after a restart


async def test_sigterm_exits_0_and_keeps_pending_deliveries(
    agent_dir: AgentDir, receiver: Receiver, notify_socket: NotifySocket, modbus: ModbusSimulator
) -> None:
    files = agent_dir
    files.delivery = "{timeout: 5s, retry_schedule: [0s, 2s, 2s, 2s, 2s], jitter: 0}"
    files.write_agent()
    files.machine("mill-01", modbus.port, 3)
    # Action 0 is sent at once (and refused with 503); action 1 waits 3 s in the outbox.
    files.workflow(
        "Inspection", "{type: manual}", [(receiver.url + "now", ""), (receiver.url + "later", "delay: 3s")]
    )
    receiver.status = 503

    agent = AgentProcess(files, notify_socket)
    await agent.start()
    try:
        await agent.wait_ready()
        status, result = await agent.api(
            "POST", "/api/v1/workflows/Inspection/trigger", json={"machine": "mill-01"}
        )
        assert status in (200, 201, 202), result
        (refused,) = await receiver.wait_for(1, within=EVENT_WITHIN)
        assert refused.status == 503 and refused.path == "/now"
    finally:
        rc = await agent.stop()
    assert rc == 0, agent.log()

    outbox = await Outbox.open(files.state_dir / OUTBOX_FILE, OutboxConfig(), recover=False)
    try:
        pending = (await outbox.list(state="pending")).items
    finally:
        await outbox.close()
    by_path = {p.url.rsplit("/", 1)[1]: p for p in pending}
    assert set(by_path) == {"now", "later"}
    assert by_path["now"].message_id == refused.webhook_id and by_path["now"].last_status == 503

    receiver.status = 200
    again = AgentProcess(files, notify_socket)
    await again.start()
    try:
        await again.wait_ready(count=2)
        delivered = {
            path: await wait_delivery(receiver, accepted(path), EVENT_WITHIN) for path in ("now", "later")
        }
    finally:
        rc = await again.stop()
    assert rc == 0, again.log()
    for path, rec in delivered.items():
        assert rec.valid and rec.webhook_id == by_path[path].message_id
        assert body(rec)["event"] == "manual_trigger"


async def test_a_second_agent_on_the_same_state_dir_is_refused_naming_the_first(daemon: Daemon) -> None:
    assert daemon.agent.proc is not None
    with tempfile.TemporaryDirectory(prefix="ea-") as short:
        notify = NotifySocket(Path(short) / "notify.sock")
        notify.start()
        second = AgentProcess(daemon.files, notify)
        await second.start()
        try:
            rc = await second.wait()
        finally:
            await second.stop()
            await notify.close()
    assert rc == 1
    assert f"pid {daemon.agent.proc.pid}" in second.log()
    assert notify.count("READY") == 0
    status, _ = await daemon.agent.api("GET", "/healthz")
    assert status == 200


async def test_state_dir_and_its_databases_are_private_without_systemd(daemon: Daemon) -> None:
    """pytest runs with umask 022, as a shell would: ``run`` must tighten it itself."""
    state = daemon.files.state_dir
    assert state.stat().st_mode & 0o777 == 0o700
    files = list(state.iterdir())
    assert any(f.name.endswith("-wal") for f in files)
    for f in files:
        assert f.stat().st_mode & 0o077 == 0, f"{f.name} is {oct(f.stat().st_mode & 0o777)}"
