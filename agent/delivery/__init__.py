"""Delivery: durable outbox, Standard Webhooks signing, retrying dispatcher, receiver-side verification.

Wiring: ``Outbox.open(state_dir / OUTBOX_FILE, config.outbox)`` once; the workflow engine calls
``outbox.enqueue([...])`` then ``dispatcher.wake()``; ``Dispatcher(outbox, endpoints, config.delivery)``
sends what is due and ``set_endpoints(...)`` on reload.
"""

from agent.delivery.settings import OUTBOX_FILE, DeliveryConfig, EndpointConfig, OutboxConfig

__all__ = ["OUTBOX_FILE", "DeliveryConfig", "EndpointConfig", "OutboxConfig"]
