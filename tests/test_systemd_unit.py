"""The systemd unit as systemd itself judges it: ``verify`` clean, ``security`` exposure ≤ 2.0."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "edge-agent.service"
SYSUSERS = ROOT / "systemd" / "edge-agent.sysusers"
EXEC = "/opt/edge-agent/bin/edge-agent"

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)


def unit_values() -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit (keys may repeat, as systemd allows)."""
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def checkable_unit(tmp_path: Path) -> Path:
    """The unit as installed; ExecStart points at a stub when the real install is absent."""
    if Path(EXEC).is_file():
        return UNIT
    stub = tmp_path / "edge-agent"
    stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stub.chmod(0o755)
    unit = tmp_path / "edge-agent.service"
    unit.write_text(UNIT.read_text(encoding="utf-8").replace(EXEC, str(stub)), encoding="utf-8")
    return unit


def test_unit_has_the_service_contract() -> None:
    v = unit_values()
    assert v["Type"] == ["notify"]
    assert v["NotifyAccess"] == ["main"]
    assert v["WatchdogSec"] == ["30"]
    assert v["Restart"] == ["on-failure"]
    assert v["RestartSec"] == ["5"]
    assert "StartLimitIntervalSec" in v and "StartLimitBurst" in v
    assert v["User"] == ["edge-agent"]
    assert v["StateDirectory"] == ["edge-agent"]
    assert v["ConfigurationDirectory"] == ["edge-agent"]
    assert v["ExecStart"] == [f"{EXEC} run --config /etc/edge-agent/agent.yaml"]
    assert v["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert v["KillSignal"] == ["SIGTERM"]
    assert "TimeoutStopSec" in v
    assert v["CapabilityBoundingSet"] == [""] and v["AmbientCapabilities"] == [""]


def test_unit_bounds_memory_tasks_and_descriptors() -> None:
    """A hostile device or client must not take the whole PC: systemd caps what the agent may use,
    and the API's connection cap stays below the descriptor limit."""
    from agent.api.settings import DEFAULT_MAX_CONNECTIONS

    v = unit_values()
    assert v["MemoryMax"] == ["2G"] and v["MemoryHigh"] == ["1536M"]
    assert int(v["TasksMax"][0]) >= 16
    nofile = int(v["LimitNOFILE"][0])
    assert nofile > 1024 and nofile > DEFAULT_MAX_CONNECTIONS * 4
    assert v["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert "@system-service" in v["SystemCallFilter"]
    assert "IPAddressDeny" not in v  # plant hosts must stay reachable
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(UNIT, encoding="utf-8")
    assert parser.sections() == ["Unit", "Service", "Install"]
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_sysusers_file_creates_the_service_user() -> None:
    lines = [ln.split() for ln in SYSUSERS.read_text(encoding="utf-8").splitlines() if ln and ln[0] != "#"]
    assert len(lines) == 1
    assert lines[0][:2] == ["u", "edge-agent"]
    assert lines[0][-1] == "/usr/sbin/nologin"


@needs_analyze
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(checkable_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""
    assert proc.stdout.strip() == ""


@needs_analyze
def test_security_exposure_is_at_most_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(checkable_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    m = re.search(
        r"Overall exposure level for edge-agent\.service: (\d+(?:\.\d+)?)", proc.stdout + proc.stderr
    )
    assert m, proc.stdout + proc.stderr
    assert float(m.group(1)) <= 2.0, proc.stdout
