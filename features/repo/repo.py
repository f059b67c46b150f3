"""Feast definitions for the `feast` CLI; the objects come from features/online.py (one source of truth)."""

import os

from features.online import FEATURE_VIEW, definitions

_home = os.path.abspath(os.environ.get("JOURNEY_HOME", ".journey"))
_tables = os.path.join(_home, "features", FEATURE_VIEW, "*.parquet")
globals().update({obj.name: obj for obj in definitions(_tables)})
