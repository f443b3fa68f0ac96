"""The demo's copy of a config points at the demo's ports whatever ports the user's files name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from agent.commands.demo_cmd import prepare
from agent.config.agent_file import collect_config

REPO = Path(__file__).resolve().parents[2]
PORTS = {"modbus": 15020, "opcua": 14840, "receiver": 18090, "api": 18787}
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TOKEN = "tok_demo_0123456789abcdef"


def edited_config(tmp_path: Path) -> Path:
    """The shipped config after a user moved every port (the case that ended with 0 deliveries)."""
    folder = tmp_path / "user-config"
    shutil.copytree(REPO / "config", folder, ignore=shutil.ignore_patterns("secrets"))
    for path in folder.rglob("*.yaml"):
        text = path.read_text()
        for old, new in (("5020", "5021"), ("4840", "4841"), ("8090", "9090"), ("8787", "8788")):
            text = text.replace(old, new)
        path.write_text(text)
    return folder


def test_every_address_points_at_the_demo_ports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "demo"
    root.mkdir()
    env = prepare(edited_config(tmp_path), root, PORTS, SECRET, TOKEN)
    assert env == {"DEMO_WEBHOOK_SECRET": SECRET}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config, problems = collect_config(root / "config" / "agent.yaml")
    assert config is not None, [str(p) for p in problems.items]
    assert (config.agent.api.host, config.agent.api.port) == ("127.0.0.1", PORTS["api"])
    assert config.agent.state_dir == root / "state"
    machines = {p.stem: yaml.safe_load(p.read_text()) for p in (root / "config" / "machines").glob("*.yaml")}
    assert machines["mill-01"]["modbus"]["port"] == PORTS["modbus"]
    assert machines["lathe-02"]["opcua"]["url"] == f"opc.tcp://127.0.0.1:{PORTS['opcua']}"
    assert all(m["downtime"]["micro_stop"] == "15s" for m in machines.values())
    urls = {a.endpoint.url for w in config.workflows for a in w.actions}
    assert urls and all(u.startswith(f"http://127.0.0.1:{PORTS['receiver']}/") for u in urls), urls
