#!/usr/bin/env bash
# Install journeyml with its dev tools and run every check: ruff, mypy, pytest.
# In CI (CI=true) integration tests against PostgreSQL, Redis and Spark must pass, not skip.
set -euo pipefail
cd "$(dirname "$0")/.."
# LightGBM's OpenMP threads spin while idle; on a busy 2-core machine that made fits ~10x slower.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
python -m pip install -q -e ".[dev]"
# The report test renders HTML in headless Chromium (Debian's package).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the report rendering test will skip outside CI" >&2
fi
echo "== ruff"
python -m ruff check .
echo "== mypy"
python -m mypy core features models training serving
echo "== pytest"
# pytest exits 5 when no test ran; that fails this script too.
python -m pytest -p no:cacheprovider "$@"
