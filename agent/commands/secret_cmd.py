"""``edge-agent secret generate``: a new ``whsec_`` signing secret (Standard Webhooks), printed or
written to a file only its owner can read."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from agent.delivery.signing import generate_secret


def register(sub: argparse._SubParsersAction[Any]) -> None:
    sp = sub.add_parser("secret", help="webhook signing secrets")
    sps = sp.add_subparsers(dest="secret_command", metavar="ACTION", required=True)
    p = sps.add_parser("generate", help="print a new whsec_ secret (Standard Webhooks)")
    p.add_argument("--bytes", type=int, default=32, help="random bytes, 24..64 (default 32)")
    p.add_argument(
        "--out",
        type=Path,
        help="write it to this file (created with mode 0600 in an existing directory, never overwritten)",
    )
    p.set_defaults(handler=_h_secret_generate)


def secret_generate(nbytes: int = 32, out: TextIO | None = None) -> int:
    try:
        _o(out).write(generate_secret(nbytes) + "\n")
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


def _o(out: TextIO | None) -> TextIO:
    # Resolved per call, not at import: pytest's capsys and redirected stdout must be honoured.
    return out if out is not None else sys.stdout


def _h_secret_generate(args: argparse.Namespace) -> int:
    if args.out is None:
        return secret_generate(args.bytes)
    return secret_write(args.out, args.bytes)


def secret_write(path: Path, nbytes: int = 32) -> int:
    """A new secret in a file only its owner can read; an existing file is never replaced."""
    try:
        secret = generate_secret(nbytes)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if not path.parent.is_dir():
        # Creating folders here would hide a typo in the path; the secret would land somewhere unread.
        print(f"{path.parent} is not a directory; create it first (mkdir -p {path.parent})", file=sys.stderr)
        return 2
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"{path} exists; not overwritten (delete it first to rotate)", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    print(f"wrote a new secret to {path}")
    return 0
