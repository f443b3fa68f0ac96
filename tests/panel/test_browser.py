"""The operator panel in a real browser (headless Debian Chromium) against the running agent, the
Modbus simulator and a receiver that verifies every webhook's signature."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

from playwright.async_api import Page, expect

from agent.receiver import Receiver, start_receiver
from simulators.model import Alarm, Execution, OperationMode
from tests.e2e.conftest import DAY, SECRET, FakeClock, at_path, payload, wait_at
from tests.panel.conftest import (
    HOSTILE,
    PAGE_WEIGHT,
    QUALITY,
    SMALL_TARGETS,
    TOKENS,
    PanelAgent,
    login,
    screenshot_dir,
    show,
    start_panel_agent,
)

LIMIT_MS = 10_000  # a hang guard only; bench/panel.py measures how fast the board really follows


async def csrf_of(page: Page) -> str:
    value = await page.locator("input[name=csrf]").first.get_attribute("value")
    assert value
    return value


async def test_a_wrong_token_is_refused_and_each_role_sees_its_own_pages(agent: PanelAgent, new_page) -> None:
    page = await new_page()
    await page.goto(agent.url + "/")
    assert page.url.endswith("/panel/login?next=/panel/"), "an anonymous visitor is sent to the login"
    await page.fill("input[name=token]", "not-a-token-at-all-0000")
    resp_status = None

    async def remember(resp) -> None:  # type: ignore[no-untyped-def]
        nonlocal resp_status
        if resp.url.endswith("/panel/login") and resp.request.method == "POST":
            resp_status = resp.status

    page.on("response", remember)
    async with page.expect_navigation():
        await page.click("button[type=submit]")
    assert resp_status == 401
    await expect(page.get_by_role("alert")).to_have_text("That token is not accepted.")

    viewer = await new_page()
    await login(viewer, agent.url, "viewer")
    await expect(viewer.locator("#tile-mill-01")).to_be_visible()
    assert await viewer.get_by_role("link", name="Downtimes").count() == 0
    resp = await viewer.goto(agent.url + "/panel/downtimes")
    assert resp is not None and resp.status == 403
    await expect(viewer.locator("h1")).to_have_text("Not allowed")

    operator = await new_page()
    await login(operator, agent.url, "operator")
    resp = await operator.goto(agent.url + "/panel/downtimes")
    assert resp is not None and resp.status == 200
    resp = await operator.goto(agent.url + "/panel/deliveries")
    assert resp is not None and resp.status == 200
    cookies = await operator.context.cookies()
    session = next(c for c in cookies if c["name"] == "edge_panel")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert not session["secure"], "plain HTTP: Secure only under TLS (tests/panel/test_tls.py)"
    # The token itself is never kept in the browser.
    assert all(TOKENS["operator"] not in c["value"] for c in cookies)


async def test_the_board_follows_the_machine_without_a_reload(agent: PanelAgent, new_page, sim) -> None:
    show(sim, 1, execution=Execution.READY)
    await agent.wait_until(lambda: agent.deriver("mill-01").status == "IDLE", "mill-01 IDLE")
    page = await new_page()
    await login(page, agent.url, "viewer")
    tile = page.locator("#tile-mill-01")
    await expect(tile.locator(".word")).to_have_text("IDLE")
    # The page's document stays the same: only the live stream can change the tile.
    await page.evaluate("window.__same_document = true")
    show(sim, 1, execution=Execution.ACTIVE)
    await expect(tile.locator(".word")).to_have_text("ACTIVE", timeout=LIMIT_MS)
    await expect(tile).to_have_class(re.compile(r"\bst-active\b"))
    assert await page.evaluate("window.__same_document") is True
    show(sim, 1, execution=Execution.READY)
    await expect(tile.locator(".word")).to_have_text("IDLE", timeout=LIMIT_MS)
    await expect(tile.locator(".downtime")).to_contain_text("not categorized", timeout=LIMIT_MS)


async def test_a_change_between_the_pages_render_and_its_stream_still_reaches_the_board(
    agent: PanelAgent, new_page, sim
) -> None:
    """The stream request is held until the machine has changed: the page was rendered before the
    change and subscribed after it, the window a slow tablet or a dropped Wi-Fi reconnect opens."""
    show(sim, 2, execution=Execution.READY)
    await agent.wait_until(lambda: agent.deriver("lathe-02").status == "IDLE", "lathe-02 IDLE")
    page = await new_page()
    await login(page, agent.url, "viewer")
    changed = asyncio.Event()

    async def hold(route) -> None:  # type: ignore[no-untyped-def]
        await changed.wait()
        await route.continue_()

    await page.route("**/panel/events*", hold)
    await page.reload()
    tile = page.locator("#tile-lathe-02")
    await expect(tile.locator(".word")).to_have_text("IDLE")
    try:
        show(sim, 2, execution=Execution.ACTIVE)
        await agent.wait_until(lambda: agent.deriver("lathe-02").status == "ACTIVE", "lathe-02 ACTIVE")
        changed.set()
        await expect(tile.locator(".word")).to_have_text("ACTIVE", timeout=LIMIT_MS)
        resp = await page.request.get(agent.url + "/panel/events?since=yesterday")
        assert resp.status == 400
        assert "since must be a whole number" in await resp.text()
    finally:
        show(sim, 2, execution=Execution.READY)


async def test_an_alarm_text_with_markup_stays_text(agent: PanelAgent, new_page, sim) -> None:
    page = await new_page()
    await login(page, agent.url, "operator")
    show(sim, 2, alarms={7777: Alarm(7777, "ignored: the machine file names the text", 500)})
    try:
        tile = page.locator("#tile-lathe-02")
        await expect(tile.locator(".alarm").first).to_contain_text(HOSTILE, timeout=LIMIT_MS)
        assert await page.evaluate("window.__pwned === undefined")
        assert await tile.locator("script, img").count() == 0
        # A fresh page renders it on the server: inert there too.
        await page.goto(agent.url + "/panel/machines/lathe-02")
        await expect(page.get_by_text(HOSTILE).first).to_be_visible()
        assert await page.evaluate("window.__pwned === undefined")
    finally:
        show(sim, 2, alarms={})  # the module's other tests share this machine
    await expect(page.locator("#tile-lathe-02 .alarm")).to_have_count(0, timeout=LIMIT_MS)


async def test_categorizing_in_the_browser_sends_the_operators_name(
    agent: PanelAgent, new_page, sim, receiver: Receiver
) -> None:
    show(sim, 1, execution=Execution.ACTIVE)
    await agent.wait_until(lambda: agent.deriver("mill-01").status == "ACTIVE", "mill-01 ACTIVE")
    show(sim, 1, execution=Execution.STOPPED)
    await agent.wait_until(lambda: agent.deriver("mill-01").open_downtime is not None, "a downtime")
    downtime_id = agent.deriver("mill-01").open_downtime.id
    before = len(at_path(receiver, "/categorized"))

    page = await new_page(820, 1180)  # a 10-inch tablet, portrait
    await login(page, agent.url, "operator", operator="Jane <b>Doe</b>", op_id="op-77")
    await page.locator("#tile-mill-01 .downtime a.btn").click()
    card = page.locator(f"#dt-{downtime_id}")
    await expect(card).to_be_visible()
    await card.locator("select[name=category]").select_option("Tooling")
    await card.locator("input[name=notes]").fill("insert chipped")
    async with page.expect_navigation():
        await card.get_by_role("button", name="Categorize").click()
    await expect(page.get_by_role("status")).to_contain_text("Categorized as Tooling")

    got = await wait_at(receiver, "/categorized", before + 1)
    body = payload(got[-1])
    assert body["event"] == "downtime_categorized"
    assert body["machine"]["id"] == "mill-01"
    assert body["downtime"]["id"] == downtime_id
    assert body["downtime"]["category"] == "Tooling"
    assert body["operator"] == {"id": "op-77", "name": "Jane <b>Doe</b>"}
    assert agent.deriver("mill-01").open_downtime.category == "Tooling"


async def test_quality_inspection_button_sends_a_manual_trigger(
    agent: PanelAgent, new_page, receiver: Receiver
) -> None:
    before = len(at_path(receiver, "/quality"))
    page = await new_page(1280, 800)
    await login(page, agent.url, "operator", operator="John Smith", op_id="op456")
    await page.goto(agent.url + "/panel/workflows?machine=lathe-02")
    form = page.locator("form.manual", has=page.get_by_role("heading", name=QUALITY))
    await form.locator("input[name=note]").fill("burr on part 12")
    async with page.expect_navigation():
        await form.get_by_role("button", name=QUALITY).click()
    await expect(page.get_by_role("status")).to_contain_text(f"{QUALITY} sent for lathe-02")
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=QUALITY, exact=True))
    await expect(row).to_contain_text("lathe-02 · queued")
    got = await wait_at(receiver, "/quality", before + 1)
    body = payload(got[-1])
    assert body["event"] == "manual_trigger"
    assert body["machine"]["id"] == "lathe-02"
    assert body["operator"] == {"id": "op456", "name": "John Smith"}
    assert body["note"] == "burr on part 12"


async def test_a_viewer_cannot_categorize_and_no_post_passes_without_the_csrf_token(
    agent: PanelAgent, new_page, sim
) -> None:
    show(sim, 2, execution=Execution.ACTIVE)
    await agent.wait_until(lambda: agent.deriver("lathe-02").status == "ACTIVE", "lathe-02 ACTIVE")
    show(sim, 2, execution=Execution.STOPPED)
    await agent.wait_until(lambda: agent.deriver("lathe-02").open_downtime is not None, "a downtime")
    dt = agent.deriver("lathe-02").open_downtime.id
    url = f"{agent.url}/panel/downtimes/{dt}/category"

    viewer = await new_page()
    await login(viewer, agent.url, "viewer")
    resp = await viewer.request.post(url, form={"csrf": await csrf_of(viewer), "category": "Tooling"})
    assert resp.status == 403
    assert "this needs operator" in await resp.text()

    operator = await new_page()
    await login(operator, agent.url, "operator")
    resp = await operator.request.post(url, form={"category": "Tooling"})
    assert resp.status == 403
    resp = await operator.request.post(url, form={"category": "Tooling", "csrf": "guessed"})
    assert resp.status == 403
    assert agent.deriver("lathe-02").open_downtime.category is None

    # The JSON API keeps bearer tokens, with the same roles.
    api = operator.request
    r = await api.post(
        url.replace("/panel/downtimes/", "/api/v1/downtimes/"),
        data=json.dumps({"category": "Tooling"}),
        headers={"Authorization": f"Bearer {TOKENS['viewer']}", "Content-Type": "application/json"},
    )
    assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden"
    r = await api.get(agent.url + "/api/v1/machines", headers={"Authorization": f"Bearer {TOKENS['viewer']}"})
    assert r.status == 200


async def test_reload_keeps_the_session_and_a_restart_asks_to_log_in_again(
    tmp_path: Path, new_page, sim, receiver: Receiver
) -> None:
    first = await start_panel_agent(tmp_path, sim, receiver)
    try:
        page = await new_page()
        await login(page, first.url, "operator")
        await page.reload()
        await expect(page.locator("#tile-mill-01")).to_be_visible()
        assert page.url.endswith("/panel/")
    finally:
        await first.runtime.stop(grace=1.0)
    second = await start_panel_agent(tmp_path, sim, receiver, port=first.port)
    try:
        await page.reload()
        assert "/panel/login" in page.url, "sessions live in memory: after a restart, log in again"
        await page.fill("input[name=token]", TOKENS["operator"])
        async with page.expect_navigation():
            await page.click("button[type=submit]")
        await expect(page.locator("#tile-mill-01")).to_be_visible()
    finally:
        await second.runtime.stop(grace=1.0)


async def test_every_view_fits_the_weight_budget_has_finger_sized_targets_and_is_captured(
    agent: PanelAgent, new_page, sim, tmp_path: Path
) -> None:
    out = screenshot_dir(tmp_path)
    show(sim, 1, execution=Execution.ACTIVE, part_count=42)
    show(sim, 2, alarms={1001: Alarm(1001, "spindle overload", 800)})
    await agent.wait_until(lambda: agent.deriver("lathe-02").status == "ALARM", "lathe-02 in ALARM")
    page = await new_page(1280, 860)
    await login(page, agent.url, "admin", operator="Plant IT")
    views = {
        "board": "/panel/",
        "machine": "/panel/machines/mill-01",
        "downtimes": "/panel/downtimes",
        "workflows": "/panel/workflows",
        "deliveries": "/panel/deliveries",
    }
    for name, path in views.items():
        resp = await page.goto(agent.url + path)
        assert resp is not None and resp.status == 200, path
        await page.wait_for_load_state("load")
        weight = await page.evaluate(PAGE_WEIGHT)
        assert 0 < weight <= 150 * 1024, f"{path}: {weight} bytes on first load"
        assert await page.evaluate(SMALL_TARGETS) == [], path
        if name != "machine":  # the machine page's picture comes from a whole shift, below
            await page.screenshot(path=str(out / f"panel-{name}.png"), full_page=name != "board")
    kiosk = await new_page(1920, 1080)
    await login(kiosk, agent.url, "viewer")
    await kiosk.goto(agent.url + "/panel/?kiosk=1")
    await kiosk.screenshot(path=str(out / "panel-kiosk.png"))
    assert {p.name for p in out.glob("panel-*.png")} >= {
        f"panel-{n}.png" for n in views if n != "machine"
    } | {"panel-kiosk.png"}
    show(sim, 2, alarms={})


async def test_only_an_admin_retries_a_failed_delivery_and_enables_an_endpoint_gone_with_410(
    tmp_path: Path, new_page, sim
) -> None:
    failing = await start_receiver(SECRET, status=500)  # quality inspection: fails for good
    gone = await start_receiver(SECRET, status=410)  # downtime categorized: the endpoint is gone
    agent = await start_panel_agent(tmp_path, sim, failing, categorized=gone)
    outbox = agent.runtime.outbox
    try:
        operator = await new_page()
        await login(operator, agent.url, "operator", operator="Jane")
        await operator.goto(agent.url + "/panel/workflows")
        form = operator.locator("form.manual", has=operator.get_by_role("heading", name=QUALITY))
        async with operator.expect_navigation():
            await form.get_by_role("button", name=QUALITY).click()
        show(sim, 2, execution=Execution.ACTIVE)
        await agent.wait_until(lambda: agent.deriver("lathe-02").status == "ACTIVE", "lathe-02 ACTIVE")
        show(sim, 2, execution=Execution.STOPPED)
        await agent.wait_until(lambda: agent.deriver("lathe-02").open_downtime is not None, "a downtime")
        dt = agent.deriver("lathe-02").open_downtime.id
        await operator.goto(agent.url + "/panel/downtimes")
        resp = await operator.request.post(
            f"{agent.url}/panel/downtimes/{dt}/category",
            form={"csrf": await csrf_of(operator), "category": "Tooling"},
        )
        assert resp.ok

        async def settled() -> bool:
            dead = (await outbox.list(state="dead", limit=5)).items
            return bool(dead) and gone.url + "categorized" in await outbox.disabled_endpoints()

        for _ in range(100):  # the dispatcher's retries and 410 handling, bounded
            if await settled():
                break
            await asyncio.sleep(0.1)
        assert await settled(), "the 500s exhaust the retries and the 410 disables its endpoint"
        dead = (await outbox.list(state="dead", limit=5)).items
        assert [d.url for d in dead] == [failing.url + "quality"]

        await operator.goto(agent.url + "/panel/deliveries")
        await expect(operator.get_by_text("disabled: 410 Gone at attempt 1")).to_be_visible()
        assert await operator.get_by_role("button", name="Enable").count() == 0
        assert await operator.get_by_role("button", name="Retry").count() == 0
        resp = await operator.request.post(
            agent.url + "/panel/endpoints/enable",
            form={"csrf": await csrf_of(operator), "url": gone.url + "categorized"},
        )
        assert resp.status == 403
        assert gone.url + "categorized" in await outbox.disabled_endpoints()

        admin = await new_page()
        await login(admin, agent.url, "admin")
        await admin.goto(agent.url + "/panel/deliveries")
        held = len(gone.received)
        async with admin.expect_navigation():
            await admin.get_by_role("button", name="Enable").click()
        await expect(admin.get_by_role("status")).to_have_text("Endpoint enabled.")
        for _ in range(100):  # the held delivery goes out again at once, bounded
            if len(gone.received) > held:
                break
            await asyncio.sleep(0.1)
        assert len(gone.received) > held, "re-enabled: the held delivery is sent again"
        sent = len(failing.received)
        async with admin.expect_navigation():
            await admin.get_by_role("button", name="Retry").click()
        await expect(admin.get_by_role("status")).to_have_text(f"Delivery {dead[0].id} will be sent again.")
        for _ in range(100):  # the dispatcher sends it again, bounded
            if len(failing.received) > sent:
                break
            await asyncio.sleep(0.1)
        assert len(failing.received) > sent
    finally:
        await agent.runtime.stop(grace=1.0)
        await failing.stop()
        await gone.stop()


async def test_a_shift_is_drawn_on_the_machine_timeline(
    tmp_path: Path, new_page, sim, receiver: Receiver
) -> None:
    """The agent's clock walks through a shift (yesterday, from 06:00) while the simulator plays it; the
    timeline shows each state, the downtimes with the categories given in the browser, and the alarm."""
    day = (int(time.time()) // DAY - 1) * DAY
    clock = FakeClock(day + 6 * 3600)
    show(sim, 1, execution=Execution.READY, alarms={}, mode=OperationMode.AUTOMATIC)
    agent = await start_panel_agent(tmp_path, sim, receiver, clock=clock)
    mill = agent.deriver("mill-01")
    page = await new_page(1280, 900)
    await login(page, agent.url, "operator", operator="Jane Doe", op_id="op-77")

    async def play(status: str, minutes: float, category: str | None = None, **state: Any) -> None:
        show(sim, 1, **state)
        await agent.wait_until(lambda: mill.status == status, f"mill-01 {status}")
        if category is not None:
            dt = mill.open_downtime
            await page.goto(agent.url + f"/panel/downtimes?focus={dt.id}")
            card = page.locator(f"#dt-{dt.id}")
            await card.locator("select[name=category]").select_option(category)
            async with page.expect_navigation():
                await card.get_by_role("button", name="Categorize").click()
        clock.advance(minutes * 60)

    try:
        await play("ACTIVE", 55, execution=Execution.ACTIVE)
        await play("IDLE", 12, "Waiting for Material", execution=Execution.READY)
        await play("ACTIVE", 95, execution=Execution.ACTIVE)
        await play("ALARM", 18, "Maintenance Required", alarms={1001: Alarm(1001, "spindle overload", 800)})
        await play("ACTIVE", 70, alarms={}, execution=Execution.ACTIVE)
        await play("SETUP", 35, "Tooling", mode=OperationMode.SETUP)
        await play("ACTIVE", 50, mode=OperationMode.AUTOMATIC)
        await play("IDLE", 9, execution=Execution.READY)
        await page.goto(agent.url + "/panel/machines/mill-01")
        timeline = page.locator("#timeline")
        states = await timeline.locator(".lane").nth(0).locator(".seg").all_inner_texts()
        assert states[-8:] == ["ACTIVE", "IDLE", "ACTIVE", "ALARM", "ACTIVE", "SETUP", "ACTIVE", "IDLE"]
        downtimes = timeline.locator(".lane").nth(1).locator(".seg")
        titles = [await d.get_attribute("title") for d in await downtimes.all()]
        assert [t.split(",")[0] for t in titles if t] == [
            "Waiting for Material", "Maintenance Required", "Tooling", "uncategorized"
        ]  # fmt: skip
        assert titles[0] == "Waiting for Material, 06:55–07:07"
        await expect(timeline.locator(".lane").nth(2)).to_contain_text("1001 Spindle overload")
        await page.screenshot(path=str(screenshot_dir(tmp_path) / "panel-machine.png"), full_page=True)
    finally:
        await agent.runtime.stop(grace=1.0)
        show(sim, 1, execution=Execution.READY, alarms={}, mode=OperationMode.AUTOMATIC)
