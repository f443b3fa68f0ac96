"""The agent's Prometheus metrics, in a registry of its own (tests and reloads never share globals).

Labels carry machine ids, workflow names, endpoint keys and event types — never a secret, and
never a URL with credentials or a query string (``safe_label`` strips those if one slips in).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.metrics import MetricWrapperBase

from agent.metrics_text import text_slices

CONTENT_TYPE = CONTENT_TYPE_LATEST
POLL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
MAX_LABEL = 120
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+")


def safe_label(value: str) -> str:
    """A label value with any URL reduced to scheme://host[:port] (no user, password, path or query)."""

    def strip(match: re.Match[str]) -> str:
        try:
            parts = urlsplit(match.group(0))
            host = parts.hostname or ""
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            return "<url>"
        return f"{parts.scheme}://{host}{port}"

    return _URL.sub(strip, value)[:MAX_LABEL]


@dataclass(frozen=True, slots=True)
class PollSeries:
    duration: Histogram
    good: Counter
    bad: Counter


class Metrics:
    """Every metric of issue 6, with typed update methods so callers never spell label names."""

    def __init__(self, namespace: str = "edge_agent") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._collection_metrics(namespace)
        self._derived_metrics(namespace)
        self._delivery_metrics(namespace)
        self._mqtt_metrics(namespace)
        # Every metric, in the order of its creation: what the exposition text lists.
        self._families = [v for v in vars(self).values() if isinstance(v, MetricWrapperBase)]
        self._statuses: set[str] = set()
        self._unreadable: dict[str, tuple[tuple[str, str], float]] = {}  # machine -> (labels, since) set
        # Label sets per machine, so a removed machine's series can be dropped with public API only.
        self._machine_series: dict[str, set[tuple[str, str]]] = {}

    def _collection_metrics(self, ns: str) -> None:
        r = self.registry
        self.machines = Gauge(f"{ns}_machines", "Machines by derived status.", ["status"], registry=r)
        self.unreadable = Gauge(
            f"{ns}_machine_unreadable_since_seconds",
            "Unix time since which a machine is DISCONNECTED or BAD, with the reason; absent while readable.",
            ["machine", "status", "reason"],
            registry=r,
        )
        self.poll_duration = Histogram(
            f"{ns}_poll_duration_seconds",
            "A machine's slowest poll cycle in each update of the series (every 10 s, and at each scrape).",
            ["machine"],
            buckets=POLL_BUCKETS,
            registry=r,
        )
        # One series for all machines: per-machine lag buckets would multiply the scrape by N again.
        self.poll_lag = Histogram(
            f"{ns}_poll_lag_seconds",
            "How late a poll cycle started after its scheduled time, all machines.",
            buckets=POLL_BUCKETS,
            registry=r,
        )
        self.loop_lag = Histogram(
            f"{ns}_event_loop_lag_seconds",
            "How late the event loop woke a 0.1 s sleep: time it spent blocked or busy with other work.",
            buckets=POLL_BUCKETS,
            registry=r,
        )
        self.poll_errors = Counter(
            f"{ns}_poll_errors_total",
            "Poll cycles that failed (kind=failed: a driver error or a reading not good) or overran "
            "(kind=overran: still running at the next tick).",
            ["machine", "kind"],
            registry=r,
        )
        self.missed_cycles = Counter(
            f"{ns}_poll_missed_cycles_total",
            "Scheduled poll cycles never started because the previous one overran.",
            ["machine"],
            registry=r,
        )
        self.readings = Counter(
            f"{ns}_readings_total", "Tag readings collected, by quality.", ["machine", "quality"], registry=r
        )

    def _derived_metrics(self, ns: str) -> None:
        r = self.registry
        self.events = Counter(f"{ns}_events_total", "Derived events, by type.", ["type"], registry=r)
        self.workflow_executions = Counter(
            f"{ns}_workflow_executions_total",
            "Workflow executions (every firing: from readings, timers, schedules and operators), by outcome.",
            ["workflow", "outcome"],
            registry=r,
        )

    def _delivery_metrics(self, ns: str) -> None:
        r = self.registry
        self.outbox_pending = Gauge(f"{ns}_outbox_pending", "Deliveries waiting to be sent.", registry=r)
        self.outbox_in_flight = Gauge(f"{ns}_outbox_in_flight", "Deliveries being sent now.", registry=r)
        self.outbox_dead = Gauge(f"{ns}_outbox_dead", "Deliveries that gave up (dead letters).", registry=r)
        self.outbox_oldest_pending_age = Gauge(
            f"{ns}_outbox_oldest_pending_age_seconds", "Age of the oldest pending delivery.", registry=r
        )
        self.held_in_memory = Gauge(
            f"{ns}_deliveries_held_in_memory",
            "Derived deliveries waiting in memory because the outbox refuses writes (disk full).",
            registry=r,
        )
        self.lost = Counter(
            f"{ns}_deliveries_lost_total",
            "Deliveries never stored: over the in-memory limit, or still held when the agent stopped.",
            ["reason"],
            registry=r,
        )
        self._lost_seen: dict[str, int] = {}
        self.deliveries = Counter(
            f"{ns}_deliveries_total",
            "Delivery attempts, by endpoint key and outcome.",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            f"{ns}_delivery_latency_seconds",
            "From event to acknowledged delivery.",
            ["endpoint"],
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )

    def _mqtt_metrics(self, ns: str) -> None:
        r = self.registry
        self.mqtt_connected = Gauge(
            f"{ns}_mqtt_connected",
            "1 while the agent's connection to the MQTT broker (host:port) is up, else 0.",
            ["broker"],
            registry=r,
        )
        self.mqtt_reconnects = Counter(
            f"{ns}_mqtt_reconnects_total",
            "Connections to the MQTT broker made again after the first one (each one followed a loss).",
            ["broker"],
            registry=r,
        )
        self._reconnects_seen: dict[str, int] = {}

    # -- collection

    def set_machine_statuses(self, counts: Mapping[str, int]) -> None:
        """Machines per status; a status no machine has any more drops to 0 rather than going stale."""
        current = {safe_label(status): n for status, n in counts.items()}
        for status in self._statuses - set(current):
            self.machines.labels(status=status).set(0)
        for status, n in current.items():
            self.machines.labels(status=status).set(n)
            self._statuses.add(status)

    def set_unreadable(
        self, machine: str, status: str | None, reason: str | None, since: float | None
    ) -> None:
        """One series per machine while it is DISCONNECTED or BAD (value: since when); none otherwise."""
        old = self._unreadable.get(machine)
        if old is None and (status is None or since is None):
            return  # the common case at every update: readable before and now, nothing to touch
        m = safe_label(machine)
        labels = None if status is None or since is None else (safe_label(status), safe_label(reason or ""))
        if old is not None and (old[0], old[1]) == (labels, since):
            return
        if old is not None and old[0] != labels:
            self.unreadable.remove(m, *old[0])
            del self._unreadable[machine]
        if labels is not None and since is not None:
            self.unreadable.labels(machine=m, status=labels[0], reason=labels[1]).set(since)
            self._unreadable[machine] = (labels, since)

    def observe_poll(
        self,
        machine: str,
        seconds: float,
        *,
        error: str | None = None,
        errors: int = 1,
        overran: int = 0,
        missed: int = 0,
        lags: Iterable[float] = (),
    ) -> None:
        """A machine's latest poll duration, and what happened since the last call: ``errors`` failed
        cycles (counted under ``kind=error`` when given), ``overran`` cycles, ``missed`` ticks, lags."""
        m = safe_label(machine)
        self.poll_duration.labels(machine=m).observe(seconds)
        self._machine_series.setdefault(m, set()).add(("poll", ""))
        self.observe_cycles(
            machine,
            errors=errors if error is not None else 0,
            overran=overran,
            missed=missed,
            lags=lags,
            kind=error,
        )

    def observe_cycles(
        self,
        machine: str,
        *,
        errors: int = 0,
        overran: int = 0,
        missed: int = 0,
        lags: Iterable[float] = (),
        kind: str | None = "failed",
    ) -> None:
        """Failed and overrun cycles, missed ticks and poll lags of a machine since the last call."""
        if errors > 0 or overran > 0 or missed > 0:
            m = safe_label(machine)
            series = self._machine_series.setdefault(m, set())
            if errors > 0 and kind is not None:
                k = safe_label(kind)
                self.poll_errors.labels(machine=m, kind=k).inc(errors)
                series.add(("error", k))
            if overran > 0:
                self.poll_errors.labels(machine=m, kind="overran").inc(overran)
                series.add(("error", "overran"))
            if missed > 0:
                self.missed_cycles.labels(machine=m).inc(missed)
                series.add(("missed", ""))
        observe = self.poll_lag.observe
        for lag in lags:
            observe(lag if lag > 0.0 else 0.0)

    def poll_series(self, machine: str) -> PollSeries:
        """A machine's poll duration and readings series, looked up once: the once-a-second update
        of 2,000 machines spent most of its time in ``labels()`` (a lock and a tuple per call)."""
        m = safe_label(machine)
        self._machine_series.setdefault(m, set()).update(
            {("poll", ""), ("reading", "good"), ("reading", "bad")}
        )
        return PollSeries(
            self.poll_duration.labels(machine=m),
            self.readings.labels(machine=m, quality="good"),
            self.readings.labels(machine=m, quality="bad"),
        )

    def count_readings(self, machine: str, n: int = 1, quality: str = "good") -> None:
        m = safe_label(machine)
        self.readings.labels(machine=m, quality=quality).inc(n)
        self._machine_series.setdefault(m, set()).add(("reading", quality))

    def count_event(self, event_type: str, n: int = 1) -> None:
        self.events.labels(type=safe_label(event_type)).inc(n)

    def count_workflow(self, workflow: str, outcome: str) -> None:
        self.workflow_executions.labels(workflow=safe_label(workflow), outcome=outcome).inc()

    def set_outbox(self, *, pending: int, in_flight: int, dead: int, oldest_pending_age: float) -> None:
        self.outbox_pending.set(pending)
        self.outbox_in_flight.set(in_flight)
        self.outbox_dead.set(dead)
        self.outbox_oldest_pending_age.set(max(0.0, oldest_pending_age))

    def set_held(self, waiting: int, lost: Mapping[str, int]) -> None:
        """Rows held in memory now, and the running totals of rows lost, by reason."""
        self.held_in_memory.set(waiting)
        for reason, total in lost.items():
            grew = total - self._lost_seen.get(reason, 0)
            if grew > 0:
                self.lost.labels(reason).inc(grew)
                self._lost_seen[reason] = total

    def observe_delivery(self, endpoint: str, outcome: str, latency: float | None = None) -> None:
        key = safe_label(endpoint)
        self.deliveries.labels(endpoint=key, outcome=outcome).inc()
        if latency is not None:
            self.delivery_latency.labels(endpoint=key).observe(max(0.0, latency))

    def set_mqtt_links(self, links: Iterable[tuple[str, bool, int]]) -> None:
        """(broker ``host:port``, connected, reconnects of that link so far) per open link; a broker
        no longer used drops its gauge."""
        current = {safe_label(broker): (up, n) for broker, up, n in links}
        for broker in set(self._reconnects_seen) - set(current):
            self.mqtt_connected.remove(broker)
            del self._reconnects_seen[broker]
        for broker, (up, n) in current.items():
            self.mqtt_connected.labels(broker=broker).set(1 if up else 0)
            counter = self.mqtt_reconnects.labels(broker=broker)  # present at 0 from the start
            # A new link to the same broker (a reload) counts from 0 again: only growth is added.
            grew = n - self._reconnects_seen.get(broker, 0)
            if grew > 0:
                counter.inc(grew)
            self._reconnects_seen[broker] = n

    def forget_machine(self, machine: str) -> None:
        """Drop a removed machine's series (after a reload) so dashboards do not show it forever."""
        m = safe_label(machine)
        self.set_unreadable(machine, None, None, None)
        for family, extra in self._machine_series.pop(m, set()):
            if family == "poll":
                self.poll_duration.remove(m)
            elif family == "error":
                self.poll_errors.remove(m, extra)
            elif family == "missed":
                self.missed_cycles.remove(m)
            else:
                self.readings.remove(m, extra)

    # -- exposition

    def render(self) -> bytes:
        """The Prometheus text exposition format (serve with ``CONTENT_TYPE``)."""
        return "".join(self.render_slices()).encode()

    def render_slices(self) -> Iterator[str]:
        """The same text in pieces: the runtime lets the loop run between them."""
        return text_slices(self._families)
