"""agent.yaml's mqtt: and publish:, the workflow mqtt: action, and topic rules (MQTT 3.1.1/5 §4.7)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agent.config.agent_file import Config, collect_config
from agent.config.source import Problems
from agent.mqtt.settings import MqttEndpoint
from agent.mqtt.topics import check_template, check_topic, render

MACHINE = """\
id: mill-01
name: Mill 01
group: Milling
modbus: {host: 127.0.0.1, port: 5020, unit: 1}
tags:
  execution: {table: holding, address: 0, type: uint16}
status:
  rules:
    - {when: {execution: 1}, state: ACTIVE}
  otherwise: IDLE
"""


def write(tmp_path: Path, agent: str, workflow: str | None = None) -> Path:
    (tmp_path / "machines").mkdir()
    (tmp_path / "machines" / "mill-01.yaml").write_text(MACHINE)
    (tmp_path / "workflows").mkdir()
    if workflow is not None:
        (tmp_path / "workflows" / "wf.yaml").write_text(textwrap.dedent(workflow))
    path = tmp_path / "agent.yaml"
    path.write_text("agent: {name: cell-7, state_dir: state}\n" + textwrap.dedent(agent))
    return path


def load(path: Path) -> tuple[Config | None, Problems]:
    return collect_config(path)


def messages(problems: Problems) -> list[str]:
    return [str(p) for p in problems.items]


def test_a_full_mqtt_section_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQTT_PW", "pw-from-env")
    cfg, problems = load(
        write(
            tmp_path,
            """\
            mqtt:
              host: broker.plant.local
              protocol: "3.1.1"
              username: cell7
              password_env: MQTT_PW
              clean_session: false
              keepalive: 20s
              reconnect: {min: 500ms, max: 2m}
            publish:
              enterprise: acme
              site: plant1
              area: machining
            """,
        )
    )
    assert not problems, messages(problems)
    assert cfg is not None and cfg.agent.mqtt is not None and cfg.agent.publish is not None
    m = cfg.agent.mqtt
    assert (m.host, m.port, m.protocol, m.client_id) == (
        "broker.plant.local",
        1883,
        "3.1.1",
        "edge-agent-cell-7",
    )
    assert m.password is not None and m.password.reveal() == "pw-from-env"
    assert "pw-from-env" not in repr(m)
    assert (m.clean_session, m.keepalive, m.reconnect_min, m.reconnect_max) == (False, 20.0, 0.5, 120.0)
    assert cfg.agent.publish.topic == "{enterprise}/{site}/{area}/{line}/{machine}"


def test_tls_defaults_to_port_8883_and_missing_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not checked here")
    cfg, problems = load(write(tmp_path, "mqtt:\n  host: b\n  tls: {ca_file: ca.pem}\n"))
    assert cfg is not None and cfg.agent.mqtt is not None and cfg.agent.mqtt.port == 8883
    (tmp_path / "agent.yaml").unlink()
    for d in ("machines", "workflows"):
        for f in (tmp_path / d).iterdir():
            f.unlink()
        (tmp_path / d).rmdir()
    _, problems = load(write(tmp_path, "mqtt:\n  host: b\n  tls: {ca_file: certs/nope.pem}\n"))
    [msg] = messages(problems)
    assert "agent.yaml:4" in msg and "mqtt.tls.ca_file" in msg and "nope.pem does not exist" in msg


@pytest.mark.parametrize(
    ("snippet", "where", "says"),
    [
        ("mqtt: {host: b, protocol: 4}", "mqtt.protocol", "expected one of"),
        ("mqtt: {host: b, qos: 1}", "mqtt.qos", "unknown key"),
        ("mqtt: {port: 1883}", "mqtt.host", "required"),
        ("mqtt: {host: b, status_topic: 'edge/+/status'}", "mqtt.status_topic", "wildcards"),
        ("mqtt: {host: b, password: x}", "mqtt.password", "needs a username"),
        ("mqtt: {host: b, reconnect: {min: 10s, max: 1s}}", "mqtt.reconnect.max", "must not be below"),
        ("publish: {enterprise: a, site: b}", "publish", "add an mqtt: section"),
        ("mqtt: {host: b}\npublish: {enterprise: a}", "publish.site", "required"),
        (
            "mqtt: {host: b}\npublish: {enterprise: a, site: b, topic: '{site}//{machine}'}",
            "publish.topic",
            "empty level",
        ),
        (
            "mqtt: {host: b}\npublish: {enterprise: a, site: b, topic: '{plant}/{machine}'}",
            "publish.topic",
            "unknown placeholder",
        ),
        (
            "mqtt: {host: b}\npublish: {enterprise: a, site: b, qos: 2}",
            "publish.qos",
            "QoS 2 is not supported",
        ),
    ],
)
def test_bad_agent_sections_name_file_line_and_key(
    tmp_path: Path, snippet: str, where: str, says: str
) -> None:
    _, problems = load(write(tmp_path, snippet + "\n"))
    found = messages(problems)
    assert any("agent.yaml:" in m and where in m and says in m for m in found), found


WORKFLOW = """\
name: Status to UNS
trigger: {type: machine_status_changed}
actions:
  - mqtt:
      topic: "acme/{machine}/workflow/{event}"
      qos: 1
      retain: true
