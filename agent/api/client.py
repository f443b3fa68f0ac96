"""A small client of the operator API, for the CLI (``edge-agent trigger``, ``categorize``, ...)."""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

from agent.api.settings import ApiConfig
from agent.config.source import Secret


class ApiRequestError(Exception):
    """The agent answered with an error, or could not be reached (``status`` 0)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        super().__init__(f"{message} ({code}, HTTP {status})" if status else message)


def _client_ssl(config: ApiConfig) -> ssl.SSLContext | None:
    if config.tls_cert_file is None:
        return None
    # The agent's own certificate is the only trust anchor: a plant's self-signed certificate works,
    # and nothing else is accepted. The name is not checked (it is often an IP or a wildcard bind).
    ctx = ssl.create_default_context(cafile=str(config.tls_cert_file))
    ctx.check_hostname = False
    return ctx


class ApiClient:
    def __init__(
        self,
        base_url: str,
        token: Secret,
        *,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def for_config(cls, config: ApiConfig, *, timeout: float = 10.0) -> ApiClient:
        if config.token is None:
            raise ApiRequestError(
                0, "no_token", "the agent config has no api token (api.token/token_file/token_env)"
            )
        return cls(config.base_url, config.token, timeout=timeout, ssl_context=_client_ssl(config))

    from_config = for_config  # the name the lead's commands use

    async def __aenter__(self) -> ApiClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        query: Mapping[str, str] | None = None,
        expect: Sequence[int] = (),
    ) -> Any:
        """The decoded JSON answer; any status >= 400 not listed in ``expect`` raises ``ApiRequestError``."""
        return await self._call(method, path, body, query, expect)

    async def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        expect: Sequence[int] = (),
    ) -> Any:
        if self._session is None:
            raise RuntimeError("use ApiClient as 'async with'")
        headers = {"Authorization": f"Bearer {self._token.reveal()}"}
        try:
            async with self._session.request(
                method, self._base + path, json=body, params=query, headers=headers, ssl=self._ssl
            ) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ApiRequestError(
                0,
                "unreachable",
                f"cannot reach the agent at {self._base}: {exc or type(exc).__name__} "
                "(is it running? systemctl status edge-agent; is api.bind in agent.yaml the right address?)",
            ) from None
        try:
            data = json.loads(text) if text else None
        except json.JSONDecodeError:
            data = None
        if status >= 400 and status not in expect:
            err = data.get("error") if isinstance(data, dict) else None
            if isinstance(err, dict):
                raise ApiRequestError(
                    status, str(err.get("code")), str(err.get("message")), err.get("field") or None
                )
            raise ApiRequestError(status, "http_error", f"HTTP {status}: {text[:200]}")
        return data

    async def trigger(
        self, workflow: str, machine: str, operator: Mapping[str, Any] | None = None, note: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"machine": machine}
        if operator:
            body["operator"] = dict(operator)
        if note is not None:
            body["note"] = note
        result: dict[str, Any] = await self._call(
            "POST", f"/api/v1/workflows/{quote(workflow, safe='')}/trigger", body
        )
        return result

    async def categorize(
        self,
        downtime_id: str,
        category: str,
        notes: str | None = None,
        operator: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"category": category}
        if notes is not None:
            body["notes"] = notes
        if operator:
            body["operator"] = dict(operator)
        result: dict[str, Any] = await self._call(
            "POST", f"/api/v1/downtimes/{quote(downtime_id, safe='')}/category", body
        )
        return result

    async def _all(self, path: str, query: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params = dict(query or {})
        while True:
            page = await self._call("GET", path, query=params)
            items.extend(page.get("items", []))
            cursor = page.get("next_cursor")
            if not cursor:
                return items
            params["cursor"] = str(cursor)

    async def workflows(self) -> list[dict[str, Any]]:
        return await self._all("/api/v1/workflows")

    async def machines(self) -> list[dict[str, Any]]:
        return await self._all("/api/v1/machines")

    async def machine(self, machine_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/api/v1/machines/{quote(machine_id, safe='')}")
        return result

    async def downtimes(self, state: str = "open") -> list[dict[str, Any]]:
        return await self._all("/api/v1/downtimes", {"state": state})

    async def executions(
        self, workflow: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        query = {"limit": str(limit)}
        if workflow:
            query["workflow"] = workflow
        if cursor:
            query["cursor"] = cursor
        result: dict[str, Any] = await self._call("GET", "/api/v1/executions", query=query)
        return result


ApiError = ApiRequestError  # the name the lead's commands use
