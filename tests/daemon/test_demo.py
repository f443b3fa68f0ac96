"""``edge-agent demo``: what a newcomer sees in the first 75 s, checked from its JSON summary line.

The demo runs the shipped ``config/`` against the simulators (scenario ``demo``) with a verifying
receiver; every seed example that can fire in that time must arrive with a valid signature.
"""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from tests.daemon.conftest import REPO

DEMO_SECONDS = 75
# The demo itself plus start-up and a clean stop of three processes on two busy cores.
DEMO_WITHIN = DEMO_SECONDS + 90


@pytest.mark.slow
async def test_demo_shows_every_kind_of_event_with_valid_signatures() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "demo", "--seconds", str(DEMO_SECONDS), "--quiet", "--json", cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), DEMO_WITHIN)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    summary_lines = [line for line in text.splitlines() if line.startswith('{"deliveries"')]
    assert summary_lines, f"no JSON summary; stdout:\n{text}\nstderr:\n{err.decode()}"
    summary = json.loads(summary_lines[-1])
    assert proc.returncode == 0, (summary, err.decode())

    assert summary["deliveries"] > 0
    assert summary["invalid"] == 0
    events = summary["events"]
    # config/workflows: "Machine stopped" (ACTIVE -> IDLE/ALARM), "Critical alarm" (1001), the
    # categorized downtime "Maintenance alert" (rule alarm_code 1001), the demo's minute sync and the
    # demo's manual "Quality inspection" trigger, and the demo's downtime log (downtime_started).
    for expected in (
        "machine_status_changed",
        "alarm_triggered",
        "downtime_started",
        "downtime_categorized",
        "scheduled",
        "manual_trigger",
    ):
        assert events.get(expected, 0) >= 1, (expected, summary, err.decode())
