"""``edge-agent demo`` (``make demo``): simulators + the agent + a verifying receiver, on 127.0.0.1.

The shipped ``config/`` is copied to a temporary directory, pointed at free local ports, given fresh
secrets and three demo workflows (a scheduled sync every minute, a downtime alert after one
minute, a log of every downtime as it starts), then the real daemon runs it as a separate process. The receiver runs here and prints
every delivery with its signature verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

DEMO_WORKFLOWS = {
    "demo-minute-sync.yaml": """\
# Demo speed version of seed example 3: the production sync every minute instead of nightly.
name: Demo production sync (every minute)
trigger: {type: scheduled, cron: "* * * * *", timezone: UTC}
actions:
  - webhook: {url: "http://127.0.0.1:8090/production-demo", secret_env: DEMO_WEBHOOK_SECRET}
""",
    "demo-downtime-log.yaml": """\
# Every downtime as it starts and ends (beyond the seed's triggers), e.g. for an ERP downtime log.
name: Demo downtime log
trigger: {type: downtime_started}
actions:
  - webhook: {url: "http://127.0.0.1:8090/downtime-demo", secret_env: DEMO_WEBHOOK_SECRET}
""",
    "demo-downtime-1min.yaml": """\
# Demo speed version of seed example 2: a downtime longer than one minute instead of thirty.
name: Demo supervisor notification (1 min)
trigger: {type: downtime_exceeded, after: 1m}
actions:
  - webhook: {url: "http://127.0.0.1:8090/make-demo", secret_env: DEMO_WEBHOOK_SECRET}
