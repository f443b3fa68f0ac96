"""The dispatcher against a real aiohttp receiver on 127.0.0.1, with a clock the test moves."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from agent.commands.endpoint_cmd import endpoint_enable
from agent.delivery.dispatcher import Dispatcher
from agent.delivery.outbox import Outbox
from agent.delivery.settings import BreakerConfig, DeliveryConfig, EndpointConfig, OutboxConfig
from agent.receiver import Receiver, start_receiver

from .conftest import T0, FakeClock, delivery, delivery_config, endpoint, run_until, seqs


@pytest.fixture
async def receiver(secret: str, clock: FakeClock) -> AsyncIterator[Receiver]:
    rec = await start_receiver(secret, now=clock)
    yield rec
    await rec.stop()


Run = Callable[..., "asyncio.Future[Dispatcher]"]


@pytest.fixture
async def dispatchers() -> AsyncIterator[list[Dispatcher]]:
    made: list[Dispatcher] = []
    yield made
    for d in made:
        await d.stop(grace=0.1)


async def start(
    made: list[Dispatcher],
    outbox: Outbox,
    endpoints: dict[str, EndpointConfig],
    clock: FakeClock | None,
    config: DeliveryConfig,
) -> Dispatcher:
    if clock is None:
        d = Dispatcher(outbox, endpoints, config)
    else:
        d = Dispatcher(outbox, endpoints, config, clock=clock, sleep=clock.sleep, rand=lambda: 0.5)
    made.append(d)
    await d.start()
    return d


def official_signature_ok(secret: str, headers: dict[str, str], body: bytes) -> bool:
    ts = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
    expected = Webhook(secret).sign(headers["webhook-id"], ts, body.decode())
    return expected in headers["webhook-signature"].split(" ")


async def test_delivers_signed_requests_the_official_package_accepts(
    tmp_path: Path, secret: str, dispatchers: list[Dispatcher]
) -> None:
    rec = await start_receiver(secret)
    box = await Outbox.open(tmp_path / "o.sqlite3", OutboxConfig())
    try:
        ep = endpoint("wf#0", rec.url + "hook", secret, headers={"X-Plant": "cell-a"})
        d = await start(dispatchers, box, {"wf#0": ep}, None, delivery_config())
        await box.enqueue([delivery(i) for i in range(3)])
        d.wake()
        got = await rec.wait_for(3)
        for r in got:
            assert Webhook(secret).verify(r.body, r.headers) == r.json()
            assert r.headers["x-plant"] == "cell-a" and r.headers["content-type"] == "application/json"
            assert r.path == "/hook"
        assert seqs(got) == [0, 1, 2]  # FIFO by default
        await d.stop()
        c = await box.counts()
        assert (c.delivered, c.pending, c.in_flight) == (3, 0, 0)
        detail = await box.get(1)
        assert (
            detail is not None and detail.attempts[0].status == 200 and detail.attempts[0].response == b"ok"
        )
    finally:
        await box.close()
        await rec.stop()


async def test_retries_follow_the_schedule_then_dead(
    outbox: Outbox, receiver: Receiver, secret: str, clock: FakeClock, dispatchers: list[Dispatcher]
) -> None:
    receiver.status = 500
    cfg = delivery_config(retry_schedule=(0, 5, 300, 1800), max_attempts=4)
    d = await start(dispatchers, outbox, {"wf#0": endpoint("wf#0", receiver.url, secret)}, clock, cfg)
    await outbox.enqueue([delivery(1)])
    d.wake()
    # Step the clock to each wake-up the dispatcher asks for (retries and its maintenance ticks).
    for _ in range(200):
        deadline = await clock.settled(d)
        detail = await outbox.get(1)
        assert detail is not None
        if detail.summary.state == "dead":
            break
        clock.advance_to(deadline)
    sent = [int(r.headers["webhook-timestamp"]) - int(T0) for r in receiver.received]
    assert sent == [0, 5, 305, 2105]
    assert {r.headers["webhook-id"] for r in receiver.received} == {"msg_000001"}  # stable across retries
    assert all(official_signature_ok(secret, r.headers, r.body) for r in receiver.received)
    detail = await outbox.get(1)
    assert detail is not None
    assert detail.summary.state == "dead" and detail.summary.attempts == 4
    assert [a.status for a in detail.attempts] == [500, 500, 500, 500]
    assert d.stats.dead == 1


async def test_fifo_holds_later_rows_while_the_head_retries(
    outbox: Outbox, receiver: Receiver, secret: str, clock: FakeClock, dispatchers: list[Dispatcher]
) -> None:
    receiver.reply(500)
    d = await start(
        dispatchers, outbox, {"wf#0": endpoint("wf#0", receiver.url, secret)}, clock, delivery_config()
    )
    await outbox.enqueue([delivery(i) for i in range(5)])
    d.wake()
    deadline = await clock.settled(d)
    assert seqs(receiver.received) == [0]
    assert deadline == clock.now + 5
    clock.advance_to(deadline)
    await receiver.wait_for(6)
    await clock.settled(d)
    assert seqs(receiver.received) == [0, 0, 1, 2, 3, 4]


async def test_without_fifo_later_rows_overtake_a_failing_one(
    outbox: Outbox, receiver: Receiver, secret: str, clock: FakeClock, dispatchers: list[Dispatcher]
) -> None:
    receiver.reply(500)
    ep = endpoint("wf#0", receiver.url, secret, fifo=False, concurrency=1)
    d = await start(dispatchers, outbox, {"wf#0": ep}, clock, delivery_config())
    await outbox.enqueue([delivery(i) for i in range(3)])
    d.wake()
    await receiver.wait_for(3)
    await clock.settled(d)
    assert seqs(receiver.received) == [0, 1, 2]
    assert (await outbox.counts()).delivered == 2


async def test_circuit_breaker_sends_one_probe_at_a_time(
    outbox: Outbox, receiver: Receiver, secret: str, clock: FakeClock, dispatchers: list[Dispatcher]
) -> None:
    receiver.status = 500
    cfg = delivery_config(
        retry_schedule=(0, 10000),
        max_attempts=50,
        breaker=BreakerConfig(failures=3, cooldown=30, max_cooldown=600),
    )
    ep = endpoint("wf#0", receiver.url, secret, fifo=False, concurrency=1)
    d = await start(dispatchers, outbox, {"wf#0": ep}, clock, cfg)
    await outbox.enqueue([delivery(i) for i in range(20)])
    d.wake()
    deadline = await clock.settled(d)
    assert len(receiver.received) == 3  # then the breaker opened
    assert deadline == clock.now + 30
    clock.advance_to(deadline)
    await clock.settled(d)
    assert len(receiver.received) == 4  # exactly one probe
    clock.advance(30)
    await clock.settled(d)
    assert len(receiver.received) == 4  # cooldown doubled after a failed probe
    clock.advance(30)
    await clock.settled(d)
    assert len(receiver.received) == 5
    receiver.status = 200
    clock.advance(120)
    await receiver.wait_for(20)  # a successful probe closes the breaker: the other 15 flow
    await clock.settled(d)
    assert (await outbox.counts()).delivered == 15


async def test_a_hanging_endpoint_does_not_slow_a_healthy_one(
    tmp_path: Path, secret: str, dispatchers: list[Dispatcher]
) -> None:
    stuck = await start_receiver(secret, hang=True)
    healthy = await start_receiver(secret)
    box = await Outbox.open(tmp_path / "o.sqlite3", OutboxConfig())
    try:
        eps = {
            "a#0": endpoint("a#0", stuck.url, secret, timeout=60.0, fifo=False, concurrency=2),
            "b#0": endpoint("b#0", healthy.url, secret),
        }
        d = await start(dispatchers, box, eps, None, delivery_config())
        await box.enqueue([delivery(i, endpoint_key="a#0" if i % 2 else "b#0") for i in range(40)])
        d.wake()
        await healthy.wait_for(20)
        await stuck.wait_for(2)
        assert seqs(healthy.received) == list(range(0, 40, 2))
        assert len(stuck.received) == 2  # its concurrency limit, still hanging
        await d.stop(grace=0.05)
        c = await box.counts()
        assert (c.delivered, c.pending, c.in_flight) == (20, 20, 0)  # unfinished ones stay pending
        detail = await box.get(2)
        assert detail is not None and detail.summary.last_error == "interrupted by shutdown"
    finally:
        await box.close()
        await stuck.stop()
        await healthy.stop()


async def test_410_disables_the_endpoint_until_enabled_by_cli(
    tmp_path: Path, receiver: Receiver, secret: str, clock: FakeClock, dispatchers: list[Dispatcher]
) -> None:
    box = await Outbox.open(tmp_path / "outbox.sqlite3", OutboxConfig(), clock=clock)
    try:
        receiver.reply(410)
        d = await start(
            dispatchers, box, {"wf#0": endpoint("wf#0", receiver.url, secret)}, clock, delivery_config()
        )
        await box.enqueue([delivery(i) for i in range(3)])
        d.wake()
        await clock.settled(d)
        clock.advance(10)
        await clock.settled(d)
        assert len(receiver.received) == 1
        assert receiver.url in d.disabled
        assert receiver.url in await box.disabled_endpoints()
        page = await box.list(state="pending")
        assert len(page.items) == 3
        assert all((x.last_error or "").startswith("endpoint disabled") for x in page.items)
        # The CLI runs its own event loop and connection, as it would in another process.
        assert await asyncio.to_thread(endpoint_enable, tmp_path, receiver.url, out=io.StringIO()) == 0
        clock.advance(61)  # the next maintenance pass re-reads endpoint state
        await receiver.wait_for(4)
        await clock.settled(d)
        assert seqs(receiver.received) == [0, 0, 1, 2]
        assert (await box.counts()).delivered == 3
    finally:
        await box.close()


async def test_429_waits_retry_after_without_burning_attempts(
    outbox: Outbox, receiver: Receiver, secret: str, clock: FakeClock, dispatchers: list[Dispatcher]
) -> None:
    receiver.reply(429, headers={"Retry-After": "120"})
    d = await start(
        dispatchers, outbox, {"wf#0": endpoint("wf#0", receiver.url, secret)}, clock, delivery_config()
    )
    await outbox.enqueue([delivery(1)])
    d.wake()
    await clock.settled(d)
    detail = await outbox.get(1)
    assert detail is not None and detail.summary.attempts == 0 and detail.summary.last_status == 429
    assert detail.summary.due_at == T0 + 120
    await run_until(clock, d, T0 + 119.9)
    assert len(receiver.received) == 1
    await run_until(clock, d, T0 + 120)
    await receiver.wait_for(2)
    await clock.settled(d)
    assert int(receiver.received[1].headers["webhook-timestamp"]) == T0 + 120
    detail = await outbox.get(1)
    assert detail is not None and detail.summary.state == "delivered" and detail.summary.attempts == 1


async def test_abort_message_header_stops_retries(
    outbox: Outbox, receiver: Receiver, secret: str, clock: FakeClock, dispatchers: list[Dispatcher]
) -> None:
    receiver.reply(400, headers={"webhook-delivery": "abort-message"})
    d = await start(
        dispatchers, outbox, {"wf#0": endpoint("wf#0", receiver.url, secret)}, clock, delivery_config()
    )
    await outbox.enqueue([delivery(1)])
    d.wake()
    await clock.settled(d)
    detail = await outbox.get(1)
    assert detail is not None and detail.summary.state == "dead"
    assert "abort-message" in (detail.summary.last_error or "")


async def test_timeout_redirect_and_receiver_gone_are_retried(
    outbox: Outbox, receiver: Receiver, secret: str, clock: FakeClock, dispatchers: list[Dispatcher]
) -> None:
    receiver.reply_hang()
    receiver.reply(302, headers={"Location": "http://127.0.0.1:1/elsewhere"})
    ep = endpoint("wf#0", receiver.url, secret, timeout=0.3)
    d = await start(dispatchers, outbox, {"wf#0": ep}, clock, delivery_config(retry_schedule=(0, 5)))
    await outbox.enqueue([delivery(1)])
    d.wake()
    deadline = await clock.settled(d)
    receiver._release.set()  # let the hung handler finish
    clock.advance_to(deadline)
    await receiver.wait_for(2)
    deadline = await clock.settled(d)
    await receiver.stop()
    clock.advance_to(deadline)
    deadline = await clock.settled(d)
    await receiver.start()
    clock.advance_to(deadline)
    await receiver.wait_for(3)
    await clock.settled(d)
    detail = await outbox.get(1)
    assert detail is not None
    assert [a.error_class for a in detail.attempts] == ["timeout", "redirect", "connect", None]
    assert "not followed" in (detail.attempts[1].error or "")
    assert detail.summary.state == "delivered"


async def test_unconfigured_endpoint_rows_wait_until_configured(
    outbox: Outbox, receiver: Receiver, secret: str, clock: FakeClock, dispatchers: list[Dispatcher]
) -> None:
    d = await start(dispatchers, outbox, {}, clock, delivery_config())
    await outbox.enqueue([delivery(1, endpoint_key="old#0")])
    d.set_endpoints({})
    await clock.settled(d)
    detail = await outbox.get(1)
    assert detail is not None
    assert (detail.summary.state, detail.summary.last_error) == ("pending", "endpoint not configured")
    d.set_endpoints({"old#0": endpoint("old#0", receiver.url, secret)})
    await receiver.wait_for(1)
    await clock.settled(d)
    assert (await outbox.counts()).delivered == 1


async def test_dispatcher_sleeps_until_not_before_without_polling(
    outbox: Outbox, receiver: Receiver, secret: str, clock: FakeClock, dispatchers: list[Dispatcher]
) -> None:
    d = await start(
        dispatchers, outbox, {"wf#0": endpoint("wf#0", receiver.url, secret)}, clock, delivery_config()
    )
    await outbox.enqueue([delivery(1, not_before=clock.now + 45)])
    d.wake()
    deadline = await clock.settled(d)
    assert deadline == clock.now + 45 and receiver.received == []
    clock.advance_to(deadline)
    await receiver.wait_for(1)
    assert int(receiver.received[0].headers["webhook-timestamp"]) == int(deadline)


async def test_github_signature_mode(outbox: Outbox, clock: FakeClock, dispatchers: list[Dispatcher]) -> None:
    rec = await start_receiver("gh-shared-words", now=clock)
    try:
        ep = EndpointConfig(
            "wf#0",
            rec.url,
            (endpoint("x", "", "whsec_x").secrets[0].__class__("gh-shared-words", "t"),),
            "github",
        )
        d = await start(dispatchers, outbox, {"wf#0": ep}, clock, delivery_config())
        await outbox.enqueue([delivery(1)])
        d.wake()
        (got,) = await rec.wait_for(1)
        assert got.valid and got.headers["x-hub-signature-256"].startswith("sha256=")
    finally:
        await rec.stop()


async def test_real_clock_stop_is_prompt_when_idle(
    outbox: Outbox, receiver: Receiver, secret: str, dispatchers: list[Dispatcher]
) -> None:
    d = Dispatcher(outbox, {"wf#0": endpoint("wf#0", receiver.url, secret)}, delivery_config())
    await d.start()
    t = time.perf_counter()
    await d.stop()
    assert d.busy == 0 and time.perf_counter() - t < 5  # bounded, not a speed claim


async def test_results_are_reported_for_metrics(
    outbox: Outbox, receiver: Receiver, secret: str, clock: FakeClock
) -> None:
    seen: list[tuple[str, str, float | None]] = []
    receiver.reply(500)
    d = Dispatcher(
        outbox,
        {"wf#0": endpoint("wf#0", receiver.url, secret)},
        delivery_config(),
        clock=clock,
        sleep=clock.sleep,
        on_result=lambda *a: seen.append(a),
    )
    await d.start()
    try:
        await outbox.enqueue([delivery(1)])
        d.wake()
        await run_until(clock, d, T0 + 5)
        await receiver.wait_for(2)
        await clock.settled(d)
    finally:
        await d.stop()
    assert seen == [("wf#0", "retry", None), ("wf#0", "delivered", 5.0)]


async def test_a_throttled_probe_does_not_leave_the_breaker_stuck(
    outbox: Outbox, receiver: Receiver, secret: str, clock: FakeClock, dispatchers: list[Dispatcher]
) -> None:
    receiver.reply(500, times=2)
    receiver.reply(503, headers={"Retry-After": "60"})
    cfg = delivery_config(
        retry_schedule=(0, 5), max_attempts=50, breaker=BreakerConfig(failures=2, cooldown=30)
    )
    d = await start(dispatchers, outbox, {"wf#0": endpoint("wf#0", receiver.url, secret)}, clock, cfg)
    await outbox.enqueue([delivery(i) for i in range(3)])
    d.wake()
    await run_until(clock, d, T0 + 300)
    sent = [(r.status, int(r.headers["webhook-timestamp"]) - int(T0)) for r in receiver.received]
    # Two 500s open the breaker; the probe at +35 is throttled for 60 s; the next probe succeeds.
    assert sent == [(500, 0), (500, 5), (503, 35), (200, 95), (200, 95), (200, 95)]
    c = await outbox.counts()
    assert (c.delivered, c.pending, c.in_flight) == (3, 0, 0)


async def test_retry_after_zero_still_waits_the_minimum(
    outbox: Outbox, receiver: Receiver, secret: str, clock: FakeClock, dispatchers: list[Dispatcher]
) -> None:
    receiver.reply(429, headers={"Retry-After": "0"})
    d = await start(
        dispatchers, outbox, {"wf#0": endpoint("wf#0", receiver.url, secret)}, clock, delivery_config()
    )
    await outbox.enqueue([delivery(1)])
    d.wake()
    await clock.settled(d)
    detail = await outbox.get(1)
    assert detail is not None and detail.summary.due_at == T0 + 5
    await run_until(clock, d, T0 + 4.9)
    assert len(receiver.received) == 1
    await run_until(clock, d, T0 + 5)
    await receiver.wait_for(2)
    await clock.settled(d)
    assert int(receiver.received[1].headers["webhook-timestamp"]) == T0 + 5
    assert (await outbox.counts()).delivered == 1
