"""The operator API and its CLI against real parts: pipeline, tmp_path outbox, dispatcher, receiver."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent.api.client import ApiClient, ApiRequestError
from agent.api.server import add_public_route, bound_port, create_app, start_api
from agent.api.settings import ApiConfig
from agent.cli import build_parser
from agent.commands import workflow_cmd
from agent.config.source import Secret
from drivers.base import Quality, Reading
from tests.workflows.rig import (
    MILL,
    OPERATOR_SEED,
    FakeClock,
    Receiver,
    Rig,
    body_of,
    hook,
    make_rig,
    poll,
    readings,
    workflows_from,
)

TOKEN = "t0ken-for-tests-0123456789"
MAX_BODY = 4096


@dataclass
class Api:
    rig: Rig
    receiver: Receiver
    url: str
    config: ApiConfig
    http: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, *, token: str | None = TOKEN, **kwargs: Any
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, self.url + path, headers=headers, **kwargs) as resp:
            data = await resp.json(content_type=None)
            return resp.status, data, resp


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    receiver = await Receiver().start()
    flows = workflows_from(
        tmp_path,
        {
            "maint": "name: Maintenance alert\ntrigger: {type: downtime_categorized, categories: "
            "[Maintenance Required]}\n" + hook(receiver.url("maintainx")),
            "qa": "name: Quality inspection\ntrigger: {type: manual, description: Request Quality Inspection}\n"
            + hook(receiver.url("quality")),
            "off": "name: Switched off\nenabled: false\ntrigger: {type: manual}\n"
            + hook(receiver.url("off")),
            "sync": "name: Daily production sync\ntrigger: {type: scheduled, cron: '0 23 * * *', "
            "timezone: Europe/Berlin}\n" + hook(receiver.url("production")),
        },
    )
    clock = FakeClock(float(int(time.time() - 3 * 86400)))
    rig = await make_rig(tmp_path, flows, clock)
    config = ApiConfig(enabled=True, host="127.0.0.1", port=0, token=Secret(TOKEN, "test"), max_body=MAX_BODY)
    app = create_app(rig.pipeline, rig.outbox, config)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    add_public_route(app, "GET", "/healthz", healthz)
    runner = await start_api(app, config)
    port = bound_port(runner)
    http = aiohttp.ClientSession()
    try:
        yield Api(
            rig, receiver, f"http://127.0.0.1:{port}", ApiConfig(**{**config.__dict__, "port": port}), http
        )
    finally:
        await http.close()
        await runner.cleanup()
        await rig.close()
        await receiver.stop()


async def make_downtime(api: Api) -> str:
    p, clock = api.rig.pipeline, api.rig.clock
    await poll(p, "mill-01", readings(MILL, clock.now, execution="ACTIVE", alarm_code=0, part_count=1))
    clock.advance(10)
    await poll(p, "mill-01", readings(MILL, clock.now, execution="STOPPED"))
    clock.advance(1800)
    await p.tick()
    dt = p.derivers["mill-01"].open_downtime  # type: ignore[attr-defined]
    assert dt is not None
    return str(dt.id)


# -- auth


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
    ],
)
async def test_missing_or_wrong_token_is_401(api: Api, headers: dict[str, str]) -> None:
    status, data, resp = await api.call("GET", "/api/v1/machines", token=None, headers=headers)
    assert status == 401
    assert data["error"]["code"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    status, _, _ = await api.call(
        "POST",
        "/api/v1/workflows/Quality%20inspection/trigger",
        token=None,
        headers=headers,
        json={"machine": "mill-01"},
    )
    assert status == 401
    assert api.receiver.got == []


async def test_public_route_needs_no_token_and_unknown_routes_are_json(api: Api) -> None:
    status, data, _ = await api.call("GET", "/healthz", token=None)
    assert (status, data) == (200, {"status": "ok"})
    status, data, _ = await api.call("GET", "/api/v1/nothing-here")
    assert status == 404 and data["error"]["code"] == "not_found"
    status, data, _ = await api.call("DELETE", "/api/v1/machines")
    assert status == 405 and data["error"]["code"] == "method_not_allowed"


# -- manual trigger (seed example 4 through the API)


async def test_trigger_through_the_api_delivers_a_signed_webhook(api: Api) -> None:
    status, data, _ = await api.call(
        "POST",
        "/api/v1/workflows/Quality%20inspection/trigger",
        json={"machine": "mill-01", "operator": {"id": "op1", "name": "Ann"}, "note": "burr"},
    )
    assert status == 202, data
    (got,) = await api.receiver.wait_for(1)
    assert got.error is None
    body = body_of(got)
    assert body["event"] == "manual_trigger"
    assert body["operator"] == {"id": "op1", "name": "Ann"}
    assert body["machine"]["id"] == "mill-01"
    assert data["execution"]["message_ids"] == [got.headers["webhook-id"]]


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "field"),
    [
        ("/api/v1/workflows/Nope/trigger", {"machine": "mill-01"}, 404, "unknown_workflow", "name"),
        (
            "/api/v1/workflows/Quality%20inspection/trigger",
            {"machine": "mill-99"},
            404,
            "unknown_machine",
            "machine",
        ),
        (
            "/api/v1/workflows/Switched%20off/trigger",
            {"machine": "mill-01"},
            409,
            "workflow_disabled",
            "workflow",
        ),
        (
            "/api/v1/workflows/Maintenance%20alert/trigger",
            {"machine": "mill-01"},
            409,
            "not_manual",
            "workflow",
        ),
        ("/api/v1/workflows/Quality%20inspection/trigger", {}, 422, "missing_field", "machine"),
        ("/api/v1/workflows/Quality%20inspection/trigger", {"machine": 7}, 422, "invalid_field", "machine"),
        (
            "/api/v1/workflows/Quality%20inspection/trigger",
            {"machine": "mill-01", "operator": "bob"},
            422,
            "invalid_field",
            "operator",
        ),
        (
            "/api/v1/workflows/Quality%20inspection/trigger",
            {"machine": "mill-01", "operator": {"badge": 1}},
            422,
            "unknown_field",
            "operator.badge",
        ),
        (
            "/api/v1/workflows/Quality%20inspection/trigger",
            {"machine": "mill-01", "urgent": True},
            422,
            "unknown_field",
            "urgent",
        ),
        ("/api/v1/workflows/Quality%20inspection/trigger", [1, 2], 422, "invalid_body", None),
    ],
)
async def test_trigger_refusals_name_the_field(
    api: Api, path: str, body: Any, status: int, code: str, field: str | None
) -> None:
    got_status, data, _ = await api.call("POST", path, json=body)
    assert got_status == status
    assert data["error"]["code"] == code
    assert data["error"]["field"] == field
    assert data["error"]["message"]
    assert (await api.rig.outbox.list()).items == []


async def test_malformed_json_wrong_type_and_oversize_bodies(api: Api) -> None:
    path = "/api/v1/workflows/Quality%20inspection/trigger"
    status, data, _ = await api.call(
        "POST", path, data=b'{"machine": ', headers={"Content-Type": "application/json"}
    )
    assert status == 400 and data["error"]["code"] == "malformed_json"
    status, data, _ = await api.call(
        "POST", path, data=b"\xff\xfe", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and data["error"]["code"] == "malformed_json"
    status, data, _ = await api.call(
        "POST", path, data=b"machine=mill-01", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 415 and data["error"]["code"] == "unsupported_media_type"
    big = {"machine": "mill-01", "note": "x" * (MAX_BODY + 10)}
    status, data, _ = await api.call("POST", path, json=big)
    assert status == 413 and data["error"]["code"] == "body_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(10):
            yield b" " * 1024

    status, data, _ = await api.call(
        "POST", path, data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert status == 413 and data["error"]["code"] == "body_too_large"
    assert (await api.rig.outbox.list()).items == []


# -- categorization (seed example 1 through the API)


async def test_categorize_through_the_api_fires_the_maintenance_alert(api: Api) -> None:
    downtime_id = await make_downtime(api)
    status, data, _ = await api.call(
        "POST",
        f"/api/v1/downtimes/{downtime_id}/category",
        json={
            "category": "Maintenance Required",
            "notes": "Spindle bearing noise detected",
            "operator": OPERATOR_SEED,
        },
    )
    assert status == 200, data
    assert [e["workflow"] for e in data["executions"]] == ["Maintenance alert"]
    (got,) = await api.receiver.wait_for(1)
    body = body_of(got)
    assert got.payload == body
    assert body["operator"] == OPERATOR_SEED
    assert {k: body["downtime"][k] for k in ("duration_seconds", "category", "notes")} == {
        "duration_seconds": 1800,
        "category": "Maintenance Required",
        "notes": "Spindle bearing noise detected",
    }
    status, data, _ = await api.call("POST", "/api/v1/downtimes/nope/category", json={"category": "Setup"})
    assert (status, data["error"]["code"], data["error"]["field"]) == (404, "unknown_downtime", "id")
    status, data, _ = await api.call(
        "POST", f"/api/v1/downtimes/{downtime_id}/category", json={"category": "Lunch"}
    )
    assert (status, data["error"]["code"], data["error"]["field"]) == (422, "unknown_category", "category")
    status, data, _ = await api.call("POST", f"/api/v1/downtimes/{downtime_id}/category", json={"notes": "x"})
    assert (status, data["error"]["field"]) == (422, "category")


# -- reads


async def test_machines_downtimes_workflows_and_executions(api: Api) -> None:
    downtime_id = await make_downtime(api)
    status, data, _ = await api.call("GET", "/api/v1/machines")
    assert status == 200
    by_id = {m["id"]: m for m in data["items"]}
    assert by_id["mill-01"]["status"] == "IDLE"
    assert by_id["mill-01"]["open_downtime"]["id"] == downtime_id
    assert by_id["mill-01"]["open_downtime"]["duration_seconds"] == 1800
    assert by_id["lathe-02"]["open_downtime"] is None and by_id["lathe-02"]["active_alarms"] == []
    status, data, _ = await api.call("GET", "/api/v1/machines/mill-01")
    assert status == 200 and data["group"] == "Milling" and "parts_today" in data
    status, data, _ = await api.call("GET", "/api/v1/machines/mill-99")
    assert (status, data["error"]["code"]) == (404, "unknown_machine")

    status, data, _ = await api.call("GET", "/api/v1/downtimes?state=open")
    assert [d["id"] for d in data["items"]] == [downtime_id]
    status, data, _ = await api.call("GET", "/api/v1/downtimes?state=recent")
    assert data["items"] == []
    status, data, _ = await api.call("GET", "/api/v1/downtimes?state=closed")
    assert (status, data["error"]["field"]) == (422, "state")

    await api.call("POST", "/api/v1/workflows/Quality%20inspection/trigger", json={"machine": "mill-01"})
    await api.receiver.wait_for(1)
    status, data, _ = await api.call("GET", "/api/v1/workflows?limit=2")
    assert status == 200 and len(data["items"]) == 2 and data["next_cursor"]
    status, rest, _ = await api.call("GET", f"/api/v1/workflows?limit=2&cursor={data['next_cursor']}")
    flows = {w["name"]: w for w in data["items"] + rest["items"]}
    assert rest["next_cursor"] is None
    assert set(flows) == {"Daily production sync", "Maintenance alert", "Quality inspection", "Switched off"}
    assert flows["Switched off"]["enabled"] is False
    assert flows["Quality inspection"]["last_execution"]["machine"] == "mill-01"
    assert flows["Maintenance alert"]["last_execution"] is None
    assert flows["Daily production sync"]["next_run"].endswith(":00:00Z")
    assert "whsec_" not in json.dumps(flows)

    # The attempt is recorded by the dispatcher right after the receiver answered.
    async with asyncio.timeout(5):
        while True:
            status, data, _ = await api.call("GET", "/api/v1/executions?workflow=Quality%20inspection")
            items = data["items"]
            if items and items[0]["states"] == {"delivered": 1} and items[0]["deliveries"][0]["attempts"]:
                break
            await asyncio.sleep(0.01)
    (ex,) = data["items"]
    (delivery,) = ex["deliveries"]
    assert ex["states"] == {"delivered": 1}
    assert delivery["state"] == "delivered"
    assert [a["status"] for a in delivery["attempts"]] == [200]
    status, data, _ = await api.call("GET", "/api/v1/executions?workflow=Nope")
    assert (status, data["error"]["code"]) == (404, "unknown_workflow")
    status, data, _ = await api.call("GET", "/api/v1/executions?limit=0")
    assert (status, data["error"]["field"]) == (422, "limit")


async def test_bad_paging_numbers_are_422_naming_the_field(api: Api) -> None:
    bad = [
        "99999999999999999999",  # 20 digits: past SQLite's 64-bit INTEGER
        "9" * 5000,  # past Python's int() digit limit
        "\u00b2",  # superscript two: isdigit() but not int()
        "\u0661\u0662",  # Arabic-Indic digits: not ASCII
        "-1",
        "1e3",
        " 5",
    ]
    for path in ("/api/v1/executions", "/api/v1/workflows", "/api/v1/machines", "/api/v1/downtimes"):
        for field in ("cursor", "limit"):
            for value in bad:
                status, data, _ = await api.call("GET", path, params={field: value})
                assert (status, data["error"]["field"]) == (422, field), (path, field, value[:20])
        status, data, _ = await api.call("GET", path, params={"limit": "1001"})
        assert (status, data["error"]["field"]) == (422, "limit")
    # The largest accepted cursor is still a number SQLite can compare.
    status, data, _ = await api.call("GET", "/api/v1/executions", params={"cursor": "9" * 18, "limit": "1"})
    assert status == 200 and data["next_cursor"] is None


# -- the CLI against the running API


def write_agent_yaml(tmp_path: Path, api: Api) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(
        f"agent: {{state_dir: {tmp_path / 'state'}}}\n"
        f"api: {{bind: '127.0.0.1:{api.config.port}', token: {TOKEN}}}\n"
        "downtime_categories: [Maintenance Required, Setup]\n",
        encoding="utf-8",
    )
    return path


async def run_cli(argv: list[str]) -> tuple[int, str]:
    args = build_parser().parse_args(argv)
    out = io.StringIO()
    code = await workflow_cmd.run(args, args.command_fn, out)
    return code, out.getvalue()


async def test_cli_trigger_categorize_workflows_status(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(write_agent_yaml(tmp_path, api))
    code, out = await run_cli(
        [
            "trigger",
            "Quality inspection",
            "--machine",
            "mill-01",
            "--operator-id",
            "op7",
            "--operator-name",
            "Ann",
            "--note",
            "check bore",
            "-c",
            cfg,
        ]
    )
    assert code == 0 and "triggered 'Quality inspection' for mill-01: queued" in out
    (got,) = await api.receiver.wait_for(1)
    body = body_of(got)
    assert body["operator"] == {"id": "op7", "name": "Ann"} and body["note"] == "check bore"

    downtime_id = await make_downtime(api)
    code, out = await run_cli(
        ["categorize", downtime_id, "Maintenance Required", "--notes", "noise", "-c", cfg]
    )
    assert code == 0 and "workflows fired: Maintenance alert" in out
    await api.receiver.wait_for(2)

    code, out = await run_cli(["workflows", "-c", cfg])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "ENABLED", "TRIGGER", "LAST", "EXECUTION"]
    assert any(line.startswith("Switched off") and " no " in line for line in lines)
    assert any(line.startswith("Quality inspection") and "mill-01" in line for line in lines)

    code, out = await run_cli(["status", "-c", cfg])
    assert code == 0 and "mill-01" in out and "IDLE" in out and downtime_id in out

    code, out = await run_cli(["trigger", "Switched off", "--machine", "mill-01", "-c", cfg])
    assert code == 2
    assert "workflow 'Switched off' is disabled [workflow]" in capsys.readouterr().err


async def test_client_reports_wrong_token_and_unreachable_agent(api: Api) -> None:
    async with ApiClient(api.url, Secret("wrong-token-0123456789", "test")) as client:
        with pytest.raises(ApiRequestError) as err:
            await client.workflows()
    assert err.value.status == 401
    async with ApiClient.from_config(api.config) as client:
        answer = await client.request("GET", "/api/v1/machines/mill-99", expect=(404,))
    assert answer["error"]["code"] == "unknown_machine"
    async with ApiClient("http://127.0.0.1:9", Secret(TOKEN, "test"), timeout=2) as client:
        with pytest.raises(ApiRequestError) as err:
            await client.machines()
    assert err.value.status == 0 and "cannot reach the agent" in err.value.message
    assert TOKEN not in str(err.value)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
async def test_tls_with_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    proc = await asyncio.create_subprocess_exec(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=edge-agent",
        "-keyout",
        str(key),
        "-out",
        str(cert),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert await proc.wait() == 0
    flows = workflows_from(
        tmp_path, {"qa": "name: QA\ntrigger: {type: manual}\n" + hook("http://127.0.0.1:9/qa")}
    )
    rig = await make_rig(tmp_path, flows, FakeClock(time.time() - 86400), dispatch=False)
    config = ApiConfig(
        enabled=True, host="127.0.0.1", port=0, token=Secret(TOKEN, "t"), tls_cert_file=cert, tls_key_file=key
    )
    runner = await start_api(create_app(rig.pipeline, rig.outbox, config), config)
    try:
        port = bound_port(runner)
        live = ApiConfig(**{**config.__dict__, "port": port})
        assert live.base_url == f"https://127.0.0.1:{port}"
        async with ApiClient.for_config(live) as client:
            flows_seen = await client.workflows()
        async with ApiClient(f"http://127.0.0.1:{port}", Secret(TOKEN, "t"), timeout=2) as plain:
            with pytest.raises(ApiRequestError):
                await plain.workflows()
    finally:
        await runner.cleanup()
        await rig.close()
    assert [w["name"] for w in flows_seen] == ["QA"]


async def test_a_machine_view_says_why_and_since_when_it_cannot_be_read(api: Api, tmp_path: Path) -> None:
    p, clock = api.rig.pipeline, api.rig.clock
    status, data, _ = await api.call("GET", "/api/v1/machines/lathe-02")
    assert (data["status"], data["status_reason"]) == (None, None)  # nothing read yet: nothing decided
    lost_at = clock.now
    why = "no answer to 3 requests in a row from 127.0.0.1:5020"
    tags = ("execution", "alarm_code", "part_count")
    await poll(
        p, "lathe-02", [Reading("lathe-02", t, None, Quality.DISCONNECTED, lost_at, why) for t in tags]
    )
    clock.advance(60)
    await p.tick()
    status, data, _ = await api.call("GET", "/api/v1/machines/lathe-02")
    assert status == 200 and data["status"] == "DISCONNECTED"
    assert data["status_reason"] == f"cannot read the machine: {why}"
    assert data["status_since"] == datetime.fromtimestamp(lost_at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    code, out = await run_cli(["status", "-c", str(write_agent_yaml(tmp_path, api))])
    (line,) = [line for line in out.splitlines() if line.startswith("lathe-02")]
    assert code == 0 and "DISCONNECTED" in line and line.rstrip().endswith(f"cannot read the machine: {why}")
    assert out.splitlines()[0].split()[-1] == "WHY"


async def test_cli_names_what_exists_when_a_name_or_id_is_wrong(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(write_agent_yaml(tmp_path, api))
    code, _ = await run_cli(["trigger", "Quality Inspektion", "--machine", "mill-01", "-c", cfg])
    err = capsys.readouterr().err
    assert code == 2
    assert "no workflow named 'Quality Inspektion'" in err
    assert "manual workflows: " in err and "(did you mean 'Quality inspection'?)" in err

    downtime_id = await make_downtime(api)
    code, _ = await run_cli(["categorize", "dt_nope", "Setup", "-c", cfg])
    err = capsys.readouterr().err
    assert code == 2
    assert f"open downtimes: {downtime_id} (mill-01)" in err


async def test_cli_with_a_wrong_token_names_where_its_token_came_from(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_agent_yaml(tmp_path, api)
    text = cfg.read_text()
    token_file = tmp_path / "wrong-token"
    token_file.write_text("wrong-token-0123456789abcdef\n")
    cfg.write_text(text.replace(f"token: {TOKEN}", f"token_file: {token_file}"))
    code, _ = await run_cli(["status", "-c", str(cfg)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"this command sent the token from file {token_file} (api: in {cfg})" in err
    assert "wrong-token-0123456789abcdef" not in err
