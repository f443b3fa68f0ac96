"""drivers.opcua.config: what a machine file may say, and how every mistake is reported (file:line: key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.opcua.config import NodeRef, OpcuaTag, map_key, parse_node
from tests.drivers.opcua_fixtures import machine_config, parse_machine

SAMPLE = Path(__file__).resolve().parents[2] / "drivers" / "opcua" / "sample.yaml"


def errors(text: str, **kwargs: object) -> list[str]:
    cfg, problems = parse_machine(text, **kwargs)  # type: ignore[arg-type]
    assert cfg is None, "expected the config to be rejected"
    return [str(p) for p in problems.items]


def test_sample_file_parses_with_documented_defaults() -> None:
    cfg = machine_config(SAMPLE.read_text(), file=str(SAMPLE))
    assert cfg.machine_id == "lathe-01"
    assert cfg.mode == "subscribe"
    assert cfg.publishing_interval == pytest.approx(0.25)
    assert cfg.session_timeout == 60.0
    assert cfg.security.policy == "None"
    assert cfg.alarms is not None and cfg.alarms.notifier.identifier == "2253"
    status = cfg.tags[0]
    assert status.node == NodeRef(
        text="nsu=urn:edge-agent:simulator;s=lathe-01.Channel1.ActStatus",
        kind="s",
        identifier="lathe-01.Channel1.ActStatus",
        namespace_uri="urn:edge-agent:simulator",
    )
    assert "part_count" in cfg.tag_names and len(cfg.tag_names) == 12


def test_defaults_follow_the_poll_interval() -> None:
    cfg = machine_config(
        """
poll_interval: 40
opcua: {url: "opc.tcp://127.0.0.1:4840", publishing_interval: 200ms}
tags: {a: {node: "ns=2;i=17"}}
"""
    )
    assert cfg.mode == "poll"
    assert cfg.sampling_interval == pytest.approx(0.2)  # defaults to the publishing interval
    assert cfg.session_timeout == 120.0  # 3 x poll interval when that exceeds 60 s
    assert cfg.timeout == 4.0
    assert cfg.alarms is None


@pytest.mark.parametrize(
    ("text", "kind", "ident", "ns", "uri"),
    [
        ("ns=2;s=lathe.Channel1.ActStatus", "s", "lathe.Channel1.ActStatus", 2, None),
        ("ns=3;i=1001", "i", "1001", 3, None),
        ("i=2253", "i", "2253", 0, None),
        ("nsu=urn:edge-agent:simulator;s=a;b", "s", "a;b", 0, "urn:edge-agent:simulator"),
        ("ns=1;g=09087e75-8e5e-499b-954f-f2a9603db28a", "g", "09087e75-8e5e-499b-954f-f2a9603db28a", 1, None),
    ],
)
def test_node_syntax(text: str, kind: str, ident: str, ns: int, uri: str | None) -> None:
    ref = parse_node(text)
    assert (ref.kind, ref.identifier, ref.namespace_index, ref.namespace_uri) == (kind, ident, ns, uri)


@pytest.mark.parametrize(
    "text", ["ns=2;x=1", "ns=two;s=a", "ns=2;i=abc", "s=", "ns=2", "nsu=;s=a", "ns=70000;i=1"]
)
def test_bad_node_syntax_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="invalid node id"):
        parse_node(text)


def test_every_error_names_file_line_and_key() -> None:
    text = """id: m1
opcua:
  url: "http://127.0.0.1:4840"
  mode: push
  colour: blue
  timeout: soon
tags:
  status: {node: "ns=2;x=Channel1"}
  speed: {node: "ns=2;s=S", scale: fast}
  nothing: {map: {0: A}}
"""
    found = errors(text, file="machines/m1.yaml")
    expected = [
        "machines/m1.yaml:3: opcua.url: expected an OPC-UA URL",
        "machines/m1.yaml:4: opcua.mode: unknown value 'push'",
        "machines/m1.yaml:6: opcua.timeout: expected a duration",
        "machines/m1.yaml:5: opcua.colour: unknown key",
        "machines/m1.yaml:8: tags.status.node: invalid node id 'ns=2;x=Channel1'",
        "machines/m1.yaml:9: tags.speed.scale: expected a number",
        "machines/m1.yaml:10: tags.nothing.node: required key is missing",
    ]
    for want in expected:
        assert any(f.startswith(want) for f in found), (want, found)
    assert len(found) == len(expected)


def test_session_timeout_shorter_than_poll_interval_is_an_error() -> None:
    found = errors(
        """poll_interval: 120
opcua:
  url: "opc.tcp://127.0.0.1:4840"
  session_timeout: 60s
tags: {a: {node: "ns=2;i=1"}}
"""
    )
    assert found == ["machines/test.yaml:4: opcua.session_timeout: must be longer than poll_interval (120s)"]


def test_security_needs_existing_certificate_files(tmp_path: Path) -> None:
    key = tmp_path / "client-key.pem"
    key.write_text("not really a key")
    found = errors(
        f"""opcua:
  url: "opc.tcp://127.0.0.1:4840"
  security: Basic256Sha256
  security_mode: Sign
  certificate_file: pki/missing-cert.der
  private_key_file: {key}
