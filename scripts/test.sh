#!/usr/bin/env bash
# Install journeyml with its dev tools and run every check: ruff, mypy, pytest.
# In CI (CI=true) integration tests against PostgreSQL, Redis and Spark must pass, not skip.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[dev]"
echo "== ruff"
python -m ruff check .
echo "== mypy"
python -m mypy core features models training serving
echo "== pytest"
# pytest exits 5 when no test ran; that fails this script too.
python -m pytest -p no:cacheprovider "$@"
