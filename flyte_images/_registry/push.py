"""`Pusher`, the name of `Registry` (registry.py) where it reads and writes an image's parts; for
the modules that still import it from here."""

from __future__ import annotations

from .registry import Registry

Pusher = Registry

__all__ = ["Pusher"]
