"""edge-agent: CNC data to signed webhooks, through a durable outbox."""

__version__ = "0.1.0"
