"""Property: whatever body a client sends to the operator API, the answer is never a 5xx.

Bodies are arbitrary JSON (deep, wide, with lone surrogates, huge numbers, wrong types in every
field), near-miss shapes of the real requests, and raw bytes. A 4xx in the API's error shape, or a
2xx for what happens to be a valid request, are both fine; a 500 means input reached code that
did not expect it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.api.server import bound_port, create_app, start_api
from agent.api.settings import ApiConfig
from agent.config.source import Secret
from tests.workflows.rig import FakeClock, hook, make_rig, workflows_from

TOKEN = "t0ken-for-fuzzing-0123456789"
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Every code point, lone surrogates included: JSON's \ud800 escape reaches the handlers as one.
# Lone surrogates are rare among all code points: offer them (and controls) explicitly as well.
odd = st.sampled_from(["\ud800", "\udfff", "\x00", "\x1b", "\u2028", "\ufeff"])
# (st.text never yields surrogates, whatever its alphabet: strings are built from characters here.)
any_text = st.lists(st.one_of(st.characters(codec=None, exclude_categories=()), odd), max_size=40).map(
    "".join
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    any_text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(any_text, inner, max_size=5)),
    max_leaves=30,
)
field = st.one_of(any_text, json_values)
operator = st.one_of(json_values, st.fixed_dictionaries({}, optional={"id": field, "name": field}))
# Mostly the real machine, so bodies get past the lookup to the code that builds the payload.
trigger_bodies = st.fixed_dictionaries(
    {"machine": st.one_of(st.just("mill-01"), json_values)}, optional={"operator": operator, "note": field}
)
category_bodies = st.fixed_dictionaries(
    {},
    optional={
        "category": st.one_of(st.just("Setup"), json_values),
        "notes": field,
        "operator": operator,
    },
)


@pytest.fixture
async def api_url(tmp_path: Path) -> AsyncIterator[str]:
    flows = workflows_from(
        tmp_path, {"qa": "name: QA\ntrigger: {type: manual}\n" + hook("http://127.0.0.1:9/qa")}
    )
    # Long in the past: a throttled trigger is a 429, not a reason for hypothesis to see flakiness.
    rig = await make_rig(tmp_path, flows, FakeClock(time.time() - 86400), dispatch=False)
    config = ApiConfig(enabled=True, host="127.0.0.1", port=0, token=Secret(TOKEN, "test"), max_body=65536)
    runner = await start_api(create_app(rig.pipeline, rig.outbox, config), config)
    try:
        yield f"http://127.0.0.1:{bound_port(runner)}"
    finally:
        await runner.cleanup()
        await rig.close()


async def send(url: str, path: str, body: bytes) -> int:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http, http.post(url + path, data=body, headers=headers) as resp:
        data: Any = await resp.json(content_type=None)
        if resp.status >= 400:
            assert set(data) == {"error"} and data["error"]["code"], data
        return resp.status


def encoded(value: Any) -> bytes:
    return json.dumps(value).encode()  # ensure_ascii: lone surrogates travel as \ud800 escapes


@FUZZ
@given(body=st.one_of(trigger_bodies, json_values))
@example(body={"machine": "mill-01", "note": "\ud800"})  # issue 10: was a 500
async def test_trigger_never_answers_5xx(api_url: str, body: Any) -> None:
    assert await send(api_url, "/api/v1/workflows/QA/trigger", encoded(body)) < 500


@FUZZ
@given(body=st.one_of(category_bodies, json_values), downtime=any_text)
async def test_categorize_never_answers_5xx(api_url: str, body: Any, downtime: str) -> None:
    path = "/api/v1/downtimes/" + (quote(downtime.encode("utf-8", "surrogatepass"), safe="") or "x")
    assert await send(api_url, path + "/category", encoded(body)) < 500


@FUZZ
@given(raw=st.binary(max_size=2000))
async def test_raw_bytes_never_answer_5xx(api_url: str, raw: bytes) -> None:
    assert await send(api_url, "/api/v1/workflows/QA/trigger", raw) < 500
