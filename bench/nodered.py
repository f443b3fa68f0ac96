"""Node-RED with node-red-contrib-modbus, the peer column of bench/daemon.py.

The issue's comparison (issue 13): Node-RED 4.1.8 with node-red-contrib-modbus polling the same
simulated machines, one ``modbus-read`` node (20 holding registers, every second) and one
``modbus-client`` per machine, and nothing else in the flow. It is installed from the npm registry on
first use into a cache outside the repository (``~/.cache/edge-agent-bench``, or
``$EDGE_AGENT_BENCH_CACHE``); nothing of it is committed.

node-red-contrib-modbus 5.60.2 names its Modbus library (a fork of ``modbus-serial`` 8.4.0) by a tarball
URL outside the npm registry; an npm ``overrides`` entry installs the registry's ``modbus-serial``
8.0.25 in its place (same API; the fork's changes are serial-line ones). Node-RED's editor, admin API,
telemetry and update check are switched off: the process talks to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

NODE_RED = "4.1.8"
CONTRIB_MODBUS = "5.60.2"
MODBUS_SERIAL = "8.0.25"
REGISTERS = 20
HOST = "127.0.0.1"


def cache_dir() -> Path:
    base = os.environ.get("EDGE_AGENT_BENCH_CACHE") or Path.home() / ".cache" / "edge-agent-bench"
    return Path(base) / f"node-red-{NODE_RED}-modbus-{CONTRIB_MODBUS}"


def install() -> Path:
    """The Node-RED user dir with both packages installed (npm, once); raises with npm's own words."""
    home = cache_dir()
    if (home / "node_modules" / "node-red" / "red.js").exists() and (
        home / "node_modules" / "node-red-contrib-modbus" / "package.json"
    ).exists():
        return home
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is missing: apt-get install -y nodejs npm")
    home.mkdir(parents=True, exist_ok=True)
    package = {
        "name": "edge-agent-bench-node-red",
        "private": True,
        "overrides": {"@openp4nr/modbus-serial": f"npm:modbus-serial@{MODBUS_SERIAL}"},
    }
    (home / "package.json").write_text(json.dumps(package, indent=1) + "\n")
    print(f"installing node-red@{NODE_RED} node-red-contrib-modbus@{CONTRIB_MODBUS} into {home}", flush=True)
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error",
         f"node-red@{NODE_RED}", f"node-red-contrib-modbus@{CONTRIB_MODBUS}"],
        cwd=home, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"npm install failed in {home}:\n{done.stderr[-2000:]}")
    return home


def flows(ports: list[int]) -> list[dict[str, object]]:
    """One client and one read node per machine: how a Node-RED user polls N machines."""
    out: list[dict[str, object]] = [{"id": "tab", "type": "tab", "label": "bench"}]
    for i, port in enumerate(ports):
        out.append(
            {
                "id": f"client{i}", "type": "modbus-client", "name": f"m{i}", "clienttype": "tcp",
                "bufferCommands": True, "stateLogEnabled": False, "queueLogEnabled": False,
                "failureLogEnabled": False, "tcpHost": HOST, "tcpPort": port, "tcpType": "DEFAULT",
                "serialPort": "/dev/null", "serialType": "RTU-BUFFERD", "serialBaudrate": 9600,
                "serialDatabits": 8, "serialStopbits": 1, "serialParity": "none",
                "serialConnectionDelay": 100, "serialAsciiResponseStartDelimiter": "0x3A",
                "unit_id": 1, "commandDelay": 1, "clientTimeout": 2000, "reconnectOnTimeout": True,
                "reconnectTimeout": 2000, "parallelUnitIdsAllowed": True, "showErrors": False,
                "showWarnings": False, "showLogs": False,
            }
        )  # fmt: skip
        out.append(
            {
                "id": f"read{i}", "type": "modbus-read", "z": "tab", "name": "", "topic": "",
                "showStatusActivities": False, "logIOActivities": False, "showErrors": False,
                "showWarnings": False, "unitid": "", "dataType": "HoldingRegister", "adr": "0",
                "quantity": str(REGISTERS), "rate": "1", "rateUnit": "s", "delayOnStart": False,
                "enableDeformedMessages": False, "startDelayTime": "", "server": f"client{i}",
                "useIOFile": False, "ioFile": "", "useIOForPayload": False, "emptyMsgOnFail": False,
                "x": 100, "y": 40 + 40 * i, "wires": [[], []],
            }
        )  # fmt: skip
    return out


def command(ports: list[int], work: Path) -> list[str]:
    """Write the flow and the settings under ``work`` and return the command line that runs them."""
    home = install()
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is missing: apt-get install -y nodejs")
    flow_file = work / "flows.json"
    flow_file.write_text(json.dumps(flows(ports)))
    settings = work / "settings.js"
    settings.write_text(
        "module.exports = {\n"
        f"  uiHost: {json.dumps(HOST)}, uiPort: 0, httpAdminRoot: false, httpNodeRoot: false,\n"
        f"  userDir: {json.dumps(str(home))}, flowFile: {json.dumps(str(flow_file))},\n"
        "  credentialSecret: false, diagnostics: {enabled: false}, runtimeState: {enabled: false},\n"
        "  telemetry: {enabled: false, updateNotification: false}, externalModules: {},\n"
        "  logging: {console: {level: 'warn', metrics: false, audit: false}},\n"
        "};\n"
    )
    return [node, str(home / "node_modules" / "node-red" / "red.js"), "--settings", str(settings)]
