"""Retry policy as pure functions: what an HTTP outcome means, when to try again, when to give up.

Also the per-endpoint circuit breaker, a small state machine over an injected ``now``.
"""

from __future__ import annotations

import email.utils
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.delivery.settings import BreakerConfig, DeliveryConfig

# A throttled endpoint waits at least this long, whatever Retry-After says: throttled attempts do not
# use the attempt budget, so a "Retry-After: 0" (or a past date) would otherwise be a tight loop.
MIN_THROTTLE_DELAY = 5.0

PENDING = "pending"
IN_FLIGHT = "in_flight"
DELIVERED = "delivered"
DEAD = "dead"
CANCELLED = "cancelled"
STATES = (PENDING, IN_FLIGHT, DELIVERED, DEAD, CANCELLED)


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"  # failure: counts against the attempt budget
    THROTTLED = "throttled"  # 429/503: wait as told, does not burn the attempt budget
    GONE = "gone"  # 410: disable the endpoint
    ABORTED = "aborted"  # receiver said ``webhook-delivery: abort-message``


@dataclass(frozen=True)
class Classified:
    outcome: Outcome
    retry_after: float | None = None
    error_class: str | None = None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from ``Retry-After`` (delta-seconds or an HTTP date); ``None`` if absent/bad."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def classify(status: int | None, headers: Mapping[str, str], now: float) -> Classified:
    """``status`` None means no HTTP response at all (connection error, timeout)."""
    if status is None:
        return Classified(Outcome.RETRY, None, "connection")
    lower = {k.lower(): v for k, v in headers.items()}
    if 200 <= status < 300:
        return Classified(Outcome.DELIVERED)
    retry_after = parse_retry_after(lower.get("retry-after"), now)
    if lower.get("webhook-delivery", "").strip().lower() == "abort-message":
        return Classified(Outcome.ABORTED, None, f"http_{status}")
    if status == 410:
        return Classified(Outcome.GONE, None, "http_410")
    if status in (429, 503):
        return Classified(Outcome.THROTTLED, retry_after, f"http_{status}")
    if 300 <= status < 400:
        return Classified(Outcome.RETRY, retry_after, "redirect")
    return Classified(Outcome.RETRY, retry_after, f"http_{status}")


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """One attempt as a sender saw it (``senders/base.py``); plain data, so classification stays a pure function.

    ``status`` is the destination's reply in HTTP terms (2xx delivered, 410 gone, 429/503 throttled,
    other codes failed): a non-HTTP sender maps its protocol's acknowledgement onto these codes.
    ``None`` means no reply at all; then ``error_class`` says why (``config``, ``timeout``, ``tls``,
    ``connect``, ``connection``) and ``error`` says it to a person, never with a secret in it.
    """

    status: int | None
    latency: float
    headers: Mapping[str, str] = field(default_factory=dict)
    response: bytes = b""
    error_class: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Assessment:
    """An attempt's outcome classified, with the error class and message kept in its history."""

    result: Classified
    error_class: str | None
    error: str | None


def assess(sent: SendOutcome, now: float) -> Assessment:
    """Classify what a sender returned. With a reply, its status decides the error class and text;
    without one, the sender's own class and message (timeout, tls, ...) stay."""
    result = classify(sent.status, sent.headers, now)
    if sent.status is None:
        return Assessment(result, sent.error_class, sent.error)
    if result.outcome is Outcome.DELIVERED:
        # The status line is the receiver's answer: a 2xx whose body then trickles past the timeout
        # (or breaks off) is delivered, and a delivered row carries no error.
        return Assessment(result, None, None)
    # A non-HTTP sender (MQTT) maps onto HTTP codes; its own words say what really happened.
    error = f"HTTP {sent.status}" + (f": {sent.error}" if sent.error else "")
    if 300 <= sent.status < 400:
        error += f" redirect to {sent.headers.get('Location', '?')} not followed"
    elif result.outcome is Outcome.ABORTED:
        error += " and webhook-delivery: abort-message"
    return Assessment(result, result.error_class, error)


