"""Formats: pure functions from values to bytes and text (identifier encoding, quoting, the
Dockerfile), what an argument may look like (validation), and the one strict reader of what
comes from outside (JSON, TOML)."""
