"""/readyz and systemd STATUS=: what makes the agent unhealthy, judged from plain facts."""

from __future__ import annotations

from agent.delivery.outbox import OutboxCounts
from agent.health import Facts, judge, status_line


def counts(pending: int = 0, dead: int = 0, oldest: float | None = None) -> OutboxCounts:
    return OutboxCounts(pending, 0, 0, dead, 0, oldest, 0)


def test_an_agent_with_connected_machines_and_a_draining_outbox_is_healthy() -> None:
    health = judge(Facts(counts=counts(pending=3, oldest=5.0), statuses=["ACTIVE", "DISCONNECTED"]))
    assert health.ok and health.reasons == []


def test_every_reason_to_be_unhealthy_is_named() -> None:
    health = judge(
        Facts(
            disk_error="OperationalError: disk I/O error",
            outbox_unavailable=True,
            recovery_pending=True,
            waiting=12,
            rejected=3,
            counts=counts(pending=1, oldest=601.0),
            statuses=["DISCONNECTED", "DISCONNECTED"],
        )
    )
    assert not health.ok
    assert health.reasons == [
        "outbox unavailable: it cannot be read (see the agent log)",
        "outbox cannot be written (disk full or I/O error); new deliveries wait in memory",
        "deliveries left in flight by the last run wait for disk space to be retried",
        "12 deliveries waiting in memory: the outbox refuses writes",
        "3 deliveries rejected since start: outbox and memory full",
        "outbox not draining: oldest pending delivery is 601s old",
        "every machine is disconnected",
    ]
    # The error text can hold paths and SQL: only callers with a token see it (/readyz's detail).
    assert health.detail == {"outbox_error": "OperationalError: disk I/O error"}


def test_no_machines_is_not_the_same_as_all_disconnected() -> None:
    assert judge(Facts(statuses=[])).ok


def test_status_line_counts_machines_per_status_and_the_outbox() -> None:
    assert status_line(["IDLE", "ACTIVE", "ACTIVE"], counts(pending=4, dead=1)) == (
        "ACTIVE=2 IDLE=1; outbox pending=4 dead=1"
    )
    assert status_line([], None) == "no machines; outbox ?"


def test_machines_that_all_answer_only_with_errors_make_the_agent_unready_too() -> None:
    health = judge(Facts(statuses=["BAD", "DISCONNECTED"]))
    assert not health.ok
    assert health.reasons == ["no machine can be read: each is disconnected or answers only with errors"]
    assert judge(Facts(statuses=["BAD", "ACTIVE"])).ok


def test_a_broker_link_that_is_down_is_named_with_its_error_for_token_holders_only() -> None:
    down = ("10.0.0.5:1883", False, "broker 10.0.0.5:1883: [Errno 111] Connection refused")
    health = judge(Facts(mqtt=[("10.0.0.6:8883", True, None), down]))
    assert not health.ok
    assert health.reasons == ["MQTT broker 10.0.0.5:1883 not connected: its messages wait in the outbox"]
    assert health.detail == {"mqtt 10.0.0.5:1883": down[2]}
    assert judge(Facts(mqtt=[("10.0.0.6:8883", True, None)])).ok
    line = status_line(["ACTIVE"], counts(), [("10.0.0.6:8883", True), ("10.0.0.5:1883", False)])
    assert line == "ACTIVE=1; outbox pending=0 dead=0; mqtt 10.0.0.6:8883 up; mqtt 10.0.0.5:1883 down"
