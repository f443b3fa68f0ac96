"""Metrics as Prometheus sees them: render, then parse with prometheus-client's own text parser."""

from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from agent.config.source import Secret
from agent.metrics import CONTENT_TYPE, Metrics, safe_label


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_every_issue_6_metric_is_exposed_with_its_values() -> None:
    m = Metrics()
    m.set_machine_statuses({"running": 2, "idle": 1})
    m.observe_poll("mill-01", 0.004)
    m.observe_poll("mill-01", 0.2, error="timeout")
    m.count_readings("mill-01", 20)
    m.count_readings("mill-01", 3, quality="bad")
    m.count_event("alarm_triggered")
    m.count_event("alarm_triggered")
    m.count_workflow("alarm-to-mes", "enqueued")
    m.set_outbox(pending=7, in_flight=2, dead=1, oldest_pending_age=12.5)
    m.observe_delivery("alarm-to-mes#0", "delivered", 0.12)
    m.observe_delivery("alarm-to-mes#0", "retry")
    got = samples(m)
    assert got[("edge_agent_machines", (("status", "running"),))] == 2
    assert got[("edge_agent_machines", (("status", "idle"),))] == 1
    assert got[("edge_agent_poll_duration_seconds_count", (("machine", "mill-01"),))] == 2
    assert got[("edge_agent_poll_duration_seconds_bucket", (("le", "0.005"), ("machine", "mill-01")))] == 1
    assert got[("edge_agent_poll_errors_total", (("kind", "timeout"), ("machine", "mill-01")))] == 1
    assert got[("edge_agent_readings_total", (("machine", "mill-01"), ("quality", "good")))] == 20
    assert got[("edge_agent_readings_total", (("machine", "mill-01"), ("quality", "bad")))] == 3
    assert got[("edge_agent_events_total", (("type", "alarm_triggered"),))] == 2
    assert (
        got[("edge_agent_workflow_executions_total", (("outcome", "enqueued"), ("workflow", "alarm-to-mes")))]
        == 1
    )
    assert got[("edge_agent_outbox_pending", ())] == 7
    assert got[("edge_agent_outbox_in_flight", ())] == 2
    assert got[("edge_agent_outbox_dead", ())] == 1
    assert got[("edge_agent_outbox_oldest_pending_age_seconds", ())] == 12.5
    assert (
        got[("edge_agent_deliveries_total", (("endpoint", "alarm-to-mes#0"), ("outcome", "delivered")))] == 1
    )
    assert got[("edge_agent_deliveries_total", (("endpoint", "alarm-to-mes#0"), ("outcome", "retry")))] == 1
    assert got[("edge_agent_delivery_latency_seconds_count", (("endpoint", "alarm-to-mes#0"),))] == 1
    assert CONTENT_TYPE.startswith("text/plain")


def test_registry_is_private_to_each_instance() -> None:
    a, b = Metrics(), Metrics()
    a.count_event("part_count")
    assert ("edge_agent_events_total", (("type", "part_count"),)) not in samples(b)
    assert b"edge_agent_events_total" not in _global_text()


def _global_text() -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(REGISTRY)


def test_status_that_no_machine_has_any_more_drops_to_zero() -> None:
    m = Metrics()
    m.set_machine_statuses({"running": 1, "alarm": 1})
    m.set_machine_statuses({"running": 2})
    got = samples(m)
    assert got[("edge_agent_machines", (("status", "alarm"),))] == 0
    assert got[("edge_agent_machines", (("status", "running"),))] == 2


def test_forgetting_a_machine_removes_its_series_only() -> None:
    m = Metrics()
    for name in ("mill-01", "lathe-02"):
        m.observe_poll(name, 0.01, error="refused")
        m.count_readings(name, 5)
    m.forget_machine("mill-01")
    text = m.render().decode()
    assert "mill-01" not in text
    assert 'machine="lathe-02"' in text


def test_urls_lose_credentials_path_and_query_in_labels() -> None:
    secret = Secret("whsec_c2VjcmV0", "test")
    m = Metrics()
    m.observe_delivery("https://user:p4ss@hooks.example.test:8443/hook?token=abc", "delivered", 0.1)
    m.count_workflow(f"wf {secret}", "failed")
    text = m.render().decode()
    assert "p4ss" not in text and "token" not in text and "user" not in text and ":8443/hook" not in text
    assert 'endpoint="https://hooks.example.test:8443"' in text
    assert "whsec_c2VjcmV0" not in text
    assert safe_label("x" * 500) == "x" * 120
    assert safe_label("alarm-to-mes#0") == "alarm-to-mes#0"


