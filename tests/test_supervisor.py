"""The supervisor keeps parts alive: a failing part is restarted with backoff and never stops another."""

from __future__ import annotations

import asyncio

import pytest

from agent.supervisor import Supervisor


async def test_a_failing_part_is_restarted_and_its_error_kept_while_a_healthy_part_runs_on() -> None:
    sup = Supervisor(backoff_start=0.01, backoff_max=0.02)
    attempts = 0
    healthy_ticks = 0
    recovered = asyncio.Event()

    async def flaky() -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise RuntimeError(f"device bug #{attempts}")
        recovered.set()
        await asyncio.Event().wait()  # runs from now on

    async def healthy() -> None:
        nonlocal healthy_ticks
        while True:
            healthy_ticks += 1
            await asyncio.sleep(0.001)

    sup.start("flaky", flaky)
    sup.start("healthy", healthy)
    try:
        async with asyncio.timeout(10):
            await recovered.wait()
        state = sup.parts["flaky"]
        assert (attempts, state.restarts) == (3, 2)
        assert state.last_error == "RuntimeError: device bug #2"
        assert sup.parts["healthy"].restarts == 0 and healthy_ticks > 0
    finally:
        await sup.stop_all()
    assert sup.parts == {}


async def test_a_part_cannot_be_started_twice() -> None:
    sup = Supervisor()
    sup.start("ticker", asyncio.Event().wait)
    try:
        with pytest.raises(RuntimeError, match="already running"):
            sup.start("ticker", asyncio.Event().wait)
    finally:
        await sup.stop_all()
