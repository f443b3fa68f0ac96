"""Modbus TCP driver (pymodbus client). Import it only when a machine uses Modbus: pymodbus is heavy."""
