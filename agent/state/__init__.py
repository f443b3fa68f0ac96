"""The state directory's ``state.sqlite3``: derivation snapshots, the outbox journal, schedule state."""
