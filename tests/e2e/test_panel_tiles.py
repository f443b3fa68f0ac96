"""The operator panel's tiles follow every derived event at once, whatever derived it: a poll, a
timer, or an operator's category through the JSON API. The tick's sweep compares only a share of
the tiles each second (issue 13: comparing all of them was 8 % of the daemon at 5,000 machines),
so an event must not wait for it."""

from __future__ import annotations

from pathlib import Path

from agent.panel.feed import Subscriber
from agent.receiver import Receiver
from simulators.modbus_server import ModbusSimulator
from simulators.model import MachineState

from .conftest import past_clock, start_agent
from .test_seed_examples import fleet, run_then_stop


async def test_a_category_given_through_the_api_is_on_the_tile_when_the_answer_comes(
    tmp_path: Path, modbus_sim: ModbusSimulator, machines: dict[str, MachineState], receiver: Receiver
) -> None:
    clock = past_clock()
    agent = await start_agent(tmp_path, fleet(modbus_sim), {}, clock)
    try:
        feed = agent.runtime.feed
        await run_then_stop(agent, modbus_sim, machines["lathe-02"])
        assert feed.tile("lathe-02")["downtime"] is None, "a stop shorter than a micro-stop"
        clock.advance(5)
        await agent.runtime.pipeline.tick()  # a timer opens the downtime
        assert feed.tile("lathe-02")["downtime"] is not None, "on the tile as the timer fired"
        board = Subscriber()
        feed.subscribe(board, since=feed.published)
        downtime = feed.tile("lathe-02")["downtime"]
        assert downtime["category"] is None
        status, answer = await agent.api(
            "POST", f"/api/v1/downtimes/{downtime['id']}/category", {"category": "Tooling"}
        )
        assert status == 200, answer
        assert feed.tile("lathe-02")["downtime"]["category"] == "Tooling"
        assert board.tiles["lathe-02"]["downtime"]["category"] == "Tooling", "the open board was told"
    finally:
        await agent.stop()
