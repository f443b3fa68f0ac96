"""The README's quick start, run verbatim and in order, as a new plant engineer would type it.

Every ``sh`` block of the "Quick start" section is taken from README.md as it is: commands that keep
running (``simulate``, ``receive``, ``run``: the README gives each its own terminal) start in the
background, and the next block waits until their port answers; every other command must exit 0.
It runs in private network and mount namespaces (``unshare --net --mount``), so the README's fixed ports
(4840, 5020, 8090, 8787) and its ``/tmp/edge-agent-state`` are this run's alone whatever else runs on
this machine, and in a copy of ``config/`` so the secrets it generates never land in the repository.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PORTS = {"modbus": 5020, "opcua": 4840, "receiver": 8090, "api": 8787}
# README "Other ports": one variable per port moves the shipped config/ and simulate/receive together.
MOVED_PORTS = {"modbus": 15020, "opcua": 14840, "receiver": 18090, "api": 18787}
WITHIN = 120
STATE_DIR = "/tmp/edge-agent-state"  # as the README's step 5 names it


def quick_start_blocks() -> list[list[str]]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start against the simulators", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    # A trailing backslash continues a command on the next line, as in a shell.
    return [[c for c in block.replace("\\\n", " ").splitlines() if c.strip()] for block in blocks]


def background(ports: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """The commands that keep running, and the ports that answer once each is up."""
    return {
        "simulate": (ports["modbus"], ports["opcua"]),
        "receive": (ports["receiver"],),
        "run": (ports["api"],),
    }


def driver_script(blocks: list[list[str]], logs: Path, ports: dict[str, int] = DEFAULT_PORTS) -> str:
    """One bash session (so step 2's exports reach step 5, as in its terminal)."""
    waits = background(ports)
    wait = (
        f"{shlex.quote(sys.executable)} -c 'import socket, sys, time\n"
        f"end = time.monotonic() + {WITHIN}\n"
        "while time.monotonic() < end:\n"
        '    try: socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close(); sys.exit(0)\n'
        "    except OSError: time.sleep(0.3)\n"
        'sys.exit("port %s never answered" % sys.argv[1])\''
    )
    lines = [
        "set -euo pipefail",
        # The terminals are closed at the end: every background command is stopped with SIGTERM.
        "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT",
        "ip link set lo up",
        # The README's --state-dir is a fixed path in /tmp: give this run its own, empty one.
        f"mkdir -p {STATE_DIR} && mount -t tmpfs -o mode=0700 edge-agent-quick-start {STATE_DIR}",
        f'wait_port() {{ {wait} "$1"; }}',
    ]
    for n, block in enumerate(blocks):
        for command in block:
            words = shlex.split(command)
            if words[:1] == ["edge-agent"] and len(words) > 1 and words[1] in waits:
                lines.append(f"{command} > {logs}/{n}-{words[1]}.log 2>&1 &")
                lines += [f"wait_port {port}" for port in waits[words[1]]]
            else:
                lines.append(f"echo '$ '{shlex.quote(command)}")
                lines.append(command)
    # The manual trigger above is delivered to the receiver: wait for its verified line.
    lines.append(
        f"for i in $(seq {WITHIN}); do grep -q 'manual_trigger' {logs}/*-receive.log && break; sleep 1; done"
    )
    return "\n".join(lines) + "\n"


def test_readme_has_the_steps_this_test_runs() -> None:
    commands = [c for block in quick_start_blocks() for c in block]
    started = [shlex.split(c)[1] for c in commands if c.startswith("edge-agent ")]
    for step in ("simulate", "secret", "check-config", "read", "receive", "run", "status", "trigger"):
        assert step in started, (step, commands)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0, reason="needs root for unshare --net"
)
@pytest.mark.parametrize("ports", [DEFAULT_PORTS, MOVED_PORTS], ids=["default-ports", "moved-ports"])
def test_every_quick_start_command_works_verbatim(tmp_path: Path, ports: dict[str, int]) -> None:
    """With the moved ports only the four EDGE_AGENT_*_PORT variables differ: nothing listens on the
    default ports in this namespace, so a part that ignored them would find no peer."""
    shutil.copytree(REPO / "config", tmp_path / "config", ignore=shutil.ignore_patterns("secrets"))
    logs = tmp_path / "logs"
    logs.mkdir()
    script = tmp_path / "quick-start.sh"
    script.write_text(driver_script(quick_start_blocks(), logs, ports))
    # PYTHONUNBUFFERED: output reaches the log files as it would reach a terminal, line by line.
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONUNBUFFERED": "1",
    }
    for name in list(env):
        if name.endswith("_WEBHOOK_SECRET") or name.startswith("EDGE_AGENT_") or name == "STATE_DIRECTORY":
            del env[name]
    if ports != DEFAULT_PORTS:
        env.update({f"EDGE_AGENT_{k.upper()}_PORT": str(v) for k, v in ports.items()})
    # The whole namespace (and every background command in it) ends with the session.
    proc = subprocess.run(
        ["unshare", "--net", "--mount", "bash", str(script)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=WITHIN * 4,
    )  # fmt: skip
    background = {p.name: p.read_text(errors="replace")[-3000:] for p in logs.iterdir()}
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-4000:], background)
    assert "config/agent.yaml: ok" in proc.stdout
    assert "triggered 'Quality inspection' for mill-01" in proc.stdout
    received = next(text for name, text in background.items() if name.endswith("-receive.log"))
    assert "VALID" in received and "INVALID" not in received, received
    assert '"event": "manual_trigger"' in received, received
