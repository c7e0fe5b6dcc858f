# Developer recipes. Run through `bash fixtures/dev.sh RECIPE` on a fresh machine (it creates
# .venv first), or `just RECIPE` with .venv/bin on PATH.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := justfile_directory() / ".venv/bin"
export PATH := venv + ":" + env_var("PATH")

# List the recipes.
default:
    @just --list

# Create or refresh .venv with the project and its dev tools.
setup:
    bash fixtures/dev.sh --version >/dev/null

# Run the whole test suite (what CI runs): prepares what the engine tests use first when it can.
test *ARGS: test-engine
    python -m pytest {{ARGS}}

# What the demo needs: dockerd, buildx and the local Debian python base (root, Debian; about a minute).
engine:
    bash fixtures/engine/setup.sh --demo

# The engine as above plus what the tests use: docker-registry, test bases, BuildKit daemon, arm64.
test-engine:
    bash fixtures/engine/setup.sh || echo "engine: not available here; engine tests will be skipped (and fail under CI=true)" >&2

# Only the fast tests (no wheel build, no engine).
test-fast *ARGS:
    python -m pytest -m "not slow and not engine" {{ARGS}}

# The long fuzz run: 100,000 examples per fuzzed parameter (CI runs 10,000).
fuzz:
    FUZZ_EXAMPLES=100000 python -m pytest -q tests/test_render_fuzz.py tests/test_injection.py tests/test_fuzz_inputs.py

# Lint, format check, strict type check, and the package's shape (imports go down).
lint:
    ruff check .
    ruff format --check .
    mypy
    python -m pytest -q tests/test_structure.py

# Reformat the code.
fmt:
    ruff format .
    ruff check --fix .

# Benchmarks against the original flyte package (installed into .bench/ on first use).
bench *ARGS:
    bash benchmarks/run.sh {{ARGS}}

# The main job: build the example image on the local engine and run it.
demo: engine
    bash fixtures/examples/demo.sh
