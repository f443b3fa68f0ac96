"""The webhook inspector: verifies, records, prints readably, and misbehaves on request."""

from __future__ import annotations

import asyncio
import io
import os
import random
import socket
import sys
import time
from pathlib import Path

import aiohttp

from agent.delivery.signing import generate_secret, signing_headers
from agent.receiver import start_receiver

REPO = Path(__file__).resolve().parents[2]


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


async def test_receive_cli_escapes_terminal_controls_and_caps_bodies(secret: str) -> None:
    """``edge-agent receive`` prints what strangers send: escape sequences must arrive as text."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RECV_TEST_SECRET": secret}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "receive", "--port", str(port), "--secret-env", "RECV_TEST_SECRET",
        cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        await asyncio.wait_for(proc.stderr.readline(), 30)  # "listening on ..."
        body = b'{"note": "\\u001b]0;pwned\\u0007 \\u009b2J \\u202e"}'
        headers = signing_headers("standard", [secret], "msg_esc", int(time.time()), body)
        assert await post(f"http://127.0.0.1:{port}/%1b%5b2J%1b]0;title%07", body, headers) == 200
        raw = b"\x1b[31mred\x1b[0m not json \x9b"
        assert await post(f"http://127.0.0.1:{port}/raw", raw, {}) == 401
        assert await post(f"http://127.0.0.1:{port}/big", b"x" * (2 * 1024 * 1024), {}) == 413
    finally:
        proc.terminate()
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode("utf-8", "replace")
    assert "VALID" in text and "/raw" in text
    for control in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert control not in text
    assert "\\u001b]0;pwned\\u0007" in text  # JSON's own escapes, kept as text
    assert "\\x9b2J" in text and "\\u202e" in text  # C1 CSI and a bidi override, escaped by us
    assert "\\x1b[31mred" in text  # the raw (non-JSON) body
    assert "\\x1b[2J\\x1b]0;title\\x07" in text  # the decoded path
