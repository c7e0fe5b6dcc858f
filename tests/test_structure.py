"""The package's shape, checked: imports go down (no circle between modules), backends import
only what a backend may, and the top of the package stays small. Known exceptions are listed
here by name, so a new one fails and removing one is a one-line change."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "flyte_images"
BACKENDS = PACKAGE.parent / "builders"

# Image.identifier and Image.uri plan the image (the model asks the planner for its own tag).
KNOWN_CIRCLES: set[frozenset[str]] = set()
# What a backend may import besides its siblings: the error tree, the config, the shared
# interrupt helper. The docker backend's per-platform builds still assemble their index through
# the registry client.
BACKEND_MAY_IMPORT = {"_errors", "_config", "_interrupt"}
KNOWN_BACKEND_IMPORTS = {("_multiarch", "_registry")}


def _module(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str, package: bool) -> set[str]:
    """Modules of flyte_images that `path` imports (anywhere in the file), as dotted names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if module else []
                base = base if package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + (node.module.split(".") if node.module else []))
            elif node.module and node.module.startswith("flyte_images"):
                target = node.module.removeprefix("flyte_images").lstrip(".")
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}" if target else alias.name
                found.add(sub if _exists(sub) else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("flyte_images."):
                    found.add(alias.name.removeprefix("flyte_images."))
    return {f for f in found if f and not f.startswith("builders") and _exists(f)}


def _exists(module: str) -> bool:
    path = PACKAGE.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] in ("builders", "dockerfiles", "__pycache__"):
            continue
        module = _module(path, PACKAGE)
        # A package's face only hands names on: its arrows are its modules' own.
        if path.name == "__init__.py":
            continue
        graph[module] = {m for m in _imports(path, module, False) if not (PACKAGE / m.replace(".", "/")).is_dir()}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_between_modules() -> None:
    circles = set(_circles(_graph()))
    assert circles - KNOWN_CIRCLES == set(), "new import circles"
    assert KNOWN_CIRCLES - circles == set(), "a known circle is gone: take it off KNOWN_CIRCLES"


def test_backends_import_only_what_a_backend_may() -> None:
    wrong = set()
    for path in BACKENDS.glob("*.py"):
        name = path.stem
        for target in _imports(path, f"builders.{name}", path.name == "__init__.py"):
            top = target.split(".")[0]
            if top not in BACKEND_MAY_IMPORT and (name, top) not in KNOWN_BACKEND_IMPORTS:
                wrong.add(f"builders/{path.name} imports flyte_images.{target}")
    assert not wrong, sorted(wrong)


def test_the_core_never_imports_a_backend_module() -> None:
    allowed = {"flyte_images.builders.base", "flyte_images.builders"}
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        if parts[0] in ("builders", "dockerfiles", "testing") or path.name == "backends.py":
            continue  # the lookup (`_build/backends.py`) and the fake's tests name backends by design
        for node in ast.walk(ast.parse(path.read_text())):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if module and module.startswith("flyte_images.builders") and module not in allowed:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not wrong, wrong


def test_few_private_modules_at_the_top_of_the_package() -> None:
    top = sorted(p.name for p in PACKAGE.glob("_*.py"))
    assert len(top) <= 12, top


def test_the_linter_reads_every_module_of_the_package() -> None:
    """`just lint` runs `ruff check .`: a folder its default excludes name (such as `_build`)
    would be skipped without a word."""
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff is not None, "ruff is a dev dependency: install the project with [dev]"
    shown = subprocess.run(
        [ruff, "check", "--show-files", "."], cwd=PACKAGE.parent, capture_output=True, text=True, check=True
    )
    read = {Path(line.strip()).resolve() for line in shown.stdout.splitlines() if line.strip().endswith(".py")}
    modules = {p.resolve() for p in [*PACKAGE.rglob("*.py"), *BACKENDS.rglob("*.py")] if "__pycache__" not in p.parts}
    assert modules - read == set()