""",
}


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("demo", help="simulated machines + agent + verifying receiver, all on 127.0.0.1")
    p.add_argument("--seconds", type=float, default=0, help="stop by itself after N seconds (0 = Ctrl-C)")
    p.add_argument("--config-dir", type=Path, default=Path("config"), help="the config to demonstrate")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, outbox)")
    p.add_argument("--quiet", action="store_true", help="print only the summary, not every delivery")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line (for scripts)")
    p.set_defaults(handler=run)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(config_dir: Path, root: Path, ports: dict[str, int], secret: str, token: str) -> dict[str, str]:
    """Copy the config and point it at the demo's ports and state dir; returns the secrets' env.

    The ports are set on the parsed YAML (every machine's ``modbus``/``opcua`` address, every
    webhook URL, ``api.bind``), never by replacing text: whatever ports a user's files name, the
    demo's agent talks to the demo's simulators and receiver, on the ports the banner shows.
    """
    target = root / "config"
    shutil.copytree(config_dir, target, ignore=shutil.ignore_patterns("secrets"))
    (target / "workflows").mkdir(exist_ok=True)
    for name, text in DEMO_WORKFLOWS.items():
        (target / "workflows" / name).write_text(text)
    env_names: set[str] = set()
    agent_file = target / "agent.yaml"
    agent = _load(agent_file)
    agent.setdefault("agent", {})["state_dir"] = str(root / "state")
    for key in ("machines_dir", "workflows_dir"):
        agent["agent"].pop(key, None)  # the copy keeps the standard layout
    api: dict[str, Any] = agent["api"] if isinstance(agent.get("api"), dict) else {}
    for key in ("token", "token_file", "token_env"):
        api.pop(key, None)
    agent["api"] = {**api, "bind": f"127.0.0.1:{ports['api']}", "token_file": "secrets/api-token"}
    for workflow in agent.get("workflows") or []:
        _point_workflow(workflow, ports["receiver"], env_names)
    _dump(agent_file, agent)
    for path in sorted((target / "machines").glob("*.y*ml")):
        machine = _load(path)
        _point_machine(machine, ports)
        _dump(path, machine)
    for path in sorted((target / "workflows").glob("*.y*ml")):
        workflow = _load(path)
        _point_workflow(workflow, ports["receiver"], env_names)
        _dump(path, workflow)
    secrets = target / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "api-token").write_text(token + "\n")
    return dict.fromkeys(sorted(env_names), secret)


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _dump(path: Path, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _point_machine(machine: dict[str, Any], ports: dict[str, int]) -> None:
    modbus = machine.get("modbus")
    if isinstance(modbus, dict):
        modbus.update(host="127.0.0.1", port=ports["modbus"])
    opcua = machine.get("opcua")
    if isinstance(opcua, dict) and isinstance(opcua.get("url"), str):
        path = urlsplit(opcua["url"]).path
        opcua["url"] = f"opc.tcp://127.0.0.1:{ports['opcua']}{path}"
    # The demo scenario stops for about 40 s at a time: count those stops as downtime.
    downtime = machine.setdefault("downtime", {})
    if isinstance(downtime, dict) and "min_seconds" not in downtime:
        downtime["micro_stop"] = "15s"


def _point_workflow(workflow: Any, receiver_port: int, env_names: set[str]) -> None:
    """Every webhook goes to the demo's receiver, signed with the demo's secret."""
    if not isinstance(workflow, dict):
        return
    for action in workflow.get("actions") or []:
        webhook = action.get("webhook") if isinstance(action, dict) else None
        if not isinstance(webhook, dict):
            continue
        if isinstance(webhook.get("url"), str):
            parts = urlsplit(webhook["url"])
            webhook["url"] = urlunsplit(
                ("http", f"127.0.0.1:{receiver_port}", parts.path or "/", parts.query, "")
            )
        for key in ("secret", "secret_file", "secret_env", "secrets"):
            webhook.pop(key, None)
        webhook["secret_env"] = "DEMO_WEBHOOK_SECRET"
        env_names.add("DEMO_WEBHOOK_SECRET")


async def wait_port(port: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


async def _stop(proc: asyncio.subprocess.Process, name: str, grace: float = 15.0) -> int | None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            print(f"demo: {name} did not stop in {grace:.0f}s; killing it", file=sys.stderr)
            proc.kill()
            await proc.wait()
    return proc.returncode


async def demo(args: argparse.Namespace) -> int:
    from agent.delivery.signing import generate_secret
    from agent.receiver import start_receiver

    config_dir: Path = args.config_dir
    if not (config_dir / "agent.yaml").is_file():
        print(f"demo: {config_dir}/agent.yaml not found (run from the repository root)", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
    ports = {k: free_port() for k in ("modbus", "opcua", "receiver", "api")}
    secret, token = generate_secret(), generate_secret()
    env = {**os.environ, **prepare(config_dir, root, ports, secret, token), "PYTHONUNBUFFERED": "1"}
    receiver = await start_receiver(secret, port=ports["receiver"], out=_Printer(args.quiet))  # type: ignore[arg-type]
    try:
        rc = await _run_processes(root, ports, env, token, args.seconds)
    finally:
        await receiver.stop()
    if rc is None:
        return 1
    invalid = _summary(receiver.received, as_json=args.json)
    if not args.keep and rc == 0:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"files kept in {root}")
    if invalid:
        return 1
    return rc


class _Printer:
    """The receiver's report of each delivery, on stdout unless ``--quiet``."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def write(self, text: str) -> int:
        if not self.quiet:
            sys.stdout.write(text)
            sys.stdout.flush()
        return len(text)

    def flush(self) -> None:
        sys.stdout.flush()


