"""MQTT: the broker connection, the Unified Namespace publisher and the outbox sender.

``settings`` parses agent.yaml's ``mqtt:`` and ``publish:`` sections and the workflow ``mqtt:`` action;
``topics`` (pure) validates and renders topics; ``uns`` (pure) turns events into retained state
messages; ``link`` owns the one connection (reconnect, birth, Last Will); ``sender`` delivers outbox rows.
Only ``link`` and the CLI import aiomqtt, lazily: an agent without ``mqtt:`` never loads it.
"""
