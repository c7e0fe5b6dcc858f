"""Formats: pure functions from values to bytes and text, and back.

encoding     the canonical, length-prefixed encoding every identifier hashes
quote        quoting for BuildKit's Dockerfile parser and the shell
dockerfile   the Dockerfile writer: checked instructions, one per layer step
shapes       the one strict reader of what comes from outside (JSON, TOML)
"""
