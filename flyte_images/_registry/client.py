"""`RegistryClient`, the name of `Registry` (registry.py) where it only checks, with the names its
callers take from here; for the modules that still import them from this one."""

from __future__ import annotations

from .checks import Existence
from .reference import Reference, parse_reference
from .registry import Registry, check_many

RegistryClient = Registry

__all__ = ["Existence", "Reference", "RegistryClient", "check_many", "parse_reference"]
