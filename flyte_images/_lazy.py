"""Names a package imports when first used (PEP 562), so importing the package stays cheap."""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # not typing's: importing typing costs ~5 ms, and a first lazy name should not
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


def attribute(package: str, table: Mapping[str, str], name: str, namespace: dict[str, Any]) -> object:
    """`name` of `package` from the submodule `table` names for it, kept in `namespace` (the
    package's globals) so the next use is a plain lookup."""
    module = table.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, package), name)
    namespace[name] = value
    return value