@dataclass(frozen=True)
class Decision:
    state: str
    due_at: float
    attempts: int
    throttled: int
    disable_endpoint: bool = False
    pause_endpoint_until: float | None = None


def schedule_delay(config: DeliveryConfig, attempts_done: int, rand: float) -> float:
    """Delay before the next attempt after ``attempts_done`` attempts, with ± ``jitter`` spread."""
    schedule = config.retry_schedule
    base = schedule[min(attempts_done, len(schedule) - 1)]
    return max(0.0, base * (1.0 + config.jitter * (2.0 * rand - 1.0)))


def decide(
    config: DeliveryConfig,
    result: Classified,
    *,
    attempts: int,
    throttled: int,
    age_base: float,
    now: float,
    rand: float,
) -> Decision:
    """The row's next state after one attempt. ``attempts`` counts attempts before this one."""
    out = result.outcome
    if out is Outcome.DELIVERED:
        return Decision(DELIVERED, now, attempts + 1, throttled)
    if out is Outcome.ABORTED:
        return Decision(DEAD, now, attempts + 1, throttled)
    if out is Outcome.GONE:
        # Held, not dead: the endpoint is disabled and the row waits until someone re-enables it.
        return Decision(PENDING, now, attempts + 1, throttled, disable_endpoint=True)
    expired = now - age_base >= config.max_age
    if out is Outcome.THROTTLED:
        if expired:
            return Decision(DEAD, now, attempts, throttled + 1)
        wait = result.retry_after
        if wait is None:
            wait = schedule_delay(config, max(attempts, 1), rand)
        wait = max(min(wait, config.retry_after_max), MIN_THROTTLE_DELAY)
        return Decision(PENDING, now + wait, attempts, throttled + 1, pause_endpoint_until=now + wait)
    done = attempts + 1
    if done >= config.max_attempts or expired:
        return Decision(DEAD, now, done, throttled)
    delay = schedule_delay(config, done, rand)
    if result.retry_after is not None:
        delay = max(delay, min(result.retry_after, config.retry_after_max))
    return Decision(PENDING, now + delay, done, throttled)


class CircuitBreaker:
    """Closed → (``failures`` consecutive failures) → open for ``cooldown`` → one probe at a time.

    A failed probe re-opens with a doubled cooldown (up to ``max_cooldown``); a success closes it.
    Any other end of a probe (throttled, 410, internal error, cancelled) leaves it open but lets the
    next probe go once the cooldown/pause allows: the caller reports every end through ``finished``.
    """

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self.failures = 0
        self.open_until: float | None = None
        self.cooldown = config.cooldown
        self.probing = False
        self.paused_until: float | None = None

    @property
    def is_open(self) -> bool:
        return self.open_until is not None

    def allowance(self, now: float, in_flight: int, limit: int) -> int:
        """How many new requests may start now."""
        if self.paused_until is not None:
            if now < self.paused_until:
                return 0
            self.paused_until = None
        if self.open_until is None:
            return max(0, limit - in_flight)
        # ``in_flight`` (not ``probing``) keeps it to one probe: it always drops when a request ends.
        if now < self.open_until or in_flight:
            return 0
        return 1

    def wake_at(self, now: float) -> float | None:
        """When ``allowance`` may change by time alone (``None``: only a result can change it)."""
        times = [t for t in (self.paused_until, self.open_until) if t is not None and t > now]
        return min(times) if times else None

    def started(self) -> None:
        if self.open_until is not None:
            self.probing = True

    def finished(self) -> None:
        """A request ended, however it ended (after ``success``/``failure`` if it had a result)."""
        self.probing = False

    def pause(self, until: float) -> None:
        self.paused_until = max(until, self.paused_until or until)

    def success(self) -> None:
        self.failures = 0
        self.open_until = None
        self.probing = False
        self.cooldown = self.config.cooldown

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.open_until is not None:
            if self.probing:
                self.probing = False
                self.cooldown = min(self.cooldown * 2, self.config.max_cooldown)
                self.open_until = now + self.cooldown
            return
        if self.failures >= self.config.failures:
            self.open_until = now + self.cooldown
