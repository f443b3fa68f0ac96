"""Logs: JSON lines, library loggers in the same stream, and tracebacks that cannot leak secrets."""

from __future__ import annotations

import io
import json
import logging

import structlog

from agent.logs import configure


def test_our_and_library_records_are_json_lines_and_tracebacks_carry_no_locals() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    libraries = ("asyncua", "pymodbus", "aiosqlite")
    saved = (root.handlers[:], root.level, {n: logging.getLogger(n).level for n in libraries})
    configure("info", "json", stream=out)
    try:
        structlog.get_logger("agent.test").info("machine_connected", machine="mill-01")
        logging.getLogger("asyncua.client").error("session %s closed", "abc")
        try:
            secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            raise ValueError("signing failed")
        except ValueError:
            structlog.get_logger("agent.test").exception("delivery_failed")
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
    finally:
        # Leave logging as the other tests expect it: structlog's defaults, the root logger as it was.
        structlog.reset_defaults()
        root.handlers[:], root.level = saved[0], saved[1]
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)
    assert [(r["logger"], r["event"]) for r in lines] == [
        ("agent.test", "machine_connected"),
        ("asyncua.client", "session abc closed"),
        ("agent.test", "delivery_failed"),
    ]
    assert lines[0]["machine"] == "mill-01"
    assert lines[2]["exception"][0]["exc_value"] == "signing failed"
    assert secret not in out.getvalue()  # locals of the failing frame are not rendered
