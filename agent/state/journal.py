"""The outbox journal: rows planned but not yet confirmed by the outbox, kept in the state store.

State (``state.sqlite3``) and outbox (``outbox.sqlite3``) are two files, so no transaction spans
both. A firing's rows are saved under ``JOURNAL_KEY`` in the same state-store transaction as the
snapshots that produced them, then enqueued, then dropped from the journal. At start the journal is
offered to the outbox again; its unique ``message_id`` collapses what was already there. A kill -9
at any point therefore neither loses an event nor derives it again under a new id.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from agent.delivery.records import NewDelivery

log = structlog.get_logger(__name__)

# Stored beside the machine snapshots; '#' cannot start a machine id, so the keys never collide.
JOURNAL_KEY = "#outbox-journal"


class Journal:
    """The rows in memory; ``dirty`` says the stored copy is behind."""

    def __init__(self) -> None:
        self._rows: dict[str, NewDelivery] = {}
        self.dirty = False

    def add(self, rows: Iterable[NewDelivery]) -> None:
        self._rows.update((r.message_id, r) for r in rows)
        self.dirty = True

    def restore(self, rows: Iterable[NewDelivery]) -> None:
        """Rows read back from the stored journal (already stored: not dirty)."""
        self._rows.update((r.message_id, r) for r in rows)

    def drop(self, rows: Iterable[NewDelivery]) -> None:
        """The outbox holds these now: the stored journal must forget them too."""
        self.forget(rows)
        self.dirty = True

    def forget(self, rows: Iterable[NewDelivery]) -> None:
        """Given up (rejected): gone from memory; the stored copy follows with the next save."""
        for row in rows:
            self._rows.pop(row.message_id, None)

    def snapshot(self) -> dict[str, Any]:
        """What is saved under ``JOURNAL_KEY``."""
        return {"rows": [journal_entry(r) for r in self._rows.values()]}


def journal_entry(row: NewDelivery) -> dict[str, Any]:
    return {
        "message_id": row.message_id,
        "endpoint": row.endpoint,
        "url": row.url,
        "workflow": row.workflow,
        "event_type": row.event_type,
        "machine_id": row.machine_id,
        "event_id": row.event_id,
        "body": base64.b64encode(row.body).decode("ascii"),
        "not_before": row.not_before,
    }


def journal_rows(saved: Any) -> list[NewDelivery]:
    """The stored journal; an entry that does not decode is logged and skipped (never a crash)."""
    items = saved.get("rows") if isinstance(saved, Mapping) else None
    rows: list[NewDelivery] = []
    for i, item in enumerate(items if isinstance(items, list) else []):
        try:
            machine = item["machine_id"]
            rows.append(
                NewDelivery(
                    message_id=str(item["message_id"]),
                    endpoint=str(item["endpoint"]),
                    url=str(item["url"]),
                    workflow=str(item["workflow"]),
                    event_type=str(item["event_type"]),
                    machine_id=None if machine is None else str(machine),
                    event_id=str(item["event_id"]),
                    body=base64.b64decode(item["body"], validate=True),
                    not_before=float(item["not_before"]),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            log.error("outbox_journal_entry_unreadable", key=JOURNAL_KEY, index=i, error=repr(exc))
    return rows
