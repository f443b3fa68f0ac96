"""Modbus TCP driver (its own lean client, drivers/modbus/wire.py). Import it only when a machine uses Modbus."""
