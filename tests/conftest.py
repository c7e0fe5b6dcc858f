from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from flyte_images import _config
from flyte_images._files.statcache import reset_shared_stat_cache


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test gets its own stat-cache folder and clean settings."""
    monkeypatch.setenv("FLYTE_IMAGES_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config-home")))
    settings = ("REGISTRY", "BASE_IMAGE", "BUILDER", "CONFIG", "STAGING_CAP")
    for key in list(os.environ):
        if key.startswith("FLYTE_IMAGES_REF_") or key in {f"FLYTE_IMAGES_{s}" for s in settings}:
            monkeypatch.delenv(key)
    _config.reset()
    reset_shared_stat_cache()
    yield
    _config.reset()
    reset_shared_stat_cache()


def write_tree(root: Path, files: dict[str, tuple[bytes, int]], order: list[str] | None = None) -> None:
    """Create `files` (relative path -> (bytes, mode)) below root, in the given order."""
    root.mkdir(parents=True, exist_ok=True)
    for rel in order or list(files):
        data, mode = files[rel]
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)


@pytest.fixture(scope="session")
def engine() -> None:
    """A usable Docker engine with the local base images, or a skip (a failure under CI)."""
    from engine_support import engine_problem, set_ca_env

    problem = engine_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"the engine tests must run in CI, but {problem}; fixtures/engine/setup.sh sets it up")
        pytest.skip(f"no usable Docker engine: {problem} (run `bash fixtures/engine/setup.sh` as root)")
    set_ca_env()


@pytest.fixture(scope="session")
def local_registry(engine: None) -> Iterator[str]:
    """host:port of a real registry on loopback for this test session."""
    from engine_support import registry

    with registry() as running:
        yield running.host
