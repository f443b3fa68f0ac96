"""``edge-agent mqtt tail``: a real subprocess against a real Mosquitto."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.commands.mqtt_cmd import check_filter
from agent.config.source import Secret
from agent.mqtt.link import MqttLink
from agent.mqtt.settings import MqttConfig
from tests.daemon.conftest import run_cli
from tests.mqtt.broker import Broker, free_port


def agent_yaml(tmp_path: Path, port: int, extra: str = "") -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "agent: {name: cell-7, state_dir: state}\n"
        f"mqtt: {{host: 127.0.0.1, port: {port}{extra}}}\n"
        "publish: {enterprise: acme, site: plant1}\n"
    )
    return path


async def test_tail_prints_topic_retained_flag_message_id_and_payload(tmp_path: Path) -> None:
    broker = await Broker(tmp_path / "b", users={"edge": "pw-tail-1"}).start()
    try:
        link = MqttLink(
            MqttConfig(host="127.0.0.1", port=broker.port, username="edge", password=Secret("pw-tail-1", "t"))
        )
        await link.start()
        assert await link.wait_connected(10)
        await link.publish(
            "acme/plant1/Milling/cell-7/mill-01/status", b'{"state":"ACTIVE"}', 1, True, "msg_A"
        )
        await link.stop()
        (tmp_path / "pw").write_text("pw-tail-1\n")
        path = agent_yaml(tmp_path, broker.port, ", username: edge, password_file: pw")
        # The default filter is the namespace: acme/plant1/#.
        code, out, err = await run_cli("mqtt", "tail", "--count", "1", "--timeout", "20", "-c", str(path))
        assert code == 0, err
        assert "acme/plant1/Milling/cell-7/mill-01/status retained id=msg_A" in out
        assert out.rstrip().endswith('{"state":"ACTIVE"}')
        code, out, _ = await run_cli("mqtt", "tail", "acme/#", "--count", "1", "--json", "-c", str(path))
        assert (code, out) == (0, '{"state":"ACTIVE"}\n')
    finally:
        await broker.stop()


async def test_tail_reports_an_unreachable_broker_and_a_bad_filter(tmp_path: Path) -> None:
    port = free_port()
    path = agent_yaml(tmp_path, port, ", username: edge, password: pw-never-shown")
    code, out, err = await run_cli("mqtt", "tail", "acme/#", "-c", str(path))
    assert code == 1 and f"broker 127.0.0.1:{port}" in err
    assert "pw-never-shown" not in err + out
    code, _, err = await run_cli("mqtt", "tail", "acme/#/x", "-c", str(path))
    assert code == 2 and "'#' must be the whole last level" in err


@pytest.mark.parametrize("bad", ["", "a/#/b", "a/b#", "a/+b/c"])
def test_subscription_filters_follow_the_spec(bad: str) -> None:
    with pytest.raises(ValueError):
        check_filter(bad)
    assert check_filter("acme/+/+/cell-7/#") == "acme/+/+/cell-7/#"


async def test_check_config_shows_the_broker_and_the_namespace(tmp_path: Path) -> None:
    path = agent_yaml(tmp_path, 1883)
    (tmp_path / "machines").mkdir()
    code, out, err = await run_cli("check-config", "-c", str(path))
    assert code == 0, out + err
    assert "mqtt       127.0.0.1:1883  MQTT 5  client id edge-agent-cell-7" in out
    assert (
        "namespace  {enterprise}/{site}/{area}/{line}/{machine}/{status,alarms,downtime,parts,events}" in out
    )
