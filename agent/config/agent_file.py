"""``agent.yaml`` and everything it points at: the whole configuration, loaded and checked at once."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config.machines import MachineConfig, load_machines
from agent.config.source import (
    ConfigError,
    Problems,
    Section,
    as_str,
    load_yaml,
    one_of,
)
from agent.event_loop import DEFAULT_LOOP, LOOPS, unavailable

if TYPE_CHECKING:
    from agent.api.settings import ApiConfig
    from agent.delivery.settings import DeliveryConfig, OutboxConfig
    from agent.derive.spec import Categories
    from agent.mqtt.settings import MqttConfig, PublishConfig
    from agent.workflows.spec import Workflow

DEFAULT_STATE_DIR = Path("/var/lib/edge-agent")


@dataclass(frozen=True)
class AgentConfig:
    file: Path
    name: str
    state_dir: Path
    machines_dir: Path
    workflows_dir: Path | None
    log_level: str
    log_format: str
    api: ApiConfig
    outbox: OutboxConfig
    delivery: DeliveryConfig
    categories: Categories
    mqtt: MqttConfig | None = None  # the broker connection (``mqtt:``), shared by every MQTT destination
    publish: PublishConfig | None = None  # the Unified Namespace (``publish:``)
    event_loop: str = DEFAULT_LOOP  # ``asyncio`` or ``uvloop`` (agent/event_loop.py)


@dataclass(frozen=True)
class Config:
    agent: AgentConfig
    machines: tuple[MachineConfig, ...] = ()
    workflows: tuple[Workflow, ...] = field(default_factory=tuple)

    def machine(self, machine_id: str) -> MachineConfig | None:
        return next((m for m in self.machines if m.id == machine_id), None)


def _path(section: Section, key: str, default: Path | None, base: Path) -> Path | None:
    raw = section.opt(key, as_str)
    if raw is None:
        return default
    p = Path(raw).expanduser()
    return p if p.is_absolute() else (base / p)


def _read_agent(
    path: Path, problems: Problems, state_dir_override: Path | None
) -> tuple[AgentConfig | None, Any]:
    before = len(problems.items)
    data = load_yaml(path, problems, str(path))
    if data is None:
        if len(problems.items) == before:
            problems.add(
                str(path),
                None,
                "",
                "the file is empty; it needs at least an agent: section (see config/agent.yaml)",
            )
        return None, None
    base = path.parent
    top = Section(data, file=str(path), path="", problems=problems, base_dir=base)
    if not top.ok:
        return None, None
    agent = top.sub("agent")
    name = agent.get("name", as_str, "edge-agent")
    env_state = os.environ.get("STATE_DIRECTORY")  # set by systemd's StateDirectory=
    state_default = Path(env_state.split(":")[0]) if env_state else DEFAULT_STATE_DIR
    state_dir = _path(agent, "state_dir", state_default, base) or state_default
    if state_dir_override is not None:
        state_dir = state_dir_override
    elif agent.has("state_dir"):
        blocked = state_dir_blocker(state_dir)
        if blocked:
            agent.error("state_dir", blocked)
    machines_dir = _path(agent, "machines_dir", base / "machines", base) or base / "machines"
    workflows_dir = _path(agent, "workflows_dir", base / "workflows", base)
    event_loop = agent.get("event_loop", one_of(*LOOPS), DEFAULT_LOOP)
    missing = unavailable(event_loop)
    if missing:
        agent.error("event_loop", missing)
    agent.done()

    log = top.sub("log")
    level = log.get("level", one_of("debug", "info", "warning", "error"), "info")
    fmt = log.get("format", one_of("json", "console"), "json")
    log.done()

    from agent.api.settings import parse_api
    from agent.delivery.settings import parse_delivery, parse_outbox
    from agent.derive.spec import parse_categories

    api = parse_api(top.sub("api"))
    outbox = parse_outbox(top.sub("outbox"))
    delivery = parse_delivery(top.sub("delivery"))
    categories = parse_categories(top)
    from agent.mqtt.settings import parse_mqtt, parse_publish

    mqtt = parse_mqtt(top.sub("mqtt"), name)
    publish = parse_publish(top.sub("publish"))
    if publish is not None and mqtt is None and "mqtt" not in top.data:
        top.error("publish", "publish: needs the broker connection: add an mqtt: section (host, port, ...)")
    workflows_raw = top.raw("workflows")
    top.done()
    cfg = AgentConfig(
        file=path,
        name=name,
        state_dir=state_dir,
        machines_dir=machines_dir,
        workflows_dir=workflows_dir,
        log_level=level,
        log_format=fmt,
        api=api,
        outbox=outbox,
        delivery=delivery,
        categories=categories,
        mqtt=mqtt,
        publish=publish,
        event_loop=event_loop,
    )
    return cfg, (top, workflows_raw)


def state_dir_blocker(state_dir: Path) -> str | None:
    """Why no process could ever use ``state_dir`` (a file is in the way), or ``None``."""
    for p in (state_dir, *state_dir.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == state_dir else f"cannot be created: {p} is a file"
                return f"state directory {state_dir} {what}, not a directory"
            return None
    return None


def state_dir_writable_problem(state_dir: Path) -> str | None:
    """Why *this* user could not create or write ``state_dir`` (``run`` and ``check-config``)."""
    blocked = state_dir_blocker(state_dir)
    if blocked:
        return blocked
    existing = next(p for p in (state_dir, *state_dir.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        if existing == state_dir:
            return f"state directory {state_dir} is not writable by this user (uid {os.getuid()})"
        return f"state directory {state_dir} cannot be created: {existing} is not writable by this user"
    return None


def load_agent_config(path: Path, state_dir: Path | None = None) -> AgentConfig:
    """Only ``agent.yaml`` (what the CLI needs to find the state directory and the API)."""
    problems = Problems()
    cfg, _ = _read_agent(path, problems, state_dir)
    problems.raise_if_any()
    assert cfg is not None
    return cfg


def collect_config(
    path: Path, state_dir: Path | None = None, *, with_workflows: bool = True
) -> tuple[Config | None, Problems]:
    """Load everything; all problems of all files are returned together.

    ``with_workflows=False`` is for commands that only talk to machines (``read``): they must work
    before the webhook secrets are in place.
    """
    problems = Problems()
    agent, extra = _read_agent(path, problems, state_dir)
    if agent is None:
        return None, problems
    root = path.parent
    top, inline = extra
    machine_ids: set[str] | None = None
    groups: set[str] | None = None
    if agent.machines_dir.is_dir():
        before = len(problems.items)
        machines = load_machines(
            agent.machines_dir,
            problems,
            display_root=None,  # paths print as given: relative when agent.yaml's path is
            categories=agent.categories,
            base_dir=root,
        )
        # One mistake, one error: a machine file that failed may be the one defining the id or
        # group a workflow scopes to, so scopes are checked only when every machine file loaded.
        if len(problems.items) == before:
            machine_ids = {m.id for m in machines}
            groups = {m.group for m in machines if m.group}
    else:
        # Named at the agent.yaml key that chose the folder. Workflow scopes are then not checked
        # against machines: every one of them would be reported as unknown, burying the real error.
        machines = []
        _missing_dir(top, "machines_dir", agent.machines_dir, problems)
    agent_data = top.data.get("agent")
    named = isinstance(agent_data, dict) and "workflows_dir" in agent_data
    # Only a folder the user named: without the key, workflows may all be inline.
    if named and agent.workflows_dir is not None and not agent.workflows_dir.is_dir():
        _missing_dir(top, "workflows_dir", agent.workflows_dir, problems)

    if not with_workflows:
        return (None, problems) if problems else (Config(agent=agent, machines=tuple(machines)), problems)

    from agent.workflows.spec import load_workflows

    workflows = load_workflows(
        agent.workflows_dir,
        inline=top.sections("workflows") if inline is not None else [],
        delivery=agent.delivery,
        problems=problems,
        display_root=None,  # paths print as given: relative when agent.yaml's path is
        machine_ids=machine_ids,
        groups=groups,
        categories=agent.categories,
        base_dir=root,
    )
    workflows = _with_broker(workflows, agent, "mqtt" in top.data, problems)
    if problems:
        return None, problems
    return Config(agent=agent, machines=tuple(machines), workflows=tuple(workflows)), problems


def _with_broker(
    workflows: list[Workflow], agent: AgentConfig, section_given: bool, problems: Problems
) -> list[Workflow]:
    """Every mqtt: action publishes through the agent's one broker connection (agent.yaml mqtt:)."""
    import dataclasses

    from agent.mqtt.settings import MqttEndpoint

    out: list[Workflow] = []
    for wf in workflows:
        actions = []
        for action in wf.actions:
            ep = action.endpoint
            if isinstance(ep, MqttEndpoint):
                if agent.mqtt is None and not section_given:
                    file, line, key = ep.target.where
                    problems.add(
                        file,
                        line,
                        key,
                        "an mqtt: action needs the broker connection: add mqtt: to agent.yaml",
                    )
                action = dataclasses.replace(action, endpoint=dataclasses.replace(ep, broker=agent.mqtt))
            actions.append(action)
        out.append(dataclasses.replace(wf, actions=tuple(actions)))
    return out


def _missing_dir(top: Section, key: str, folder: Path, problems: Problems) -> None:
    agent_data = top.data.get("agent")
    line = getattr(agent_data, "key_lines", {}).get(key, getattr(agent_data, "line", None))
    what = key.removesuffix("_dir")
    problems.add(top.file, line, f"agent.{key}", f"{what} directory not found: {folder}")


def load_config(path: Path, state_dir: Path | None = None) -> Config:
    config, problems = collect_config(path, state_dir)
    if config is None:
        raise ConfigError(problems.items)
    return config
