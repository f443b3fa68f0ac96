"""The retry policy and circuit breaker as pure functions of (outcome, counters, now)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

from hypothesis import given
from hypothesis import strategies as st

from agent.delivery.retry import (
    DEAD,
    DELIVERED,
    PENDING,
    CircuitBreaker,
    Classified,
    Outcome,
    assess,
    classify,
    decide,
    parse_retry_after,
    schedule_delay,
)
from agent.delivery.senders.base import SendOutcome
from agent.delivery.settings import DEFAULT_RETRY_SCHEDULE, BreakerConfig, DeliveryConfig

NOW = 1_800_000_000.0
CFG = DeliveryConfig(jitter=0.0)


def test_an_attempt_without_reply_keeps_the_senders_error_class_and_message() -> None:
    got = assess(SendOutcome(None, 0.1, error_class="timeout", error="no response within 5 s"), NOW)
    assert got.result.outcome is Outcome.RETRY
    assert (got.error_class, got.error) == ("timeout", "no response within 5 s")


def test_a_reply_is_described_by_its_status_whatever_the_sender_said() -> None:
    ok = assess(SendOutcome(204, 0.1), NOW)
    assert (ok.result.outcome, ok.error_class, ok.error) == (Outcome.DELIVERED, None, None)
    failed = assess(SendOutcome(500, 0.1, response=b"oops"), NOW)
    assert (failed.error_class, failed.error) == ("http_500", "HTTP 500")
    moved = assess(SendOutcome(301, 0.1, {"Location": "https://new.example/hook"}), NOW)
    assert moved.error == "HTTP 301 redirect to https://new.example/hook not followed"
    aborted = assess(SendOutcome(400, 0.1, {"webhook-delivery": "abort-message"}), NOW)
    assert aborted.result.outcome is Outcome.ABORTED
    assert aborted.error == "HTTP 400 and webhook-delivery: abort-message"
    # The body of a 2xx that broke off mid-read is not a failure: the receiver has the message.
    cut = assess(SendOutcome(200, 0.1, error_class="connection", error="ClientPayloadError: cut"), NOW)
    assert cut.result.outcome is Outcome.DELIVERED


def test_classify_status_codes() -> None:
    assert classify(200, {}, NOW).outcome is Outcome.DELIVERED
    assert classify(204, {}, NOW).outcome is Outcome.DELIVERED
    assert classify(410, {}, NOW).outcome is Outcome.GONE
    assert classify(429, {"Retry-After": "30"}, NOW) == Classified(Outcome.THROTTLED, 30.0, "http_429")
    assert classify(503, {}, NOW).outcome is Outcome.THROTTLED
    assert classify(302, {"Location": "/x"}, NOW) == Classified(Outcome.RETRY, None, "redirect")
    assert classify(500, {}, NOW) == Classified(Outcome.RETRY, None, "http_500")
    assert classify(None, {}, NOW).outcome is Outcome.RETRY
    assert classify(500, {"webhook-delivery": "abort-message"}, NOW).outcome is Outcome.ABORTED


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    date = format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True)
    assert parse_retry_after(date, NOW) == 90.0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


def test_default_schedule_is_the_svix_one() -> None:
    assert DEFAULT_RETRY_SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    delays = [schedule_delay(CFG, n, 0.5) for n in range(1, 8)]
    assert delays == [5, 300, 1800, 7200, 18000, 36000, 36000]


def test_failure_walks_the_schedule_then_dies() -> None:
    attempts, due = 0, NOW
    times = []
    for _ in range(8):
        d = decide(
            CFG, Classified(Outcome.RETRY), attempts=attempts, throttled=0, age_base=NOW, now=due, rand=0.5
        )
        attempts = d.attempts
        if d.state == DEAD:
            break
        assert d.state == PENDING
        times.append(d.due_at - due)
        due = d.due_at
    assert times == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert d.state == DEAD and attempts == 8


@given(st.integers(min_value=1, max_value=20), st.floats(min_value=0, max_value=0.999))
def test_jitter_stays_within_bounds(attempts: int, rand: float) -> None:
    cfg = DeliveryConfig(jitter=0.2)
    base = cfg.retry_schedule[min(attempts, len(cfg.retry_schedule) - 1)]
    delay = schedule_delay(cfg, attempts, rand)
    assert base * 0.8 - 1e-9 <= delay <= base * 1.2 + 1e-9


def test_next_attempt_is_never_in_the_past_and_attempts_always_grow() -> None:
    cfg = DeliveryConfig(jitter=1.0)
    for n in range(10):
        d = decide(cfg, Classified(Outcome.RETRY), attempts=n, throttled=0, age_base=NOW, now=NOW, rand=0.0)
        assert d.due_at >= NOW and d.attempts == n + 1


def test_throttled_does_not_burn_attempts_and_honours_retry_after() -> None:
    d = decide(
        CFG, Classified(Outcome.THROTTLED, 120.0), attempts=2, throttled=0, age_base=NOW, now=NOW, rand=0.5
    )
    assert (d.state, d.attempts, d.throttled, d.due_at) == (PENDING, 2, 1, NOW + 120)
    assert d.pause_endpoint_until == NOW + 120
    capped = decide(
        CFG, Classified(Outcome.THROTTLED, 10**9), attempts=0, throttled=0, age_base=NOW, now=NOW, rand=0.5
    )
    assert capped.due_at == NOW + CFG.retry_after_max
    bare = decide(
        CFG, Classified(Outcome.THROTTLED), attempts=0, throttled=0, age_base=NOW, now=NOW, rand=0.5
    )
    assert bare.due_at >= NOW + 5


def test_max_age_kills_even_throttled() -> None:
    cfg = DeliveryConfig(jitter=0.0, max_age=3600)
    d = decide(
        cfg,
        Classified(Outcome.THROTTLED, 1.0),
        attempts=0,
        throttled=50,
        age_base=NOW,
        now=NOW + 3600,
        rand=0,
    )
    assert d.state == DEAD
    d = decide(cfg, Classified(Outcome.RETRY), attempts=1, throttled=0, age_base=NOW, now=NOW + 4000, rand=0)
    assert d.state == DEAD


def test_gone_holds_the_row_and_disables_the_endpoint() -> None:
    d = decide(CFG, Classified(Outcome.GONE), attempts=0, throttled=0, age_base=NOW, now=NOW, rand=0)
    assert d.state == PENDING and d.disable_endpoint


def test_abort_message_is_dead_and_success_is_delivered() -> None:
    assert (
        decide(CFG, Classified(Outcome.ABORTED), attempts=0, throttled=0, age_base=NOW, now=NOW, rand=0).state
        == DEAD
    )
    ok = decide(CFG, Classified(Outcome.DELIVERED), attempts=3, throttled=0, age_base=NOW, now=NOW, rand=0)
    assert (ok.state, ok.attempts) == (DELIVERED, 4)


def test_breaker_opens_then_allows_exactly_one_probe() -> None:
    b = CircuitBreaker(BreakerConfig(failures=3, cooldown=30, max_cooldown=100))
    assert b.allowance(NOW, 0, 4) == 4
    for _ in range(3):
        b.failure(NOW)
    assert b.is_open and b.allowance(NOW + 29, 0, 4) == 0
    assert b.wake_at(NOW) == NOW + 30
    assert b.allowance(NOW + 30, 0, 4) == 1
    b.started()
    assert b.allowance(NOW + 30, 1, 4) == 0  # the probe is out: nobody else
    b.failure(NOW + 31)
    assert b.allowance(NOW + 31 + 59, 0, 4) == 0  # cooldown doubled to 60
    assert b.allowance(NOW + 31 + 60, 0, 4) == 1
    b.started()
    b.failure(NOW + 100)
    assert b.open_until == NOW + 200  # capped at max_cooldown
    b.success()
    assert not b.is_open and b.allowance(NOW + 100, 0, 4) == 4


def test_breaker_pause_blocks_until_time() -> None:
    b = CircuitBreaker(BreakerConfig())
    b.pause(NOW + 10)
    assert b.allowance(NOW, 0, 2) == 0 and b.wake_at(NOW) == NOW + 10
    assert b.allowance(NOW + 10, 0, 2) == 2


def test_throttle_waits_at_least_the_minimum_whatever_retry_after_says() -> None:
    past = format_datetime(datetime.fromtimestamp(NOW - 600, UTC), usegmt=True)
    for header in ("0", past):
        result = classify(429, {"Retry-After": header}, NOW)
        assert result.retry_after == 0.0
        d = decide(CFG, result, attempts=0, throttled=0, age_base=NOW, now=NOW, rand=0.5)
        assert (d.state, d.due_at, d.pause_endpoint_until) == (PENDING, NOW + 5, NOW + 5)
    short = DeliveryConfig(jitter=0.0, retry_after_max=1.0)
    d = decide(
        short, Classified(Outcome.THROTTLED, 0.0), attempts=0, throttled=0, age_base=NOW, now=NOW, rand=0
    )
    assert d.due_at == NOW + 5


def test_breaker_lets_the_next_probe_go_after_a_probe_ended_without_a_verdict() -> None:
    b = CircuitBreaker(BreakerConfig(failures=2, cooldown=30, max_cooldown=100))
    b.failure(NOW)
    b.failure(NOW)
    assert b.allowance(NOW + 30, 0, 4) == 1
    b.started()  # the probe gets 429/503, 410, an internal error or is cancelled: no success/failure
    b.pause(NOW + 90)
    b.finished()
    assert b.allowance(NOW + 60, 0, 4) == 0 and b.wake_at(NOW + 60) == NOW + 90
    assert b.allowance(NOW + 90, 0, 4) == 1  # still open: one probe, not the full limit
    b.started()
    b.finished()
    assert b.allowance(NOW + 91, 0, 4) == 1
    b.started()
    b.success()
    b.finished()
    assert not b.is_open and b.allowance(NOW + 92, 0, 4) == 4
