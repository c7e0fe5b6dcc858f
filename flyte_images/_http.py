"""httpx, imported without its command-line client.

`import httpx` also imports `httpx._main` (its CLI) whenever click, rich and pygments happen to be
installed, which costs about 40 ms of every build's start-up for a tool nobody calls here. Our
modules import httpx from this module instead, which imports it with that one submodule marked
absent (httpx then keeps a stub `main`, as it does without the CLI extra) and unmarks it again.
A process that imported httpx before flyte-images keeps its own.
"""

from __future__ import annotations

import sys

if "httpx" not in sys.modules:
    sys.modules["httpx._main"] = None  # type: ignore[assignment]
    try:
        import httpx
    finally:
        if "httpx._main" in sys.modules and sys.modules["httpx._main"] is None:
            del sys.modules["httpx._main"]
else:
    import httpx

__all__ = ["httpx"]
