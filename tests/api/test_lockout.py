"""Guessing tokens: after 10 wrong ones in a minute an address is refused (429, Retry-After) for a
minute, doubling per lockout up to 15 minutes, on the JSON API and the panel's login alike; a right
token forgives; the tokens themselves never reach the log."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from structlog.testing import capture_logs

from agent.api.lockout import Lockout
from agent.api.server import LOCKOUT, bound_port, create_app, start_api
from agent.api.settings import ApiConfig, RoleToken
from agent.config.source import Secret
from agent.panel.feed import LiveFeed
from agent.panel.routes import PanelContext, install_panel
from tests.workflows.rig import FakeClock, make_rig

TOKEN = "oper-token-0123456789-right"
WRONG = "oper-token-0123456789-wrong"


def test_ten_wrong_tokens_in_a_minute_lock_the_address_out_for_a_minute_then_two_and_so_on() -> None:
    clock = FakeClock(1000.0)
    lockout = Lockout(clock)
    for _ in range(9):
        assert lockout.failed("10.0.0.7") is None
    assert lockout.retry_after("10.0.0.7") is None, "nine mistakes are just mistakes"
    assert lockout.failed("10.0.0.7") == 60.0
    assert lockout.retry_after("10.0.0.7") == 60.0
    assert lockout.retry_after("10.0.0.8") is None, "other addresses are not affected"
    clock.now += 60
    assert lockout.retry_after("10.0.0.7") is None
    pauses = []
    for _ in range(6):
        for _ in range(9):
            lockout.failed("10.0.0.7")
        pauses.append(lockout.failed("10.0.0.7"))
        clock.now += pauses[-1] or 0
    assert pauses == [120.0, 240.0, 480.0, 900.0, 900.0, 900.0]


def test_wrong_tokens_spread_out_never_lock_and_a_right_one_forgives() -> None:
    clock = FakeClock(1000.0)
    lockout = Lockout(clock)
    for _ in range(50):  # a scraper with a stale token every 15 s
        assert lockout.failed("10.0.0.7") is None
        clock.now += 15
    for _ in range(9):
        lockout.failed("10.0.0.7")
    lockout.succeeded("10.0.0.7")
    assert lockout.failed("10.0.0.7") is None, "the count started again after the right token"


def test_a_flood_from_many_addresses_is_remembered_within_a_bound() -> None:
    lockout = Lockout(FakeClock(1000.0), max_addresses=100)
    for i in range(10_000):
        lockout.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(lockout) == 100


@asynccontextmanager
async def serving(tmp_path: Path, clock: FakeClock) -> AsyncIterator[str]:
    rig = await make_rig(tmp_path, [], FakeClock(time.time()), dispatch=False)
    operator = RoleToken("tablet", "operator", Secret(TOKEN, "test"))
    config = ApiConfig(enabled=True, host="127.0.0.1", port=0, tokens=(operator,))
    app = create_app(rig.pipeline, rig.outbox, config)
    app[LOCKOUT] = Lockout(clock)
    feed = LiveFeed(lambda: rig.pipeline.machines, lambda: rig.pipeline.derivers, rig.pipeline.now)
    install_panel(app, PanelContext(rig.pipeline, rig.outbox, None, feed, config, lambda: (), lambda: "lock"))
    runner = await start_api(app, config)
    try:
        yield f"http://127.0.0.1:{bound_port(runner)}"
    finally:
        await runner.cleanup()
        await rig.close()


async def test_the_api_answers_429_with_retry_after_to_a_guesser_even_for_the_right_token(
    tmp_path: Path,
) -> None:
    clock = FakeClock(1000.0)
    async with serving(tmp_path, clock) as base, aiohttp.ClientSession() as http:

        async def get(token: str) -> tuple[int, dict[str, str], str]:
            async with http.get(base + "/api/v1/machines", headers={"Authorization": f"Bearer {token}"}) as r:
                return r.status, dict(r.headers), await r.text()

        with capture_logs() as logs:
            statuses = [(await get(WRONG))[0] for _ in range(10)]
            status, headers, body = await get(TOKEN)
        assert statuses == [401] * 10
        assert status == 429 and headers["Retry-After"] == "60"
        assert "too many wrong tokens from 127.0.0.1; try again in 60 s" in body
        locked = [e for e in logs if e["event"] == "auth_locked_out"]
        assert [(e["remote"], e["seconds"]) for e in locked] == [("127.0.0.1", 60.0)]
        assert TOKEN not in repr(logs) and WRONG not in repr(logs)
        async with http.get(base + "/api/v1/machines") as r:
            assert r.status == 401, "no token at all is no guess: the usual answer"
        clock.now += 60
        assert (await get(TOKEN))[0] == 200


async def test_the_panel_login_is_locked_out_by_the_same_count(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    async with serving(tmp_path, clock) as base, aiohttp.ClientSession() as http:

        async def login(token: str) -> tuple[int, str]:
            async with http.post(base + "/panel/login", data={"token": token}, allow_redirects=False) as r:
                return r.status, await r.text()

        for _ in range(5):
            assert (await login(WRONG))[0] == 401
        async with http.get(base + "/api/v1/machines", headers={"Authorization": f"Bearer {WRONG}"}) as r:
            assert r.status == 401
        for _ in range(4):
            assert (await login(WRONG))[0] == 401
        status, page = await login(TOKEN)
        assert status == 429
        assert "Too many wrong tokens from this device. Try again in 60 seconds." in page
        clock.now += 61
        assert (await login(TOKEN))[0] == 303
