#!/usr/bin/env bash
# Run the benchmarks. The original `flyte` package is a benchmark-only dependency: it is
# installed into .bench/venv beside this project, never into the project's own environment.
set -euo pipefail
cd "$(dirname "$0")/.."
FLYTE_VERSION="${FLYTE_VERSION:-2.12.1}"
# Reinstalled when pyproject.toml changes too: the editable install's entry points (the
# builders) are read from its metadata, written at install time.
STAMP="$(sha256sum pyproject.toml | cut -c1-16)-$FLYTE_VERSION"
if [ ! -x .bench/venv/bin/python ] || ! .bench/venv/bin/python -c "import flyte, flyte_images" 2>/dev/null \
   || [ "$(cat .bench/venv/.stamp 2>/dev/null)" != "$STAMP" ]; then
  echo "setting up .bench/venv (flyte==$FLYTE_VERSION and this project) ..." >&2
  rm -rf .bench/venv
  python3 -m venv .bench/venv
  .bench/venv/bin/python -m pip install --quiet "flyte==$FLYTE_VERSION" -e . 2>&1 | grep -v '^WARNING: Location' >&2 || true
  echo "$STAMP" > .bench/venv/.stamp
fi
# Users' Python keeps compiled bytecode (__pycache__); a process that may not write it compiles
# every module on every start, which would be measured as our start-up cost.
unset PYTHONDONTWRITEBYTECODE
.bench/venv/bin/python -m compileall -q flyte_images builders >/dev/null 2>&1 || true
if [ "$(id -u)" = 0 ]; then
  bash fixtures/engine/setup.sh >/dev/null 2>&1 || echo "engine not available: the registry benchmark will say why" >&2
fi
.bench/venv/bin/python benchmarks/bench_startup.py
echo
.bench/venv/bin/python benchmarks/bench_identifier.py "$@"
echo
.bench/venv/bin/python benchmarks/bench_large.py
echo
.bench/venv/bin/python benchmarks/bench_registry.py
echo
.bench/venv/bin/python benchmarks/bench_build.py
echo
.bench/venv/bin/python benchmarks/bench_multiarch.py
echo
.bench/venv/bin/python benchmarks/bench_append.py
echo
.bench/venv/bin/python benchmarks/bench_size.py
echo
.bench/venv/bin/python benchmarks/bench_noop.py
echo
.bench/venv/bin/python benchmarks/bench_zstd.py
echo
.bench/venv/bin/python benchmarks/bench_pool.py
