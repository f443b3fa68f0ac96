"""The contract between the dispatcher and a kind of destination (webhook today, MQTT next).

A destination kind is one module ``agent/delivery/senders/<kind>.py`` that defines
``create(config: DeliveryConfig) -> Sender``; its endpoint configuration carries ``kind = "<kind>"``.
The dispatcher loads the module the first time an endpoint of that kind is configured (so a
protocol library is imported only where it is used) and hands every due row of such an endpoint to
``Sender.send``. Nothing else in ``agent/delivery`` changes for a new kind.

A sender only moves bytes: it returns a ``SendOutcome`` (what happened) and never decides what
happens next. ``retry.assess`` classifies the outcome and ``retry.decide`` picks the row's next
state (pure code); the dispatcher records it, and ``report`` logs and counts it.
"""

from __future__ import annotations

from typing import Protocol

from agent.delivery.records import Delivery
from agent.delivery.retry import SendOutcome

__all__ = ["Destination", "SendOutcome", "Sender"]


class Destination(Protocol):
    """What the dispatcher reads of any endpoint configuration, whatever its kind."""

    @property
    def kind(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def url(self) -> str:
        """Where it goes, for operators (history, disable after 410); secrets never appear here."""
        ...

    @property
    def fifo(self) -> bool: ...
    @property
    def concurrency(self) -> int: ...

    # Optional ``fifo_window: int`` (default 1): rows a FIFO destination may have in flight at once,
    # for a kind whose one connection keeps order (MQTT); read with getattr by the dispatcher.


class Sender(Protocol):
    """One per destination kind, shared by all endpoints of that kind."""

    async def start(self) -> None:
        """Open what the sender keeps between attempts (connection pools)."""

    async def send(self, destination: Destination, row: Delivery, now: float) -> SendOutcome:
        """Deliver ``row.body`` once. Must not raise for anything the destination or the network
        does: that is an outcome. ``now`` is the clock at the start of the attempt."""
        ...

    async def close(self) -> None:
        """Release what ``start`` opened; called once when the dispatcher stops."""

    # Optional ``configure(destinations: list[Destination]) -> None`` (sync): the destinations of
    # this kind configured now, at start and after every reload (MQTT opens the link of each broker
    # in use and closes the others); read with getattr by ``attempt.py``.
