"""Configuration: YAML files with line numbers, read into typed, immutable objects."""
