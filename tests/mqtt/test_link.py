"""The broker connection against a real Mosquitto: birth and will, QoS 1, reconnect, TLS, passwords."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config.source import Secret
from agent.mqtt.link import LinkDown, MqttLink, PublishRefused
from agent.mqtt.settings import MqttConfig, TlsConfig
from tests.mqtt.broker import Broker, make_certs
from tests.mqtt.subscriber import subscribe

ROOT = Path(__file__).resolve().parents[2]


def config(port: int, **kw: object) -> MqttConfig:
    base: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "agent": "cell-7",
        "client_id": "edge-agent-cell-7",
        "reconnect_min": 0.1,
        "reconnect_max": 0.5,
        "keepalive": 5,
        "connect_timeout": 1.0,
    }
    base.update(kw)
    return MqttConfig(**base)  # type: ignore[arg-type]


async def test_birth_is_retained_online_and_a_clean_stop_says_offline(broker: Broker) -> None:
    link = MqttLink(config(broker.port))
    await link.start()
    assert await link.wait_connected(10)
    # A consumer that arrives later still learns the agent is online: the birth message is retained.
    async with subscribe(broker.port, "edge-agent/cell-7/status") as sub:
        [birth] = await sub.wait_for(lambda m: m.retain)
        assert birth.json()["state"] == "online"
        assert birth.json()["client_id"] == "edge-agent-cell-7"
        await link.stop()
        await sub.wait_for(lambda m: m.json()["state"] == "offline")
    async with subscribe(broker.port, "edge-agent/cell-7/status") as later:
        [kept] = await later.wait_for(lambda m: m.retain)
        assert kept.json()["state"] == "offline"


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_qos1_publish_returns_after_the_broker_has_it_with_the_message_id(
    broker: Broker, protocol: str
) -> None:
    link = MqttLink(config(broker.port, protocol=protocol))
    await link.start()
    assert await link.wait_connected(10)
    async with subscribe(broker.port, "plant/#") as sub:
        await link.publish("plant/mill-01/events", b'{"message_id":"msg_1"}', 1, False, "msg_1")
        [seen] = await sub.wait_for(lambda m: m.topic == "plant/mill-01/events")
        assert seen.json()["message_id"] == "msg_1"
        # MQTT 3.1.1 has no properties: there the id travels in the payload only.
        assert seen.user_properties == ({"message-id": "msg_1"} if protocol == "5" else {})
    await link.stop()


async def test_broker_down_fails_publishes_at_once_and_the_link_comes_back(broker: Broker) -> None:
    states: list[bool] = []
    went_down = asyncio.Event()

    def on_state(up: bool) -> None:
        states.append(up)
        if not up:
            went_down.set()

    link = MqttLink(config(broker.port), on_state=on_state)
    await link.start()
    assert await link.wait_connected(10)
    await broker.stop()
    await asyncio.wait_for(went_down.wait(), 20)
    with pytest.raises(LinkDown, match=f"127.0.0.1:{broker.port}"):
        await link.publish("plant/x", b"{}", 1, False)
    await broker.start()
    assert await link.wait_connected(20)
    await link.publish("plant/x", b"{}", 1, False)
    assert states == [True, False, True]
    assert link.connects == 2
    await link.stop()


async def test_last_will_is_published_when_the_agent_is_killed(broker: Broker) -> None:
    script = (
        "import asyncio, sys\n"
        "from agent.mqtt.link import MqttLink\n"
        "from agent.mqtt.settings import MqttConfig\n"
        "async def main():\n"
        f"    link = MqttLink(MqttConfig(host='127.0.0.1', port={broker.port}, agent='cell-9', keepalive=2))\n"
        "    await link.start()\n"
        "    await link.wait_connected(10)\n"
        "    print('up', flush=True)\n"
        "    await asyncio.sleep(3600)\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=ROOT, stdout=subprocess.PIPE
    )
    try:
        async with subscribe(broker.port, "edge-agent/cell-9/status") as sub:
            assert proc.stdout is not None
            # The agent's own log lines come first (structlog writes to stdout).
            line = b""
            while line.strip() != b"up":
                line = await proc.stdout.readline()
                assert line, "the agent ended before connecting"
            await sub.wait_for(lambda m: m.json()["state"] == "online")
            os.kill(proc.pid, signal.SIGKILL)
            [will] = await sub.wait_for(lambda m: m.json()["state"] == "offline")
            assert will.json()["agent"] == "cell-9"
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    async with subscribe(broker.port, "edge-agent/cell-9/status") as later:
        [kept] = await later.wait_for(lambda m: m.retain)
        assert kept.json()["state"] == "offline"


async def test_tls_with_a_client_certificate(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    broker = await Broker(tmp_path / "b", certs=certs, require_client_cert=True).start()
    try:
        tls = TlsConfig(ca_file=certs.ca, cert_file=certs.client_cert, key_file=certs.client_key)
        link = MqttLink(config(broker.port, tls=tls))
        await link.start()
        assert await link.wait_connected(10)
        await link.publish("plant/tls", b"{}", 1, False)
        await link.stop()
        # Without the client certificate the broker refuses the handshake.
        bare = MqttLink(config(broker.port, tls=TlsConfig(ca_file=certs.ca)))
        await bare.start()
        assert not await bare.wait_connected(3)
        assert bare.last_error is not None and f"127.0.0.1:{broker.port}" in bare.last_error
        await bare.stop()
    finally:
        await broker.stop()


async def test_tls_refuses_a_broker_signed_by_another_ca(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    other = make_certs(tmp_path / "other")
    broker = await Broker(tmp_path / "b", certs=certs).start()
    try:
        link = MqttLink(config(broker.port, tls=TlsConfig(ca_file=other.ca)))
        await link.start()
        assert not await link.wait_connected(3)
        assert link.last_error is not None and "CERTIFICATE_VERIFY_FAILED" in link.last_error
        await link.stop()
    finally:
        await broker.stop()


async def test_password_auth_and_a_wrong_password_is_named_but_never_shown(tmp_path: Path) -> None:
    broker = await Broker(tmp_path / "b", users={"edge": "s3cret-pw"}).start()
    try:
        good = MqttLink(config(broker.port, username="edge", password=Secret("s3cret-pw", "test")))
        await good.start()
        assert await good.wait_connected(10)
        await good.stop()
        bad = MqttLink(config(broker.port, username="edge", password=Secret("wrong-pw-123", "test")))
        await bad.start()
        assert not await bad.wait_connected(3)
        assert bad.last_error is not None
        assert "wrong-pw-123" not in bad.last_error and "s3cret-pw" not in bad.last_error
        assert "not authorized" in bad.last_error.lower() or "bad user" in bad.last_error.lower()
        await bad.stop()
    finally:
        await broker.stop()


async def test_a_publish_waiting_for_its_puback_fails_at_once_when_the_connection_dies(
    broker: Broker,
) -> None:
    link = MqttLink(config(broker.port))
    await link.start()
    assert await link.wait_connected(10)
    assert broker.proc is not None
    # A frozen broker accepts the bytes but never acknowledges; then it dies.
    broker.proc.send_signal(signal.SIGSTOP)
    waiting = asyncio.create_task(link.publish("plant/x", b"{}", 1, False, "msg_w"))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    broker.proc.kill()
    with pytest.raises(LinkDown, match="connection lost"):
        await asyncio.wait_for(waiting, 5)
    await link.stop()


def test_packed_user_properties_are_byte_identical_to_the_reference_client() -> None:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from agent.mqtt.wire import message_id_property, pack_user_properties

    for mid in ("msg_01M8H6NJRQDHBAPNPM9XEB83CS_f96e90fdf963_0", "ü" * 100, "x" * 70):
        ref = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        ref.UserProperty = [("message-id", mid)]
        assert pack_user_properties([("message-id", mid)]) == ref.pack()  # type: ignore[no-untyped-call]
        assert message_id_property(mid).pack() == ref.pack()  # type: ignore[no-untyped-call]


async def test_a_publish_the_broker_acl_forbids_is_refused_with_mqtt_5(tmp_path: Path) -> None:
    acl = "user edge\ntopic write allowed/#\n"
    broker = await Broker(tmp_path / "b", users={"edge": "pw-acl-1"}, acl=acl).start()
    try:
        for protocol in ("5", "3.1.1"):
            link = MqttLink(
                config(broker.port, protocol=protocol, username="edge", password=Secret("pw-acl-1", "t"))
            )
            await link.start()
            assert await link.wait_connected(10)
            await link.publish("allowed/x", b"{}", 1, False, "msg_ok")
            if protocol == "5":
                with pytest.raises(PublishRefused, match=r"Not authorized \(0x87\)"):
                    await link.publish("denied/x", b"{}", 1, False, "msg_no")
            else:
                # MQTT 3.1.1 has no way to say no: the broker acknowledges and drops the message.
                await link.publish("denied/x", b"{}", 1, False, "msg_no")
            await link.stop()
    finally:
        await broker.stop()


def test_a_puback_is_a_plain_success_only_without_error_code_or_properties() -> None:
    from agent.mqtt.wire import plain_success

    # MQTT 3.1.1 §3.4: packet id only. MQTT 5 §3.4.2: the reason code may be omitted (success, no
    # properties); codes below 0x80 are successes (0x10 No matching subscribers); then a property
    # length, which may be 0.
    assert plain_success(b"\x00\x07")
    assert plain_success(b"\x00\x07\x00")
    assert plain_success(b"\x00\x07\x10")
    assert plain_success(b"\x00\x07\x10\x00")
    # Errors and anything carrying properties take paho's full decoding.
    assert not plain_success(b"\x00\x07\x87")
    assert not plain_success(b"\x00\x07\x80\x00")
    assert not plain_success(b"\x00\x07\x00\x03\x1f\x00\x00")


async def test_publishes_beyond_the_in_flight_window_go_out_as_acks_free_it(broker: Broker) -> None:
    # paho holds back what exceeds max_inflight_messages and sends it when a PUBACK frees a slot.
    link = MqttLink(config(broker.port, in_flight=2))
    await link.start()
    assert await link.wait_connected(10)
    async with subscribe(broker.port, "plant/window/#") as sub:
        await asyncio.wait_for(
            asyncio.gather(
                *(link.publish(f"plant/window/{i}", str(i).encode(), 1, False, f"msg_{i}") for i in range(20))
            ),
            10,
        )
        seen = await sub.wait_count(20)
        assert sorted(int(m.payload) for m in seen) == list(range(20))
    await link.stop()


async def test_a_publish_without_puback_fails_after_the_publish_timeout(broker: Broker) -> None:
    link = MqttLink(config(broker.port, publish_timeout=0.3, keepalive=60))
    await link.start()
    assert await link.wait_connected(10)
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGSTOP)  # takes the bytes, never answers
    try:
        first = asyncio.create_task(link.publish("plant/x", b"{}", 1, False, "msg_a"))
        await asyncio.sleep(0.1)
        second = asyncio.create_task(link.publish("plant/y", b"{}", 1, False, "msg_b"))
        for waiting in (first, second):
            with pytest.raises(LinkDown, match=r"no PUBACK within 0\.3 s"):
                await asyncio.wait_for(waiting, 5)
    finally:
        broker.proc.send_signal(signal.SIGCONT)
    # The link itself is still up: the next publish is acknowledged.
    await link.publish("plant/z", b"{}", 1, False, "msg_c")
    await link.stop()


async def test_no_more_unacknowledged_publishes_than_the_brokers_receive_maximum(tmp_path: Path) -> None:
    # MQTT 5 §3.2.2.3.3 / §4.9: the client must not exceed the Receive Maximum of the CONNACK;
    # Mosquitto announces its max_inflight_messages as such.
    broker = await Broker(tmp_path / "broker", max_inflight=5).start()
    try:
        link = MqttLink(config(broker.port, in_flight=64))
        await link.start()
        assert await link.wait_connected(10)
        sending = [
            asyncio.create_task(link.publish(f"plant/rm/{i}", b"{}", 1, False, f"msg_{i}")) for i in range(20)
        ]
        await asyncio.sleep(0)  # every publish has been handed to the client, no PUBACK read yet
        assert link._client is not None
        paho_client = link._client._client
        assert paho_client._inflight_messages == 5 and len(paho_client._out_messages) == 20
        await asyncio.wait_for(asyncio.gather(*sending), 10)  # the rest follow as PUBACKs free slots
        await link.stop()
    finally:
        await broker.stop()
