"""The operator panel: the shop floor's own screen (board, machine, downtimes, workflows, deliveries),
served by the agent's API server, live over Server-Sent Events. See ``routes`` for the pages."""
