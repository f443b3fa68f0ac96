"""What every CLI command shares: finding the config file and reporting config errors."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from agent.config.agent_file import AgentConfig, Config, collect_config, load_agent_config
from agent.config.source import ConfigError

SYSTEM_CONFIG = Path("/etc/edge-agent/agent.yaml")
LOCAL_CONFIG = Path("config/agent.yaml")
EXIT_CONFIG = 2


def default_config_path() -> Path:
    env = os.environ.get("EDGE_AGENT_CONFIG")
    if env:
        return Path(env)
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else LOCAL_CONFIG


def add_config_arg(parser: argparse.ArgumentParser, *, state_dir: bool = True) -> None:
    """``-c/--config``, and ``--state-dir`` for commands that use the state directory themselves."""
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help=f"agent.yaml (default: $EDGE_AGENT_CONFIG, {SYSTEM_CONFIG} if present, else {LOCAL_CONFIG})",
    )
    if state_dir:
        parser.add_argument("--state-dir", type=Path, default=None, help="override agent.state_dir")


def config_path(args: argparse.Namespace) -> Path:
    return args.config if getattr(args, "config", None) else default_config_path()


class ConfigExit(SystemExit):
    """Raised after the config problems were printed; exits with status 2."""


def _report(problems: list[str]) -> None:
    for line in problems:
        print(line, file=sys.stderr)
    print(f"{len(problems)} problem(s) found", file=sys.stderr)


def load_agent_config_or_exit(args: argparse.Namespace) -> AgentConfig:
    try:
        return load_agent_config(config_path(args), getattr(args, "state_dir", None))
    except ConfigError as exc:
        _report([str(p) for p in exc.problems])
        raise ConfigExit(EXIT_CONFIG) from None


def load_config_or_exit(args: argparse.Namespace, *, with_workflows: bool = True) -> Config:
    config, problems = collect_config(
        config_path(args), getattr(args, "state_dir", None), with_workflows=with_workflows
    )
    if config is None:
        _report([str(p) for p in problems.items])
        raise ConfigExit(EXIT_CONFIG)
    return config


def table(rows: list[list[str]], right: frozenset[int] = frozenset()) -> list[str]:
    """Rows as lines whose columns line up however long a name is (columns in ``right`` align right)."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