tags: {{a: {{node: "ns=2;i=1"}}}}
""",
        file=str(tmp_path / "m.yaml"),
    )
    assert found == [
        f"{tmp_path / 'm.yaml'}:5: opcua.certificate_file: file not found: {tmp_path}/pki/missing-cert.der"
    ]


def test_security_options_without_a_policy_are_errors() -> None:
    found = errors(
        """opcua:
  url: "opc.tcp://127.0.0.1:4840"
  security: Rot13
  security_mode: Sign
tags: {a: {node: "ns=2;i=1"}}
"""
    )
    assert found[0].startswith("machines/test.yaml:3: opcua.security: unknown value 'Rot13'")
    assert found[1].startswith("machines/test.yaml:4: opcua.security_mode: only used with a security policy")


def test_password_from_env_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OPCUA_PW", "hunter2-secret")
    cfg = machine_config(
        """opcua:
  url: "opc.tcp://127.0.0.1:4840"
  username: edge
  password_env: TEST_OPCUA_PW
tags: {a: {node: "ns=2;i=1"}}
"""
    )
    assert cfg.password is not None and cfg.password.reveal() == "hunter2-secret"
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg)


def test_password_without_username_is_an_error_that_does_not_echo_it() -> None:
    found = errors(
        """opcua:
  url: "opc.tcp://127.0.0.1:4840"
  password: hunter2-secret
tags: {a: {node: "ns=2;i=1"}}
"""
    )
    assert found == ["machines/test.yaml:3: opcua.password: a password needs a username"]


def test_deadband_only_with_subscriptions_and_alarm_nodes_validated() -> None:
    found = errors(
        """opcua:
  url: "opc.tcp://127.0.0.1:4840"
  alarms: {notifier: "ns=2;q=1", severity: high}
tags: {a: {node: "ns=2;i=1", deadband: 2}}
"""
    )
    assert any(f.startswith("machines/test.yaml:3: opcua.alarms.notifier: invalid node id") for f in found)
    assert any(f.startswith("machines/test.yaml:3: opcua.alarms.severity: unknown key") for f in found)
    assert any(
        f.startswith("machines/test.yaml:4: tags.a.deadband: only applies with mode: subscribe")
        for f in found
    )


def test_prefix_is_substituted_before_validation() -> None:
    cfg = machine_config(
        """opcua: {url: "opc.tcp://127.0.0.1:4840", prefix: "mill-07.", alarms: {notifier: "ns=2;s={prefix}Alarms"}}
tags: {a: {node: "ns=2;s={prefix}Spindle1.ActSpeed"}}
"""
    )
    assert cfg.tags[0].node.identifier == "mill-07.Spindle1.ActSpeed"
    assert cfg.alarms is not None and cfg.alarms.notifier.identifier == "mill-07.Alarms"


def test_convert_applies_scale_offset_then_map() -> None:
    node = parse_node("ns=2;i=1")
    assert OpcuaTag("t", node, scale=0.1, offset=-5.0).convert(250) == pytest.approx(20.0)
    words = OpcuaTag("s", node, value_map={"0": "ACTIVE", "2": "RESET"})
    assert [words.convert(v) for v in (0, 2, 7)] == ["ACTIVE", "RESET", 7]  # unmapped passes through
    flags = OpcuaTag("b", node, value_map={map_key(True): "PRESSED", map_key(False): "ARMED"})
    assert [flags.convert(True), flags.convert(False)] == ["PRESSED", "ARMED"]
    assert OpcuaTag("p", node, scale=2.0).convert("O1000") == "O1000"  # scale is for numbers only


def test_credentials_in_the_url_are_refused_without_echoing_them() -> None:
    found = errors(
        """opcua: {url: "opc.tcp://edge:hunter2@127.0.0.1:4840"}
tags: {a: {node: "ns=2;i=1"}}
"""
    )
    assert len(found) == 1 and found[0].startswith(
        "machines/test.yaml:1: opcua.url: credentials do not belong"
    )
    assert "hunter2" not in found[0]


def test_alarms_read_conditions_by_default_and_name_their_code() -> None:
    cfg = machine_config('opcua: {url: "opc.tcp://127.0.0.1:4840", alarms: {}}\ntags: {}\n')
    assert cfg.alarms is not None
    assert (cfg.alarms.event_type.text if cfg.alarms.event_type else None, cfg.alarms.code) == (
        "i=2915",  # AlarmConditionType: OfType matches every alarm subtype
        "ConditionName",
    )
    assert cfg.alarms.conditions
    found = errors('opcua: {url: "opc.tcp://127.0.0.1:4840", alarms: {code: Message}}\ntags: {}\n')
    assert len(found) == 1 and found[0].startswith("machines/test.yaml:1: opcua.alarms.code:")
    assert "ConditionName" in found[0] and "AlarmIdentifier" in found[0]


def test_plain_events_need_the_file_to_say_where_code_and_state_are() -> None:
    found = errors(
        """opcua:
  url: "opc.tcp://127.0.0.1:4840"
  alarms: {code_field: AlarmNumber}
tags: {}
"""
    )
    assert any("opcua.alarms.active_field: plain (non-condition) alarm events need both" in f for f in found)
    assert any("opcua.alarms.event_type: required with code_field/active_field" in f for f in found)
    cfg = machine_config(
        """opcua:
  url: "opc.tcp://127.0.0.1:4840"
  alarms: {event_type: "ns=2;i=5000", code_field: AlarmNumber, active_field: IsActive}
tags: {}
"""
    )
    assert cfg.alarms is not None and not cfg.alarms.conditions
