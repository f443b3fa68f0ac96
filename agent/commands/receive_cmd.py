"""``edge-agent receive``: a local webhook inspector that verifies and prints every delivery."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from agent.config.interpolate import port_number, port_variable

# A person reads these: the agent's webhooks are a few KB, and a hostile sender must not make the
# inspector hold gigabytes (the old caps, 1,000 bodies of 16 MiB, allowed 16 GB).
KEEP = 100
MAX_BODY = 1024 * 1024


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "receive",
        help="run a local webhook receiver that verifies signatures and prints each delivery",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port",
        type=port_number,
        default=None,
        help="port to listen on (default $EDGE_AGENT_RECEIVER_PORT, else 8090)",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--secret", help="whsec_... secret to verify with (visible in ps: prefer --secret-env)"
    )
    group.add_argument("--secret-env", help="name of an environment variable holding the secret")
    group.add_argument("--secret-file", type=Path, help="file holding the secret")
    p.add_argument("--fail-rate", type=float, default=0.0, help="answer 500 to this fraction (0..1)")
    p.add_argument("--status", type=int, default=200, help="HTTP status to answer with (default 200)")
    p.add_argument("--hang", action="store_true", help="accept requests and never answer")
    p.add_argument("--quiet", action="store_true", help="do not print deliveries (benchmarks)")
    p.set_defaults(handler=run)


def _secret(args: argparse.Namespace) -> str | None:
    if args.secret:
        return str(args.secret)
    if args.secret_env:
        value = os.environ.get(args.secret_env)
        if not value:
            raise ValueError(f"--secret-env: environment variable {args.secret_env} is not set or empty")
        return value
    if args.secret_file:
        try:
            value = str(args.secret_file.read_text(encoding="utf-8")).strip()
        except OSError as exc:
            raise ValueError(f"--secret-file: cannot read {args.secret_file}: {exc.strerror}") from None
        if not value:
            raise ValueError(f"--secret-file: {args.secret_file} is empty")
        return value
    return None


def run(args: argparse.Namespace) -> int:
    from agent.delivery.signing import decode_secret
    from agent.receiver import serve_forever, start_receiver

    try:
        if args.port is None:  # the shipped workflows' URLs name the same variable
            args.port = port_variable("EDGE_AGENT_RECEIVER_PORT", os.environ)
        secret = _secret(args)
        if secret is not None:
            decode_secret(secret)
    except ValueError as exc:
        print(f"receive: {exc}", file=sys.stderr)
        return 2
    if not 0.0 <= args.fail_rate <= 1.0:
        print("receive: --fail-rate must be between 0 and 1", file=sys.stderr)
        return 2
    if not 100 <= args.status <= 599:
        print("receive: --status must be an HTTP status code (100..599)", file=sys.stderr)
        return 2
    if secret is None:
        print("receive: no secret given; signatures are NOT verified", file=sys.stderr)

    async def main() -> None:
        receiver = await start_receiver(
            secret,
            host=args.host,
            port=args.port,
            status=args.status,
            fail_rate=args.fail_rate,
            hang=args.hang,
            out=None if args.quiet else sys.stdout,
            keep=KEEP,
            max_body=MAX_BODY,
        )
        await serve_forever(receiver)

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"receive: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
