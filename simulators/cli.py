"""``python -m simulators`` (also ``edge-agent simulate``): simulated CNC machines on 127.0.0.1.

The simulators are their own program: this module owns their command line, and the agent's CLI
only mounts it as a subcommand. It uses the agent's shared libraries (config reader, log setup),
never the agent's shell.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Sequence

from agent.config.interpolate import port_number, port_variable
from agent.config.source import ConfigError
from agent.logs import LEVELS, configure
from simulators.fleet import MAX_MODBUS_UNITS, Fleet, FleetConfig
from simulators.scenario import builtin_scenarios, load_scenario

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--machines", type=int, default=1, help="how many machines, sim-01.. (default 1)")
    parser.add_argument("--protocol", choices=("modbus", "opcua", "both"), default="both")
    parser.add_argument(
        "--modbus-port",
        type=port_number,
        default=None,
        help="Modbus TCP port, 0 = any free one (default $EDGE_AGENT_MODBUS_PORT, else 5020)",
    )
    parser.add_argument(
        "--opcua-port",
        type=port_number,
        default=None,
        help="OPC-UA port, 0 = any free one (default $EDGE_AGENT_OPCUA_PORT, else 4840)",
    )
    parser.add_argument(
        "--scenario",
        default="demo",
        help=f"built-in scenario ({', '.join(builtin_scenarios())}) or a YAML file (default demo)",
    )
    parser.add_argument("--speed", type=float, default=1.0, help="time scale: 60 plays an hour in a minute")
    parser.add_argument("--seed", type=int, default=0, help="seed for cycle-time jitter and spindle noise")
    parser.add_argument(
        "--offset-seconds",
        type=float,
        default=0.0,
        metavar="S",
        help="start machine i (0-based) i*S seconds into the scenario, so machines differ (default 0)",
    )
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = run)")
    parser.add_argument(
        "--limit-alarm",
        action="append",
        default=[],
        metavar="NAME",
        help="OPC UA: this machine (e.g. sim-02) raises its alarms as one standard ExclusiveLimitAlarmType "
        "condition on a temperature instead of OPC 40502 CncAlarmType conditions (repeatable)",
    )
    parser.add_argument("--log-level", choices=LEVELS, default="info")
    parser.add_argument("--log-format", choices=("console", "json"), default="console")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators", description="Simulated CNC machines.")
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error (or --help)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


def run(args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario(args.scenario)
    except ConfigError as exc:
        print(f"simulate: bad scenario:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        # The shipped config/ names the same variables, so one export moves both sides.
        if args.modbus_port is None:
            args.modbus_port = port_variable("EDGE_AGENT_MODBUS_PORT", os.environ)
        if args.opcua_port is None:
            args.opcua_port = port_variable("EDGE_AGENT_OPCUA_PORT", os.environ)
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for flag, port in (("--modbus-port", args.modbus_port), ("--opcua-port", args.opcua_port)):
        if not 0 <= port <= 65535:
            print(f"simulate: {flag}: {port} is not a port number", file=sys.stderr)
            return EXIT_USAGE
    try:
        config = FleetConfig(
            scenario,
            machines=args.machines,
            protocol=args.protocol,
            modbus_port=args.modbus_port,
            opcua_port=args.opcua_port,
            speed=args.speed,
            seed=args.seed,
            offset_seconds=args.offset_seconds,
            limit_alarms=tuple(args.limit_alarm),
        )
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure(args.log_level, args.log_format, stream=sys.stderr)
    return asyncio.run(serve(config, duration=args.duration))


async def serve(config: FleetConfig, *, duration: float = 0.0) -> int:
    """Run the fleet until SIGINT/SIGTERM (or ``duration``), then stop the servers cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    fleet = Fleet(config)
    try:
        try:
            await fleet.start()
        except (OSError, RuntimeError) as exc:  # pymodbus reports a busy port as RuntimeError
            busy = busy_ports(config)
            if busy:
                print(f"simulate: {'; '.join(busy)}", file=sys.stderr)
            else:
                print(f"simulate: cannot serve: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
            return EXIT_FAIL
        print(describe(fleet), flush=True)
        with contextlib.suppress(TimeoutError):  # --duration ran out
            await asyncio.wait_for(stop.wait(), duration if duration > 0 else None)
        print("simulate: stopping", flush=True)
        return EXIT_OK
    finally:
        await fleet.stop()
        for sig in signals:
            loop.remove_signal_handler(sig)


def busy_ports(config: FleetConfig) -> list[str]:
    """Which requested ports cannot be bound, each named with the option that chose it."""
    wanted: list[tuple[str, int]] = []
    if config.protocol in ("modbus", "both") and config.modbus_port:
        wanted += [("--modbus-port", config.modbus_port + k) for k in range(config.modbus_servers)]
    if config.protocol in ("opcua", "both") and config.opcua_port:
        wanted.append(("--opcua-port", config.opcua_port))
    out = []
    for flag, port in wanted:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((config.host, port))
            except OSError as exc:
                out.append(
                    f"{config.host}:{port} ({flag}) is not free ({exc.strerror}): another simulator may "
                    f"be running; stop it or pick another port ({flag} 0 takes any free one)"
                )
    return out


def describe(fleet: Fleet) -> str:
    """What is served and a machine file that points the agent at the first machine."""
    cfg = fleet.config
    names = cfg.names
    span = names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"
    lines = [
        f"Simulating {cfg.machines} machine(s) {span}: scenario {cfg.scenario.name!r} "
        f"({cfg.scenario.length:g} s, loop={cfg.scenario.loop}), speed {cfg.speed:g}, seed {cfg.seed}"
    ]
    for k, server in enumerate(fleet.modbus_servers):
        hosted = names[k * MAX_MODBUS_UNITS : (k + 1) * MAX_MODBUS_UNITS]
        who = hosted[0] if len(hosted) == 1 else f"{hosted[0]}..{hosted[-1]}"
        lines.append(f"  Modbus TCP  {cfg.host}:{server.port}  unit ids 1..{len(hosted)} ({who})")
    if fleet.opcua is not None:
        lines.append(
            f"  OPC-UA      {fleet.opcua.url}  namespace urn:edge-agent:simulator, "
            f"nodes s=<machine>.Channel1.ActStatus ..."
        )
    lines.append(f"Point the agent at {names[0]} with a machine file, e.g. config/machines/{names[0]}.yaml:")
    lines.append(f"  id: {names[0]}")
    if fleet.modbus is not None:
        lines.append("  profile: modbus-sim")
        lines.append(f"  modbus: {{host: {cfg.host}, port: {fleet.modbus.port}, unit: 1}}")
    else:
        assert fleet.opcua is not None
        lines.append("  profile: opc40502")
        lines.append(f'  opcua: {{url: "{fleet.opcua.url}", prefix: "{names[0]}."}}')
    lines.append("Then: edge-agent read " + names[0] + " --watch.  Ctrl-C stops the simulator.")
    return "\n".join(lines)
