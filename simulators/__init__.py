"""Simulated CNC machines on OPC-UA and Modbus TCP, playing scripted, deterministic scenarios."""
