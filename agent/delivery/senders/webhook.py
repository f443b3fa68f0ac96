"""The webhook destination: one signed HTTP POST per attempt (Standard Webhooks or GitHub style).

Signing is pure (``signing.py``); this module adds the secret reveal, the HTTP request and the
mapping of network failures to an outcome. Redirects are not followed: a webhook URL that moved is
a configuration problem the operator must see.
"""

from __future__ import annotations

import ssl
import time

import aiohttp

from agent import __version__
from agent.delivery.records import Delivery
from agent.delivery.senders.base import Destination, SendOutcome
from agent.delivery.settings import DeliveryConfig, EndpointConfig
from agent.delivery.signing import signing_headers

USER_AGENT = f"edge-agent/{__version__}"


class WebhookSender:
    def __init__(self, config: DeliveryConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        ssl_ctx: ssl.SSLContext | bool = True
        if self.config.ca_file is not None:
            ssl_ctx = ssl.create_default_context(cafile=str(self.config.ca_file))
        connector = aiohttp.TCPConnector(limit=0, ssl=ssl_ctx)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": USER_AGENT},
            auto_decompress=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, destination: Destination, row: Delivery, now: float) -> SendOutcome:
        if not isinstance(destination, EndpointConfig):
            raise TypeError(f"webhook sender got a {type(destination).__name__} for {destination.key}")
        cfg = destination
        started = time.perf_counter()
        try:
            headers = {"Content-Type": "application/json", **cfg.headers}
            headers.update(
                signing_headers(
                    cfg.signature, [s.reveal() for s in cfg.secrets], row.message_id, int(now), row.body
                )
            )
        except ValueError as exc:
            # Never include the secret itself; the message names only what is wrong with it.
            return _failed(started, None, {}, "config", f"cannot sign: {exc}")
        return await self._post(cfg, row, headers, started)

    async def _post(
        self, cfg: EndpointConfig, row: Delivery, headers: dict[str, str], started: float
    ) -> SendOutcome:
        if self._session is None:
            raise RuntimeError("webhook sender used before start()")
        # A reply whose body then fails to arrive still counts as that reply (a 2xx is delivered).
        status: int | None = None
        resp_headers: dict[str, str] = {}
        try:
            timeout = aiohttp.ClientTimeout(total=cfg.timeout, sock_connect=self.config.connect_timeout)
            async with self._session.post(
                cfg.url, data=row.body, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                status = resp.status
                resp_headers = {k: v for k, v in resp.headers.items()}
                response = await _read_capped(resp, self.config.max_response_size)
                return SendOutcome(status, time.perf_counter() - started, resp_headers, response)
        except TimeoutError:
            return _failed(started, status, resp_headers, "timeout", f"no response within {cfg.timeout:g} s")
        except aiohttp.ClientSSLError as exc:
            return _failed(started, status, resp_headers, "tls", f"TLS error: {exc}")
        except aiohttp.ClientConnectorError as exc:
            return _failed(started, status, resp_headers, "connect", f"cannot connect: {exc.os_error or exc}")
        except (aiohttp.ClientError, OSError) as exc:
            return _failed(started, status, resp_headers, "connection", f"{type(exc).__name__}: {exc}")


def _failed(
    started: float, status: int | None, headers: dict[str, str], error_class: str, error: str
) -> SendOutcome:
    if status is not None:
        # The status line arrived: it is the receiver's answer, and what happened to the body after
        # it (a trickle past the timeout, a reset) is not the attempt's error.
        return SendOutcome(status, time.perf_counter() - started, headers)
    return SendOutcome(status, time.perf_counter() - started, headers, error_class=error_class, error=error)


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < cap:
        chunk = await resp.content.read(cap - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def create(config: DeliveryConfig) -> WebhookSender:
    return WebhookSender(config)
