"""Under TLS the panel's session cookie is marked Secure: a browser never sends it over plain HTTP."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
from playwright.async_api import Browser

from agent.api.server import bound_port, create_app, start_api
from agent.api.settings import ApiConfig, RoleToken
from agent.config.source import Secret
from agent.panel.feed import LiveFeed
from agent.panel.routes import PanelContext, install_panel
from tests.panel.conftest import TOKENS
from tests.workflows.rig import FakeClock, make_rig


async def self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    proc = await asyncio.create_subprocess_exec(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await proc.wait() == 0
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
async def test_the_session_cookie_is_secure_under_tls(tmp_path: Path, browser: Browser) -> None:
    cert, key = await self_signed(tmp_path)
    rig = await make_rig(tmp_path, [], FakeClock(time.time()), dispatch=False)
    operator = RoleToken("tablet", "operator", Secret(TOKENS["operator"], "test"))
    config = ApiConfig(
        enabled=True, host="127.0.0.1", port=0, tokens=(operator,), tls_cert_file=cert, tls_key_file=key
    )
    app = create_app(rig.pipeline, rig.outbox, config)
    feed = LiveFeed(lambda: rig.pipeline.machines, lambda: rig.pipeline.derivers, rig.pipeline.now)
    install_panel(
        app, PanelContext(rig.pipeline, rig.outbox, None, feed, config, lambda: (), lambda: "tls-test")
    )
    runner = await start_api(app, config)
    ctx = await browser.new_context(ignore_https_errors=True)
    try:
        base = f"https://127.0.0.1:{bound_port(runner)}"
        page = await ctx.new_page()
        await page.goto(base + "/panel/login")
        await page.fill("input[name=token]", TOKENS["operator"])
        async with page.expect_navigation():
            await page.click("button[type=submit]")
        assert page.url == base + "/panel/"
        (cookie,) = [c for c in await ctx.cookies() if c["name"] == "edge_panel"]
        assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    finally:
        await ctx.close()
        await runner.cleanup()
        await rig.close()
