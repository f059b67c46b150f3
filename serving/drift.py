"""Score monitoring: population stability index (PSI) of every feature and score.

    monitor = DriftMonitor.fit(baseline_features, baseline_scores)   # the training population
    monitor.update(features_chunk, scores_chunk)                     # the scored one, chunk by chunk
    report = monitor.report()                                        # PSI per feature and score, warnings

Bins come from the baseline: deciles of each numeric column (fewer when values repeat) plus
one bin for missing values, since a feature going missing is drift too; a categorical column
gets one bin per baseline category (at most `MAX_LEVELS`), one for any other value and one
for missing. Counting is streaming, so the scored population is never held in memory.

    PSI = sum over bins of (actual% - expected%) * ln(actual% / expected%)

with shares floored at `EPSILON` so an empty bin does not make it infinite. Below 0.1 the
population is stable, 0.1 to 0.25 is a warning, 0.25 and above an alert (the usual credit-risk
reading of PSI); with fewer than `MIN_ROWS` scored rows the values are reported but not judged.
`baseline_table` picks the training population: the feature table at a
champion's test cutoff, which `ensure_baseline_table` computes from the event store and caches
when it is missing (so a workspace that only built features as of today still gets a real
baseline), else the earliest feature table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

WARN = 0.1
ALERT = 0.25
EPSILON = 1e-4
BINS = 10
MAX_LEVELS = 30
MIN_ROWS = 500  # below this many scored rows, bin shares are noise: PSI is reported but not judged


def psi(expected: np.ndarray, actual: np.ndarray, epsilon: float = EPSILON) -> float:
    """PSI between two count (or share) vectors over the same bins; nan when either side is empty."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.sum() <= 0 or a.sum() <= 0:
        return float("nan")
    e = np.maximum(e / e.sum(), epsilon)
    a = np.maximum(a / a.sum(), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def status(value: float) -> str:
    if not np.isfinite(value):
        return "unknown"
    return "alert" if value >= ALERT else "warn" if value >= WARN else "ok"


@dataclass
class _Numeric:
    edges: np.ndarray  # inner edges; bins (-inf, e0], (e0, e1], ..., (e_last, inf), then missing
    expected: np.ndarray
    actual: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> _Numeric:
        finite = values[np.isfinite(values)]
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, BINS + 1)[1:-1])) if finite.size else np.array([])
        col = cls(edges, np.zeros(len(edges) + 2), np.zeros(len(edges) + 2))
        col.expected = col.counts(values)
        return col

    def counts(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        missing = ~np.isfinite(values)
        idx = np.searchsorted(self.edges, values[~missing], side="left")
        out = np.bincount(idx, minlength=len(self.edges) + 2).astype(float)
        out[-1] += missing.sum()
        return out


@dataclass
class _Categorical:
    levels: list[str]
    expected: np.ndarray
    actual: np.ndarray

    @classmethod
    def fit(cls, values: pd.Series) -> _Categorical:
        counts = values.dropna().astype(str).value_counts()
        levels = sorted(counts.index[:MAX_LEVELS].tolist())
        col = cls(levels, np.zeros(len(levels) + 2), np.zeros(len(levels) + 2))
        col.expected = col.counts(values)
        return col

    def counts(self, values: pd.Series) -> np.ndarray:
        codes = pd.Categorical(values.astype("object"), categories=self.levels).codes
        n = len(self.levels)
        out = np.bincount(np.where(codes >= 0, codes, n), minlength=n + 2).astype(float)
        missing = int(pd.isna(values).sum())
        out[n] -= missing  # the "other" bin took the missing ones too
        out[n + 1] += missing
        return out


@dataclass
class DriftMonitor:
    """Baseline histograms and the running counts of the scored population."""

    features: dict[str, _Numeric | _Categorical] = field(default_factory=dict)
    scores: dict[str, _Numeric] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)  # where the baseline came from
    rows: int = 0

    @classmethod
    def fit(
        cls,
        features: pd.DataFrame,
        scores: Mapping[str, np.ndarray],
        *,
        feature_columns: Sequence[str] | None = None,
        baseline: Mapping[str, Any] | None = None,
    ) -> DriftMonitor:
        """`features`: the baseline feature rows; `scores`: name -> baseline score values."""
        cols = [c for c in (feature_columns or features.columns) if c in features.columns]
        monitor = cls(baseline=dict(baseline or {}))
        for name in cols:
            series = features[name]
            if series.dtype.kind in "fiub":
                monitor.features[name] = _Numeric.fit(series.to_numpy(dtype=float))
            elif series.dtype.kind == "O" or str(series.dtype) in ("string", "category"):
                monitor.features[name] = _Categorical.fit(series)
        for name, values in scores.items():
            monitor.scores[name] = _Numeric.fit(np.asarray(values, dtype=float))
        return monitor

    def update(self, features: pd.DataFrame | None, scores: Mapping[str, np.ndarray]) -> None:
        """Count one chunk of the scored population (features may be None: scores only)."""
        if features is not None:
            for name, col in self.features.items():
                if name not in features.columns:
                    continue
                if isinstance(col, _Numeric):
                    col.actual += col.counts(features[name].to_numpy(dtype=float, na_value=np.nan))
                else:
                    col.actual += col.counts(features[name])
            self.rows += len(features)
        for name, values in scores.items():
            if name in self.scores:
                self.scores[name].actual += self.scores[name].counts(np.asarray(values, dtype=float))

    def report(self) -> dict[str, Any]:
        """PSI per feature and per score, sorted worst first, and the names over each threshold."""
        feats = {n: psi(c.expected, c.actual) for n, c in self.features.items()}
        scores = {n: psi(c.expected, c.actual) for n, c in self.scores.items()}

        def ranked(values: dict[str, float]) -> dict[str, float]:
            finite = {k: round(v, 6) for k, v in values.items() if np.isfinite(v)}
            return dict(sorted(finite.items(), key=lambda kv: (-kv[1], kv[0])))

        both = {**{f"feature:{k}": v for k, v in feats.items()}, **{f"score:{k}": v for k, v in scores.items()}}
        rows = int(max((c.actual.sum() for c in [*self.features.values(), *self.scores.values()]), default=0))
        judged = rows >= MIN_ROWS
        return {
            "baseline": self.baseline,
            "thresholds": {"warn": WARN, "alert": ALERT, "min_rows": MIN_ROWS},
            "rows": rows,
            "judged": judged,
            "features": ranked(feats),
            "scores": ranked(scores),
            "warn": sorted(k for k, v in both.items() if judged and status(v) == "warn"),
            "alert": sorted(k for k, v in both.items() if judged and status(v) == "alert"),
            "max_psi": round(max((v for v in both.values() if np.isfinite(v)), default=0.0), 6),
        }


