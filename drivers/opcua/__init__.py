"""OPC-UA driver. ``config`` is pure and cheap; ``driver`` imports asyncua, so import it only when a machine uses OPC-UA."""