async def _run_processes(
    root: Path, ports: dict[str, int], env: dict[str, str], token: str, seconds: float
) -> int | None:
    """Simulators, then the agent, until the end of the demo; ``None`` if the simulators never came up."""
    cfg = root / "config" / "agent.yaml"
    py = sys.executable
    sim_log = (root / "simulator.log").open("wb")
    agent_log = (root / "agent.log").open("wb")
    sim = await asyncio.create_subprocess_exec(
        py, "-m", "simulators", "--machines", "2", "--protocol", "both",
        "--modbus-port", str(ports["modbus"]), "--opcua-port", str(ports["opcua"]),
        "--scenario", "demo", "--offset-seconds", "20",
        stdout=sim_log, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    agent: asyncio.subprocess.Process | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    rc = 0
    try:
        if not (await wait_port(ports["modbus"], 30) and await wait_port(ports["opcua"], 30)):
            print(f"demo: the simulators did not start; see {root / 'simulator.log'}", file=sys.stderr)
            return None
        agent = await asyncio.create_subprocess_exec(
            py, "-m", "agent", "run", "--config", str(cfg),
            stdout=agent_log, stderr=asyncio.subprocess.STDOUT, env=env,
        )  # fmt: skip
        print(_banner(root, ports, cfg, seconds), flush=True)
        rc = await _watch(agent, stop, root, ports["api"], token, seconds)
    finally:
        if agent is not None:
            agent_rc = await _stop(agent, "agent")
            if agent_rc not in (0, None) and rc == 0:
                print(f"demo: the agent exited with {agent_rc}; see {root / 'agent.log'}", file=sys.stderr)
                rc = 1
        await _stop(sim, "simulators")
        sim_log.close()
        agent_log.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return rc


def _banner(root: Path, ports: dict[str, int], cfg: Path, seconds: float) -> str:
    return (
        f"edge-agent demo — everything on 127.0.0.1, files in {root}\n"
        f"  simulators  Modbus :{ports['modbus']}  OPC-UA :{ports['opcua']}  (log: simulator.log)\n"
        f"  agent       API :{ports['api']}  (log: agent.log, JSON lines)\n"
        f"  panel       http://127.0.0.1:{ports['api']}/panel/  (log in with the token in {root / 'config' / 'secrets' / 'api-token'})\n"
        f"  receiver    :{ports['receiver']}  verifying Standard Webhooks signatures\n"
        f"  try:        EDGE_AGENT_CONFIG={cfg} {edge_agent_command()} status\n"
        "Signed deliveries appear below as the machines change"
        + (f"; stopping after {seconds:g}s." if seconds else "; Ctrl-C stops everything.")
        + "\n"
    )


async def _watch(
    agent: asyncio.subprocess.Process,
    stop: asyncio.Event,
    root: Path,
    api_port: int,
    token: str,
    seconds: float,
) -> int:
    """Until Ctrl-C, ``seconds`` or the agent's death (then 1); the manual trigger after 12 s."""
    started = time.monotonic()
    triggered = False
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        if agent.returncode is not None:
            print(
                f"demo: the agent exited with {agent.returncode}; see {root / 'agent.log'}", file=sys.stderr
            )
            return 1
        elapsed = time.monotonic() - started
        if not triggered and elapsed > 12:
            triggered = True
            await _manual_trigger(api_port, token)
        if seconds and elapsed >= seconds:
            break
    return 0


def _summary(received: Sequence[Any], *, as_json: bool) -> int:
    """Print what arrived per event type (one JSON line with ``--json``); returns how many had an
    invalid signature."""
    events = Counter(_event_of(r.body) for r in received)
    invalid = [r for r in received if not r.valid]
    if as_json:
        print(json.dumps({"deliveries": len(received), "invalid": len(invalid), "events": events}))
        return len(invalid)
    print(f"\ndemo summary: {len(received)} deliveries, {len(invalid)} with an invalid signature")
    for name, n in sorted(events.items()):
        print(f"  {n:4d}  {name}")
    return len(invalid)


async def _manual_trigger(api_port: int, token: str) -> None:
    """Seed example 4 the way an operator does it: a manual trigger through the local API."""
    import aiohttp

    url = f"http://127.0.0.1:{api_port}/api/v1/workflows/Quality inspection/trigger"
    body = {
        "machine": "mill-01",
        "operator": {"id": "op456", "name": "John Smith"},
        "note": "Burr on part edge",
    }
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as resp,
        ):
            if resp.status >= 300:
                print(f"demo: manual trigger answered {resp.status}: {await resp.text()}", file=sys.stderr)
    except aiohttp.ClientError as exc:
        print(f"demo: manual trigger failed: {exc}", file=sys.stderr)


def _event_of(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return "(not JSON)"
    return str(data.get("event", "?")) if isinstance(data, dict) else "?"


def edge_agent_command() -> str:
    """How to call edge-agent from this shell: the venv's script works without activating the venv."""
    script = Path(sys.executable).parent / "edge-agent"
    if not script.exists():
        return f"{sys.executable} -m agent"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(demo(args))