"""


def test_a_workflow_mqtt_action_becomes_an_outbox_endpoint(tmp_path: Path) -> None:
    cfg, problems = load(write(tmp_path, "mqtt: {host: 127.0.0.1}\n", WORKFLOW))
    assert not problems, messages(problems)
    assert cfg is not None
    [ep] = cfg.workflows[0].endpoints
    assert ep.key == "Status to UNS#0" and ep.url == "mqtt:acme/{machine}/workflow/{event}"
    assert isinstance(ep, MqttEndpoint) and ep.kind == "mqtt"
    assert (ep.target.qos, ep.target.retain) == (1, True)
    # Every mqtt: action publishes through the agent's one broker connection.
    assert ep.broker is cfg.agent.mqtt and ep.fifo and ep.fifo_window == 64


def test_an_mqtt_action_without_a_broker_connection_is_an_error_at_the_action(tmp_path: Path) -> None:
    _, problems = load(write(tmp_path, "", WORKFLOW))
    [msg] = messages(problems)
    assert "wf.yaml:5" in msg and "actions[0].mqtt" in msg and "add mqtt: to agent.yaml" in msg


@pytest.mark.parametrize(
    ("topic", "says"),
    [
        ("acme/#", "wildcards"),
        ("acme/+/x", "wildcards"),
        ("acme//{machine}", "empty level"),
        ("/acme/{machine}", "empty level"),
        ("{machine}/", "empty level"),
        ("$SYS/{machine}", "reserved"),
        ("acme/{serial}", "unknown placeholder"),
    ],
)
def test_bad_action_topics_are_rejected_with_the_line(tmp_path: Path, topic: str, says: str) -> None:
    wf = WORKFLOW.replace('"acme/{machine}/workflow/{event}"', repr(topic))
    _, problems = load(write(tmp_path, "mqtt: {host: 127.0.0.1}\n", wf))
    found = messages(problems)
    assert any("wf.yaml:5" in m and "actions[0].mqtt.topic" in m and says in m for m in found), found


def test_an_action_is_webhook_or_mqtt_not_both(tmp_path: Path) -> None:
    wf = WORKFLOW.replace("  - mqtt:", "  - webhook: {url: 'http://127.0.0.1:1/x', secret: x}\n    mqtt:")
    _, problems = load(write(tmp_path, "mqtt: {host: 127.0.0.1}\n", wf))
    assert any("either webhook: or mqtt:" in m for m in messages(problems)), messages(problems)


def test_topic_rules() -> None:
    assert check_topic("acme/plant1/mill-01/status") == "acme/plant1/mill-01/status"
    with pytest.raises(ValueError, match="empty"):
        check_topic("")
    with pytest.raises(ValueError, match="NUL"):
        check_topic("a/\x00")
    with pytest.raises(ValueError, match="65535"):
        check_topic("a" * 65536)
    assert check_template("{enterprise}/{machine}", frozenset({"enterprise", "machine"}))


def test_rendered_values_cannot_add_levels_or_wildcards() -> None:
    # A machine id or group with '/', '+' or '#' must not change the topic's shape.
    t = "{site}/{area}/{machine}"
    assert (
        render(t, {"site": "p1", "area": "Milling/Turning", "machine": "m+1#"}) == "p1/Milling_Turning/m_1_"
    )
    assert render(t, {"site": "p1", "area": None, "machine": "m1"}) == "p1/_/m1"
