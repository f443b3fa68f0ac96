"""Operator panel benchmark: N machines, B open boards → the agent's extra CPU and memory, how fast a
board follows a machine, and the time to first render of the board in Chromium.

The real daemon (``python -m agent run``) runs as its own process on a generated config with N Modbus
machines (1 Hz polls, ``min_state: 0s``) on the bundled simulators, hosted by a child process of this
script (``--serve N``); this process plays the machine changes and holds the boards. Phases, each
``--seconds`` long, with the same machine changes (a few machines toggle READY ⇄ ACTIVE every second):

1. no board open: the agent's CPU (utime+stime from /proc) and RSS;
2. B boards open: each logs in with a viewer token, loads ``/panel/`` and holds ``/panel/events``
   (Server-Sent Events, read by aiohttp clients here: a browser per board would eat the same two cores);
   the latency is the arrival of a tile whose state word is the new one, minus the simulator change;
3. with the boards still open, headless Debian Chromium loads the board R times with a session cookie:
   first contentful paint and load event (``performance`` API), and the bytes on the wire.

    .venv/bin/python bench/panel.py
    .venv/bin/python bench/panel.py --machines 100 --boards 5 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from e2e import Agent, free_port, percentile  # noqa: E402

from simulators.model import Execution, MachineState  # noqa: E402

HOST = "127.0.0.1"
PER_SERVER = 200  # Modbus unit ids per simulator server (the protocol allows 247)
CHROMIUM = "/usr/bin/chromium"
TILE = re.compile(r'class="word">([A-Z_]+)<')
SINCE = re.compile(r'class="since" data-since="([0-9.]+)"')


def proc_usage(pid: int) -> tuple[float, float]:
    """CPU seconds used so far (user + system) and resident memory in MiB, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss_kb = next(
        int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )  # fmt: skip
    return cpu, rss_kb / 1024


