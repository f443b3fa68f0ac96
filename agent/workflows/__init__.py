"""Workflows: named rules that turn shop-floor events into webhook deliveries."""
