"""Reason codes: the features that moved a score most, in plain words.

Contributions come from `models.attribution` (leaf attributions, TreeSHAP's expectation given
the leaves a row reaches; or exact TreeSHAP, `pred_contrib`), in raw score units: log-odds for
probabilities, log-amount for values. Words come from the feature
definitions when they carry a template (`reason`, `template` or `text` with `{value}`),
else from a description, else from the rules below keyed on common feature names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

Describe = Callable[[str, Any], str]

_FIXED: dict[str, str] = {
    "btyd_p_alive": "{pct} chance of still being an active customer (BG/NBD)",
    "btyd_expected_purchases": "{value:.1f} purchases expected in the horizon (BG/NBD)",
    "btyd_p_purchase": "{pct} chance of buying in the horizon (BG/NBD)",
    "days_since_last_purchase": "no purchase in {value:.0f} days",
    "days_since_first_purchase": "first purchase {value:.0f} days ago",
    "days_since_last_event": "no activity in {value:.0f} days",
    "days_since_last_activity": "no activity in {value:.0f} days",
    "tenure_days": "known for {value:.0f} days",
    "interpurchase_days_mean": "buys every {value:.0f} days on average",
    "purchase_recency_ratio": "{value:.1f}x the usual gap between purchases since the last one",
    "orders_per_30d": "{value:.2f} orders per 30 days",
    "purchase_days_lifetime": "bought on {value:.0f} different days",
    "aov_lifetime": "average order of {value:.2f}",
    "days_since_first_seen": "first seen {value:.0f} days ago",
    "purchase_count": "{value:.0f} purchases so far",
    "event_count": "{value:.0f} events so far",
    "average_order_value": "average order of {value:.2f}",
    "period": "time since the cutoff",
}
_UNITS = {"d": "days", "h": "hours", "w": "weeks"}


def _pretty_count(what: str, value: float, window: str | None) -> str:
    words = what.replace("_", " ")
    if words.endswith(" count"):
        words = words[: -len(" count")]
    text = f"{value:.0f} {words}"
    if window:
        n, unit = re.match(r"(\d+)([dhw])", window).groups()  # type: ignore[union-attr]
        text += f" in the last {n} {_UNITS[unit] if int(n) != 1 else _UNITS[unit][:-1]}"
    return text


def _by_name(name: str, value: Any) -> str:
    if isinstance(value, float | int | np.floating | np.integer) and not (
        isinstance(value, float) and math.isnan(value)
    ):
        v = float(value)
        if name in _FIXED:
            return _FIXED[name].format(value=v, pct=f"{v:.0%}")
        m = re.fullmatch(r"(days|hours)_since_(?:last_)?(\w+)", name)
        if m:
            return f"last {m.group(2).replace('_', ' ')} {v:.0f} {m.group(1)} ago"
        m = re.fullmatch(r"(\w+?)_(\d+[dhw])", name)
        if m and (m.group(1).endswith(("count", "s", "events")) or m.group(1).startswith("n_")):
            return _pretty_count(m.group(1).removeprefix("n_"), v, m.group(2))
        m = re.fullmatch(r"(\w+?)_(?:share|rate|ratio)(?:_(\d+[dhw]))?", name)
        if m:
            return f"{name.replace('_', ' ')} {v:.0%}" if 0 <= v <= 1 else f"{name.replace('_', ' ')} {v:.2f}"
        return f"{name.replace('_', ' ')} = {v:.4g}"
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return f"{name.replace('_', ' ')} unknown"
    return f"{name.replace('_', ' ')}: {value}"


def _fill_templates(templates: Sequence[str], value: Any) -> str | None:
    for tpl in templates:
        try:
            v = float(value)
            return tpl.format(value=v, v=v, pct=f"{v:.0%}")
        except (TypeError, ValueError, KeyError, IndexError):
            try:
                return tpl.format(value=value, v=value)
            except (KeyError, IndexError, ValueError, TypeError):  # e.g. "{value:.0f}" of None
                continue
    return None


def _window_phrase(window: str) -> str:
    m = re.fullmatch(r"(\d+)d", window or "")
    if m:
        return f" in the last {m.group(1)} days"
    if window and window.startswith("last 30d vs"):
        return " (last 30 days vs the 30 before)"
    return ""


def _what(defn: Any) -> str | None:
    text = str(getattr(defn, "definition", "") or "")
    m = re.match(r"Number of (.+?)(?: \(|\.|$)", text)
    return m.group(1) if m else None


def _feature_spec(defn: Any, name: str) -> dict[str, Any] | None:
    """What `_feature_words` needs of a feature-engine definition, worked out once per feature."""
    unit = getattr(defn, "unit", None)
    if unit is None:
        return None
    window = str(getattr(defn, "window", "") or "")
    return {
        "unit": unit,
        "categorical": getattr(defn, "kind", "numeric") == "categorical" or unit == "category",
        "base": re.sub(r"_(\d+d|lifetime|trend_30d)$", "", name).replace("_", " "),
        "phrase": _window_phrase(window),
        "what": _what(defn) if unit == "count" else None,
    }


def _feature_words(spec: dict[str, Any], name: str, value: Any) -> str | None:
    """Words for one value from a `_feature_spec` (name, definition, window, unit, kind)."""
    base, unit, phrase = spec["base"], spec["unit"], spec["phrase"]
    if spec["categorical"]:
        return f"{base}: {value}" if value is not None else f"{base} unknown"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(v):
        return f"{name.replace('_', ' ')}: never / not applicable"
    if name in _FIXED:
        return _FIXED[name].format(value=v, pct=f"{v:.0%}")
    if name.startswith("active_days_"):
        return f"active on {v:.0f} days{phrase}"
    if unit == "count":
        return f"{v:.0f} {spec['what'] or base}{phrase}"
    if unit == "days" and name.startswith("days_since_"):
        return f"{base.removeprefix('days since ')} {v:.0f} days ago"
    if unit in ("ratio", "share"):
        if name.endswith("trend_30d"):
            direction = "up" if v > 0 else "down" if v < 0 else "flat"
            return f"{base} {direction} {abs(v):.0%}{phrase}"
        return f"{base} {v:.0%}{phrase}"
    if unit == "flag":
        return f"{base}: {'yes' if v >= 0.5 else 'no'}"
    if unit == "currency":
        return f"{base} {v:,.2f}{phrase}"
    return f"{base} {v:.3g} {unit}{phrase}"


def _templates(defn: Any) -> list[str]:
    get = (lambda k: defn.get(k)) if isinstance(defn, Mapping) else (lambda k: getattr(defn, k, None))
    return [tpl for key in ("reason", "template", "text") if isinstance(tpl := get(key), str) and "{" in tpl]


def definitions_describer(definitions: Mapping[str, Any] | None = None) -> Describe:
    """A describe(feature, value) function using `definitions` (name -> definition) first."""
    defs = definitions
    if defs is None:
        try:
            from features.journeys.definitions import FEATURES  # the feature engine's registry

            defs = {getattr(f, "name", str(f)): f for f in FEATURES}
        except Exception:  # noqa: BLE001 - reasons fall back to name-based words; scoring must not fail
            defs = {}

    compiled: dict[str, tuple[list[str], dict[str, Any] | None]] = {}
    said: dict[tuple[str, Any], str] = {}  # counts and days repeat across customers: words once each

    def describe(name: str, value: Any) -> str:
        key: tuple[str, Any] | None = (name, value)
        try:
            text = said.get(key)  # type: ignore[arg-type]
        except TypeError:  # an unhashable value
            key, text = None, None
        if text is None:
            text = _describe(name, value)
            if key is not None:
                if len(said) >= 100_000:
                    said.clear()
                said[key] = text
        return text

    def _describe(name: str, value: Any) -> str:
        known = compiled.get(name)
        if known is None:  # what the definition offers is worked out once per feature
            defn = defs.get(name) if defs else None
            known = compiled[name] = ([], None) if defn is None else (_templates(defn), _feature_spec(defn, name))
        templates, spec = known
        if templates:
            text = _fill_templates(templates, value)
            if text:
                return text
        if spec is not None:
            text = _feature_words(spec, name, value)
            if text:
                return text
        return _by_name(name, value)

    return describe


def _reason(name: str, c: float, value: Any, describe: Describe) -> dict[str, Any]:
    return {
        "feature": name,
        "value": None if value is None or (isinstance(value, float) and math.isnan(value)) else value,
        "contribution": round(c, 4),
        "direction": "raises" if c > 0 else "lowers",
        "text": describe(name, value),
    }


def top_reasons_matrix(
    contributions: np.ndarray,
    names: Sequence[str],
    column_of: Callable[[str], Sequence[Any]],
    describe: Describe,
    top_k: int = 3,
) -> list[list[dict[str, Any]]]:
    """`top_reasons` on a contribution matrix (rows x features, no bias column): the ranking is one
    argsort over the matrix, and only the features that made some row's top_k are read, each once
    as a whole column (`column_of(name)`: that feature's values for these rows, as Python
    scalars), then the cells are put in words."""
    mat = np.asarray(contributions, dtype=float)
    order = np.argsort(-np.abs(mat), axis=1)[:, :top_k]
    picked = np.take_along_axis(mat, order, axis=1)
    labels = [str(v) for v in names]
    columns: dict[int, Sequence[Any]] = {}
    for j in np.unique(order).tolist():
        columns[j] = column_of(labels[j])
    out: list[list[dict[str, Any]]] = []
    for i, (js, cs) in enumerate(zip(order.tolist(), picked.tolist(), strict=True)):
        out.append([_reason(labels[j], c, columns[j][i], describe) for j, c in zip(js, cs, strict=True) if c != 0.0])
    return out


def top_reasons(
    contributions: pd.DataFrame, values: pd.DataFrame, describe: Describe, top_k: int = 3
) -> list[list[dict[str, Any]]]:
    """Per row, the `top_k` features by absolute contribution: feature, value, contribution (signed,
    raw score units; positive raises the score), direction and text."""
    contrib = contributions.drop(columns=["bias"], errors="ignore")
    names = np.asarray(contrib.columns)
    mat = contrib.to_numpy(float)
    order = np.argsort(-np.abs(mat), axis=1)[:, :top_k]
    out: list[list[dict[str, Any]]] = []
    for i in range(len(mat)):
        row = []
        for j in order[i]:
            c = float(mat[i, j])
            if c == 0.0:
                continue
            name = str(names[j])
            value = values.iloc[i][name] if name in values.columns else None
            if isinstance(value, np.generic):
                value = value.item()
            row.append({
                "feature": name,
                "value": None if value is None or (isinstance(value, float) and math.isnan(value)) else value,
                "contribution": round(c, 4),
                "direction": "raises" if c > 0 else "lowers",
                "text": describe(name, value),
            })  # fmt: skip
        out.append(row)
    return out
