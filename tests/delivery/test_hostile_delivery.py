"""Delivery against things that go wrong in unforeseen ways: an attempt that raises inside the HTTP
client, and a receiver that answers 200 and then trickles its body past the timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from agent.delivery.dispatcher import Dispatcher
from agent.delivery.outbox import Outbox
from agent.delivery.retry import Outcome, assess
from agent.delivery.senders import SendOutcome
from agent.delivery.settings import OutboxConfig
from agent.receiver import Receiver, start_receiver

from .conftest import T0, FakeClock, delivery, delivery_config, endpoint, run_until


@pytest.fixture
async def receiver(secret: str, clock: FakeClock) -> AsyncIterator[Receiver]:
    rec = await start_receiver(secret, now=clock)
    yield rec
    await rec.stop()


async def test_an_attempt_that_raises_is_a_failed_attempt_on_the_retry_schedule(
    outbox: Outbox, receiver: Receiver, secret: str, clock: FakeClock
) -> None:
    """aiohttp refuses a header value with \\r at send time (config validation now stops it earlier;
    this stands for any exception an attempt did not foresee). Before: the row went back at once and
    was retried in a loop, 1,739 tracebacks in 5 s."""
    bad = endpoint("wf#0", receiver.url, secret, headers={"X-Y": "a\rInjected: 1"})
    good = endpoint("wf#1", receiver.url + "fine", secret)
    cfg = delivery_config(retry_schedule=(0, 5, 300, 1800), max_attempts=10)
    d = Dispatcher(outbox, {"wf#0": bad, "wf#1": good}, cfg, clock=clock, sleep=clock.sleep, rand=lambda: 0.5)
    await d.start()
    try:
        with capture_logs() as logs:
            await outbox.enqueue([delivery(1), delivery(2, "wf#1")])
            d.wake()
            await run_until(clock, d, T0 + 400)
    finally:
        await d.stop(grace=0.1)
    detail = await outbox.get(1)
    assert detail is not None
    # Attempts at T0, T0+5 and T0+305: the schedule, not a tight loop.
    assert [round(a.at - T0) for a in detail.attempts] == [0, 5, 305]
    assert all(
        a.error_class == "internal" and a.error == "internal error: ValueError" for a in detail.attempts
    )
    assert detail.summary.state == "pending"
    assert [e["event"] for e in logs].count("delivery_internal_error") == 1
    # The other endpoint was not held up.
    other = await outbox.get(2)
    assert other is not None and other.summary.state == "delivered"
    assert [r.path for r in receiver.received] == ["/fine"]


def test_a_2xx_status_line_is_delivered_whatever_happens_to_the_body() -> None:
    sent = SendOutcome(200, 5.0, {}, b"partial", error_class="timeout", error="no response within 5 s")
    judged = assess(sent, 0.0)
    assert judged.result.outcome is Outcome.DELIVERED
    assert (judged.error_class, judged.error) == (None, None)
    # A failed status keeps the sender's own words after it (an MQTT broker's refusal reason).
    failed = assess(SendOutcome(403, 5.0, {}, b"", error="not authorized (0x87)"), 0.0)
    assert failed.result.outcome is Outcome.RETRY and failed.error == "HTTP 403: not authorized (0x87)"


async def test_a_200_whose_body_trickles_past_the_timeout_is_delivered_without_an_error(
    tmp_path: Path, secret: str
) -> None:
    release = asyncio.Event()

    async def trickle(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(status=200)
        resp.content_length = 1000
        await resp.prepare(request)
        await resp.write(b"o")
        await release.wait()  # the rest never comes while the agent waits
        return resp

    app = web.Application()
    app.router.add_post("/slow", trickle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    box = await Outbox.open(tmp_path / "o.sqlite3", OutboxConfig())
    attempted = asyncio.Event()
    d = Dispatcher(
        box,
        {"wf#0": endpoint("wf#0", f"http://127.0.0.1:{port}/slow", secret, timeout=0.5)},
        delivery_config(),
        on_result=lambda *_: attempted.set(),
    )
    await d.start()
    try:
        await box.enqueue([delivery(1)])
        d.wake()
        await asyncio.wait_for(attempted.wait(), 30)
        detail = await box.get(1)
    finally:
        release.set()
        await d.stop(grace=0.1)
        await runner.cleanup()
    assert detail is not None and detail.summary.state == "delivered"
    assert detail.summary.last_error is None
    (attempt,) = detail.attempts
    assert (attempt.status, attempt.error, attempt.error_class) == (200, None, None)
    await box.close()