def baseline_table(
    tables: Sequence[Path], test_cutoffs: Sequence[pd.Timestamp], table_for: Mapping[pd.Timestamp, Path]
) -> tuple[Path | None, str]:
    """The training population's feature table and why it was chosen.

    tables: every offline feature table, oldest first; test_cutoffs: the champions' test
    cutoffs (in task order); table_for: cutoff -> the table path it would have.
    """
    for cutoff in test_cutoffs:
        path = table_for.get(cutoff)
        if path is not None and path.exists():
            return path, f"feature table at a champion's test cutoff {cutoff.date().isoformat()}"
    if tables:
        return tables[0], "earliest feature table (none was built at a champion's test cutoff)"
    return None, "no feature table"


def ensure_baseline_table(
    settings: Any, test_cutoffs: Sequence[pd.Timestamp]
) -> tuple[Path, pd.Timestamp] | None:
    """(feature table, cutoff) of the population a champion was tested on, computed if missing.

    An offline feature table at a champion's test cutoff is used as it is. Otherwise the same
    feature definitions compute it from the event store (events after the cutoff unseen) and it
    is cached under `<features>/drift_baseline/`, outside the offline feature view, so scoring
    never adds feature tables. None when there is no cutoff or no event store.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from features.events.store import EventStore
    from features.journeys import compute_features
    from features.online import table_path

    for cutoff in test_cutoffs:
        if table_path(settings, cutoff).exists():
            return Path(table_path(settings, cutoff)), cutoff
    if not test_cutoffs:
        return None
    cutoff = test_cutoffs[0]
    cached = Path(settings.features_dir) / "drift_baseline" / Path(table_path(settings, cutoff)).name
    if cached.exists():
        return cached, cutoff
    store = EventStore(settings.events_dir)
    if store.is_empty():
        return None
    customers = str(settings.customers_path) if settings.customers_path.exists() else None
    frame = compute_features(store.glob, [cutoff], customers=customers)
    if frame.empty:
        return None
    frame = frame.rename(columns={"cutoff": "event_timestamp"})
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name("." + cached.name + ".tmp")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    tmp.replace(cached)
    return cached, cutoff


def _names(names: Sequence[str], top: int = 12) -> str:
    shown = ", ".join(names[:top])
    return shown + (f" and {len(names) - top} more" if len(names) > top else "")


def human(report: Mapping[str, Any], top: int = 10) -> str:
    """A few readable lines: the worst PSIs and the warnings naming drifting features and scores."""
    lines = [f"drift against {report.get('baseline', {}).get('table', '?')} (PSI; warn >= {WARN}, alert >= {ALERT})"]
    for kind in ("scores", "features"):
        items = list(report.get(kind, {}).items())[:top]
        if items:
            lines.append(f"  {kind}: " + ", ".join(f"{k} {v:.3f}" for k, v in items))
    if not report.get("judged", True):
        lines.append(f"  {report.get('rows', 0)} rows scored: too few to judge drift (needs {MIN_ROWS})")
        return "\n".join(lines)
    if report.get("alert"):
        lines.append("[red]alert[/red]: population shifted for " + _names(report["alert"]))
    if report.get("warn"):
        lines.append("[yellow]warning[/yellow]: drifting " + _names(report["warn"]))
    if not report.get("alert") and not report.get("warn"):
        lines.append("  no feature or score drifted past the warning threshold")
    return "\n".join(lines)