def write_config(root: Path, n: int, ports: list[int], token: str) -> tuple[Path, str]:
    cfg = root / "config"
    for sub in ("machines", "workflows"):
        (cfg / sub).mkdir(parents=True, exist_ok=True)
    api_port = free_port()
    (cfg / "agent.yaml").write_text(
        f"agent: {{name: bench, state_dir: {root / 'state'}}}\n"
        "log: {level: warning, format: json}\n"
        f"api:\n  bind: {HOST}:{api_port}\n"
        f"  tokens: [{{name: wall, role: viewer, token: {token}}}]\n"
        "downtime_categories: [Tooling, Maintenance Required]\n"
    )
    for i in range(n):
        mid = f"m{i + 1:03d}"
        port, unit = ports[i // PER_SERVER], i % PER_SERVER + 1
        (cfg / "machines" / f"{mid}.yaml").write_text(
            f"id: {mid}\nname: Machine {i + 1:03d}\ngroup: Cell {i // 25 + 1}\nprofile: modbus-sim\n"
            f"modbus: {{host: {HOST}, port: {port}, unit: {unit}, timeout: 2s}}\npoll_interval: 1s\n"
            "status: {min_state: 0s}\n"
        )
    return cfg / "agent.yaml", f"http://{HOST}:{api_port}"


@dataclass
class Board:
    """One open board: a logged-in session holding the live stream."""

    session: aiohttp.ClientSession
    cookie: str
    seen: list[tuple[str, str, float]] = field(default_factory=list)  # machine, state word, wall time
    # Arrival minus the tile's status_since: the agent derived the change at a poll, and this is how
    # long it then took to reach the board (without the wait for the next 1 Hz poll).
    after_known: list[float] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    page_bytes: int = 0


async def open_board(url: str, token: str) -> Board:
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # unsafe: an IP host
    async with session.post(f"{url}/panel/login", data={"token": token}, allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()
        cookie = resp.cookies["edge_panel"].value
    async with session.get(
        f"{url}/panel/", headers={"Accept-Encoding": "gzip"}, allow_redirects=False
    ) as resp:
        assert resp.status == 200, resp.status
        board = Board(session, cookie, page_bytes=int(resp.headers.get("Content-Length") or 0))
        await resp.read()
    board.task = asyncio.create_task(read_stream(board, url))
    return board


async def close_boards(boards: list[Board]) -> None:
    for b in boards:
        if b.task is not None:
            b.task.cancel()
        await b.session.close()


async def read_stream(board: Board, url: str) -> None:
    async with board.session.get(f"{url}/panel/events", timeout=aiohttp.ClientTimeout(total=None)) as resp:
        event = ""
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "tile":
                msg = json.loads(line[6:])
                m = TILE.search(msg["html"])
                now = time.time()
                if m:
                    board.seen.append((msg["id"], m.group(1), now))
                since = SINCE.search(msg["html"])
                if since:
                    board.after_known.append(now - float(since.group(1)))


async def wait_all_known(url: str, token: str, n: int, within: float) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with asyncio.timeout(within), aiohttp.ClientSession(headers=headers) as session:
        while True:
            count, cursor = 0, None
            while True:
                params = {"limit": "200", **({"cursor": cursor} if cursor else {})}
                async with session.get(f"{url}/api/v1/machines", params=params) as resp:
                    page = await resp.json()
                count += sum(1 for m in page["items"] if m.get("status") == "IDLE")
                cursor = page.get("next_cursor")
                if not cursor:
                    break
            if count == n:
                return
            await asyncio.sleep(0.5)  # a bench warm-up, not a test


_turn = itertools.count()


class Simulators:
    """The Modbus simulators in a process of their own (``--serve N``): serving 500 machines' polls is
    most of a core in Python, and must not queue behind this process's board readers."""

    def __init__(self, proc: asyncio.subprocess.Process, ports: list[int], n: int) -> None:
        self.proc, self.ports, self.n = proc, ports, n
        self.active = [False] * n

    @classmethod
    async def start(cls, n: int) -> Simulators:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve", str(n),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        ports = json.loads(await proc.stdout.readline())
        return cls(proc, ports, n)

    def flip(self, i: int) -> bool:
        assert self.proc.stdin is not None
        self.active[i] = not self.active[i]
        self.proc.stdin.write(f"{i} {int(self.active[i])}\n".encode())
        return self.active[i]

    async def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        await self.proc.wait()


async def serve(n: int) -> None:
    """The simulator process: ports on stdout, then ``index 0|1`` lines on stdin set READY/ACTIVE."""
    from simulators.modbus_server import start_modbus_server

    states = [MachineState(name=f"m{i + 1:03d}") for i in range(n)]
    sims = []
    for first in range(0, n, PER_SERVER):
        chunk = states[first : first + PER_SERVER]
        sims.append(await start_modbus_server({u + 1: s for u, s in enumerate(chunk)}, HOST))
    print(json.dumps([s.port for s in sims]), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        i, on = (int(x) for x in line.split())
        states[i].execution = Execution.ACTIVE if on else Execution.READY
        sims[i // PER_SERVER].publish(i % PER_SERVER + 1)
    for s in sims:
        await s.stop()


async def churn(sims: Simulators, seconds: float, per_second: int, log: list[tuple[str, str, float]]) -> None:
    """Every second, ``per_second`` machines (round robin) flip READY ⇄ ACTIVE, spread over the second."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for step in range(int(seconds * per_second)):
        await asyncio.sleep(max(0.0, start + step / per_second - loop.time()))
        i = (next(_turn) * 7919) % sims.n  # spread over servers and cells; continues across phases
        active = sims.flip(i)
        log.append((f"m{i + 1:03d}", "ACTIVE" if active else "IDLE", time.time()))


async def readings(url: str, token: str) -> float:
    """Tag readings the agent has collected so far (its /metrics): did it keep up with its polls?"""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session, session.get(f"{url}/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("edge_agent_readings_total{")
    )


async def measure(pid: int, seconds: float, work: Any) -> tuple[float, float]:
    """CPU % of one core and peak RSS MiB of ``pid`` while ``work`` runs for ``seconds``."""
    cpu0, _ = proc_usage(pid)
    t0 = time.monotonic()
    peak = 0.0
    task = asyncio.create_task(work)
    while not task.done():
        peak = max(peak, proc_usage(pid)[1])
        await asyncio.wait({task}, timeout=0.5)
    await task
    cpu1, rss = proc_usage(pid)
    return 100 * (cpu1 - cpu0) / (time.monotonic() - t0), max(peak, rss)


async def settle(boards: list[Board], quiet: float = 3.0, limit: float = 30.0) -> None:
    """Until no board has received anything for ``quiet`` seconds: the last changes have arrived."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    last = -1
    while loop.time() < end:
        total = sum(len(b.seen) for b in boards)
        if total == last:
            return
        last = total
        await asyncio.sleep(quiet)


def latencies(changes: list[tuple[str, str, float]], boards: list[Board]) -> tuple[list[float], int]:
    out: list[float] = []
    missing = 0
    for board in boards:
        seen: dict[str, list[tuple[str, float]]] = {}
        for mid, word, at in board.seen:
            seen.setdefault(mid, []).append((word, at))
        for mid, word, at in changes:
            hit = next((t for w, t in seen.get(mid, []) if w == word and t >= at), None)
            if hit is None:
                missing += 1
            else:
                out.append(hit - at)
    return out, missing


async def first_render(url: str, cookie: str, runs: int) -> list[dict[str, float]]:
    if not os.access(CHROMIUM, os.X_OK):
        return []
    from playwright.async_api import async_playwright

    out = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"],
        )  # fmt: skip
        for _ in range(runs):
            # A fresh context each time: nothing cached, as on a tablet's first visit.
            ctx = await browser.new_context(viewport={"width": 1920, "height": 1080})
            await ctx.add_cookies([{"name": "edge_panel", "value": cookie, "url": url}])
            page = await ctx.new_page()
            await page.goto(f"{url}/panel/?kiosk=1", wait_until="load")
            timing = await page.evaluate(
                """() => {
                const nav = performance.getEntriesByType("navigation")[0];
                const res = performance.getEntriesByType("resource");
                return {load: nav.loadEventEnd,
                        bytes: nav.transferSize + res.reduce((a, r) => a + r.transferSize, 0),
                        html: nav.decodedBodySize};
            }"""
            )
            # Headless Chromium may paint after the load event: wait for the entry (buffered).
            timing["fcp"] = await page.evaluate(
                """() => new Promise(resolve => {
                new PerformanceObserver(list => {
                    const e = list.getEntriesByName("first-contentful-paint")[0];
                    if (e) resolve(e.startTime);
                }).observe({type: "paint", buffered: true});
                setTimeout(() => resolve(-1), 5000);
            })"""
            )
            out.append(timing)
            await ctx.close()
        await browser.close()
    return out


def fmt(values: list[float], scale: float = 1000.0, unit: str = "ms") -> str:
    if not values:
        return "-"
    return (
        f"p50 {statistics.median(values) * scale:.0f} {unit}, p95 {percentile(values, 0.95) * scale:.0f} {unit}, "
        f"max {max(values) * scale:.0f} {unit}"
    )


async def run(n: int, boards_n: int, seconds: float, per_second: int, renders: int, reps: int) -> int:
    sims = await Simulators.start(n)
    token = secrets.token_urlsafe(24)
    root = Path(tempfile.mkdtemp(prefix="edge-agent-panel-"))
    agent: Agent | None = None
    boards: list[Board] = []
    try:
        config, url = write_config(root, n, sims.ports, token)
        agent = await Agent.spawn(root, config)
        await agent.ready(120)
        pid = agent.proc.pid
        await wait_all_known(url, token, n, 180)
        print(f"{n} machines (Modbus, 1 Hz polls), {per_second} machine changes/s, {seconds:.0f} s per phase")

        quiet_cpu: list[float] = []
        live_cpu: list[float] = []
        quiet_rss: list[float] = []
        live_rss: list[float] = []
        lat: list[float] = []
        known: list[float] = []
        missing = 0
        page_bytes = 0
        cookie = ""
        for rep in range(reps):
            # Alternating phases, so load from outside (other work on the machine) hits both alike.
            r0, t0 = await readings(url, token), time.monotonic()
            cpu, rss = await measure(pid, seconds, churn(sims, seconds, per_second, []))
            quiet_rate = (await readings(url, token) - r0) / (time.monotonic() - t0)
            quiet_cpu.append(cpu)
            quiet_rss.append(rss)
            boards = [await open_board(url, token) for _ in range(boards_n)]
            await asyncio.sleep(1.0)
            changes: list[tuple[str, str, float]] = []
            r0, t0 = await readings(url, token), time.monotonic()
            cpu, rss = await measure(pid, seconds, churn(sims, seconds, per_second, changes))
            live_rate = (await readings(url, token) - r0) / (time.monotonic() - t0)
            live_cpu.append(cpu)
            live_rss.append(rss)
            await settle(boards)
            got, miss = latencies(changes, boards)
            lat += got
            missing += miss
            known += [x for b in boards for x in b.after_known]
            page_bytes, cookie = boards[0].page_bytes, boards[0].cookie
            print(
                f"  round {rep + 1}: no board {quiet_cpu[-1]:5.1f} % CPU {quiet_rss[-1]:6.1f} MiB "
                f"{quiet_rate:6.0f} readings/s | {boards_n} boards {live_cpu[-1]:5.1f} % CPU "
                f"{live_rss[-1]:6.1f} MiB {live_rate:6.0f} readings/s | load average {os.getloadavg()[0]:.1f}"
            )
            if rep + 1 < reps:
                await close_boards(boards)
                boards = []
        q, b = statistics.median(quiet_cpu), statistics.median(live_cpu)
        print(
            f"  median: no board {q:.1f} % of a core, {boards_n} boards {b:.1f} % -> extra {b - q:+.1f} points"
        )
        print(
            f"  RSS: {max(quiet_rss):.1f} MiB without boards, {max(live_rss):.1f} MiB with -> extra {max(live_rss) - max(quiet_rss):+.1f} MiB"
        )
        print(f"  simulator change -> tile at a board ({len(lat)} arrivals, {missing} missing): {fmt(lat)}")
        print(f"  agent knows (status_since) -> tile at a board: {fmt(known)}")
        print(f"  board HTML, gzip on the wire: {page_bytes / 1024:.1f} KiB")

        renders_out = await first_render(url, cookie, renders)
        if renders_out:
            fcp = [r["fcp"] / 1000 for r in renders_out if r["fcp"] >= 0]
            load = [r["load"] / 1000 for r in renders_out]
            print(
                f"  Chromium, board ({renders} loads, {boards_n} boards open): first contentful paint {fmt(fcp)}"
            )
            print(f"                                                 load event {fmt(load)}")
            print(
                f"  first-load weight: {renders_out[0]['bytes'] / 1024:.1f} KiB on the wire "
                f"(HTML {renders_out[0]['html'] / 1024:.1f} KiB decoded)"
            )
        else:
            print(f"  time to first render: skipped, {CHROMIUM} not installed")
        return 0 if lat else 1
    finally:
        await close_boards(boards)
        if agent is not None:
            await agent.stop()
        await sims.stop()
        shutil.rmtree(root, ignore_errors=True)


def feed_cost(n: int) -> None:
    """In-process: the live feed's cost per poll (no events, the common case) and per tick."""
    from agent.config.source import Problems, Section, load_yaml
    from agent.derive import Categories, MachineDeriver, parse_derivation
    from agent.events import MachineRef
    from agent.panel.feed import LiveFeed
    from drivers.base import Quality, Reading

    problems = Problems()
    profile = load_yaml(ROOT / "agent" / "profiles" / "modbus-sim.yaml", problems)
    tags = set(profile["tags"])
    spec = parse_derivation(Section(profile, file="modbus-sim.yaml", path="", problems=problems), tags)
    refs = {f"m{i:03d}": MachineRef(f"m{i:03d}", f"Machine {i}", "Cell") for i in range(n)}
    derivers = {mid: MachineDeriver(spec, ref, Categories.of(["Tooling"])) for mid, ref in refs.items()}
    now = [time.time()]
    feed = LiveFeed(lambda: refs, lambda: derivers, lambda: now[0])
    values = {t: 0 for t in tags} | {"execution": "READY", "mode": "AUTOMATIC", "estop": False}
    polls = 20_000
    mid = next(iter(derivers))
    batches = [
        [Reading(mid, t, v, Quality.GOOD, now[0] + i) for t, v in values.items()] for i in range(polls)
    ]
    for other, od in derivers.items():  # every machine with a status, as on a running plant
        first = [Reading(other, t, v, Quality.GOOD, now[0]) for t, v in values.items()]
        feed.samples(other, first, derived=bool(od.ingest(first, now[0])))
    t0 = time.perf_counter()
    for batch in batches:
        feed.samples(mid, batch, derived=False)
    per_poll = (time.perf_counter() - t0) / polls
    feed.observe_all()
    t0 = time.perf_counter()
    for _ in range(20):
        now[0] += 1
        feed.observe_all()
    per_tick = (time.perf_counter() - t0) / 20
    print(
        f"live feed, in process: {per_poll * 1e6:.1f} us per poll without events ({len(values)} tags), "
        f"{per_tick * 1e3:.1f} ms per tick for {n} machines"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--machines", type=int, default=500)
    p.add_argument("--boards", type=int, default=20)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--changes", type=int, default=10, help="machine changes per second")
    p.add_argument("--renders", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3, help="alternating no-board / boards phases")
    p.add_argument("--feed-only", action="store_true", help="only the in-process live feed figures")
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the simulator child process
    a = p.parse_args()
    if a.serve:
        asyncio.run(serve(a.serve))
        return 0
    feed_cost(a.machines)
    if a.feed_only:
        return 0
    if a.machines < 1 or a.boards < 1 or a.seconds <= 0 or a.changes < 1 or not math.isfinite(a.seconds):
        p.error("machines, boards, changes must be >= 1 and seconds > 0")
    return asyncio.run(run(a.machines, a.boards, a.seconds, a.changes, a.renders, max(1, a.rounds)))


if __name__ == "__main__":
    sys.exit(main())