def test_rows_held_in_memory_and_lost_are_exposed() -> None:
    m = Metrics()
    m.set_held(7, {"memory_full": 2, "stopped": 0})
    m.set_held(3, {"memory_full": 5, "stopped": 4})
    got = samples(m)
    assert got[("edge_agent_deliveries_held_in_memory", ())] == 3
    assert got[("edge_agent_deliveries_lost_total", (("reason", "memory_full"),))] == 5
    assert got[("edge_agent_deliveries_lost_total", (("reason", "stopped"),))] == 4


def test_an_unreadable_machine_has_one_series_with_its_reason_and_none_once_readable() -> None:
    m = Metrics()
    m.set_machine_statuses({})  # machines without a status yet: no status="None" series
    m.set_unreadable("mill-01", "DISCONNECTED", "cannot read the machine: connection refused", 1000.0)
    m.set_unreadable(
        "mill-01", "BAD", "the machine answers with errors: exception 4 (device failure)", 2000.0
    )
    series = {k: v for k, v in samples(m).items() if k[0] == "edge_agent_machine_unreadable_since_seconds"}
    assert series == {
        (
            "edge_agent_machine_unreadable_since_seconds",
            (
                ("machine", "mill-01"),
                ("reason", "the machine answers with errors: exception 4 (device failure)"),
                ("status", "BAD"),
            ),
        ): 2000.0
    }
    assert not any(dict(labels).get("status") == "None" for _, labels in samples(m))
    m.set_unreadable("mill-01", None, "status.otherwise", None)
    assert not any(k[0] == "edge_agent_machine_unreadable_since_seconds" for k in samples(m))


def test_poll_errors_count_failed_and_overran_cycles_and_missed_ticks_are_their_own_series() -> None:
    m = Metrics()
    m.observe_poll("mill-01", 0.01, error="failed", errors=3, overran=2, missed=5, lags=[0.002, 0.03])
    m.observe_poll("mill-01", 0.01, error="failed", errors=0, overran=1, missed=1, lags=[0.004])
    got = samples(m)
    assert got[("edge_agent_poll_errors_total", (("kind", "failed"), ("machine", "mill-01")))] == 3
    assert got[("edge_agent_poll_errors_total", (("kind", "overran"), ("machine", "mill-01")))] == 3
    assert got[("edge_agent_poll_missed_cycles_total", (("machine", "mill-01"),))] == 6
    assert got[("edge_agent_poll_lag_seconds_count", ())] == 3
    assert got[("edge_agent_poll_lag_seconds_bucket", (("le", "0.005"),))] == 2
    m.forget_machine("mill-01")
    assert "mill-01" not in m.render().decode()


def test_an_unchanged_unreadable_machine_keeps_one_series_and_a_new_since_replaces_its_value() -> None:
    m = Metrics()
    m.set_unreadable("mill-01", "BAD", "device failure", 1000.0)
    m.set_unreadable("mill-01", "BAD", "device failure", 1000.0)
    m.set_unreadable("mill-01", "BAD", "device failure", 1500.0)
    got = samples(m)
    series = [k for k in got if k[0] == "edge_agent_machine_unreadable_since_seconds"]
    assert len(series) == 1 and got[series[0]] == 1500.0
    m.set_unreadable("mill-01", None, None, None)
    assert not [k for k in samples(m) if k[0] == "edge_agent_machine_unreadable_since_seconds"]


def test_the_sliced_text_says_what_prometheus_clients_own_rendering_says() -> None:
    """generate_latest is the reference; ours leaves out only the optional _created series."""
    from prometheus_client import generate_latest

    m = Metrics()
    m.set_machine_statuses({"ACTIVE": 2})
    m.set_unreadable('mill "01"\\x', "BAD", "line one\nline two", 1000.0)
    for name in ("mill-01", "lathe-02", "grinder-03"):
        series = m.poll_series(name)
        series.duration.observe(0.004)
        series.duration.observe(1e6)
        series.good.inc(20)
        m.observe_cycles(name, errors=1, overran=2, missed=3, lags=[0.002, float("inf")])
    m.count_event("alarm_triggered")
    m.count_workflow("Status feed", "queued")
    m.set_outbox(pending=7, in_flight=2, dead=1, oldest_pending_age=12.5)
    m.observe_delivery("Status feed#0", "delivered", 0.12)
    m.loop_lag.observe(0.0005)

    def parsed(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if not s.name.endswith("_created")
        }

    ours = m.render().decode()
    assert parsed(ours) == parsed(generate_latest(m.registry).decode())
    assert len(parsed(ours)) > 100
    assert "".join(m.render_slices()) == "".join(text_slices_of(m, 2))


def text_slices_of(m: Metrics, per_slice: int) -> list[str]:
    from agent.metrics_text import text_slices

    parts = list(text_slices(m._families, per_slice))
    assert len(parts) > 5  # really in slices
    return parts
