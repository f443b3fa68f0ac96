"""The webhook inspector: verifies, records, prints readably, and misbehaves on request."""

from __future__ import annotations

import io
import random
import time

import aiohttp

from agent.delivery.signing import generate_secret, signing_headers
from agent.receiver import start_receiver


async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
        return r.status


async def test_valid_and_forged_requests_are_told_apart_and_printed(secret: str) -> None:
    out = io.StringIO()
    rec = await start_receiver(secret, out=out)
    try:
        body = b'{"event": "alarm_triggered", "machine": {"id": "mill-01"}}'
        good = signing_headers("standard", [secret], "msg_ok", int(time.time()), body)
        forged = signing_headers("standard", [generate_secret()], "msg_bad", int(time.time()), body)
        assert await post(rec.url + "in", body, {**good, "Authorization": "Bearer t0ken"}) == 200
        assert await post(rec.url + "in", body, forged) == 401
    finally:
        await rec.stop()
    assert [r.valid for r in rec.received] == [True, False]
    assert rec.received[1].error == "no matching v1 signature"
    text = out.getvalue()
    assert "VALID   POST /in → 200" in text and "INVALID (no matching v1 signature)" in text
    assert '  "event": "alarm_triggered",' in text  # pretty JSON
    assert "authorization: <hidden>" in text and "t0ken" not in text


async def test_status_and_fail_rate_options(secret: str) -> None:
    rec = await start_receiver(secret, fail_rate=0.5, rng=random.Random(7))
    try:
        body = b"{}"
        codes = []
        for i in range(20):
            headers = signing_headers("standard", [secret], f"m{i}", int(time.time()), body)
            codes.append(await post(rec.url, body, headers))
        rec.status = 503
        headers = signing_headers("standard", [secret], "m-last", int(time.time()), body)
        last = await post(rec.url, body, headers)
    finally:
        await rec.stop()
    assert set(codes) == {200, 500} and 3 <= codes.count(500) <= 17
    assert last == 503
