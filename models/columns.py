"""Read-once numpy views of a feature frame, for the array scoring path (`Scorer`).

Scoring one API customer used to cost more in pandas (column selection, frame copies,
`concat`, per-row `iloc`) than in the trees. `FeatureColumns` converts the frame's numeric
columns to one float64 matrix the first time any is asked for, and caches categorical codes,
missing masks and raw values per column, so every model of every task reads the same arrays.
The answers equal `models.estimators.encode_frame` and the pandas paths of
`models.journey_model.JourneyModel` (tests/models/test_scorer.py holds them equal).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

SMALL = 512  # below this many rows, categorical codes come from a dict; above, from pd.Categorical


def to_number(v: Any) -> float:
    """One cell as `pd.to_numeric(errors="coerce")` (and `encode_frame`) reads it: NaN when not a number."""
    if v is None or v is pd.NA:
        return float("nan")
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def default_index(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame.reset_index(drop=True)`, without the copy when the index is already 0..n-1 (a batch
    chunk of 50,000 rows x 150 columns costs ~20 ms to copy)."""
    index = frame.index
    if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
        return frame
    return frame.reset_index(drop=True)


def _numeric_dtype(dtype: Any) -> bool:
    return getattr(dtype, "kind", "O") in "fiub"


def _float_blocks(frame: pd.DataFrame) -> tuple[np.ndarray, dict[Any, int]] | None:
    """The frame's numeric columns as one (columns x rows) float64 matrix without going column by column: pandas
    keeps same-dtype columns in 2-D blocks, and a feature frame (online or offline) holds its
    numbers in one float64 block. Selecting ~150 columns of a one-row frame through the public
    API cost ~0.25 ms, a tenth of a request; reading the blocks costs microseconds. None (use the
    public path) when a numeric column is a nullable extension type, or pandas' internals are not
    what this expects."""
    try:
        columns = frame.columns
        if columns.has_duplicates:
            return None
        parts: list[np.ndarray] = []
        pos: dict[Any, int] = {}
        width = 0
        for block in frame._mgr.blocks:
            if not _numeric_dtype(block.dtype):
                continue
            values = block.values
            if not isinstance(values, np.ndarray) or values.ndim != 2:
                return None
            for j, name in enumerate(columns.take(block.mgr_locs.as_array).tolist()):
                pos[name] = width + j
            width += values.shape[0]
            parts.append(values if values.dtype == np.float64 else values.astype(np.float64))
        if not parts:
            return np.empty((0, len(frame))), {}
        rows = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return rows, pos
    except (AttributeError, TypeError, IndexError):
        return None


class FeatureColumns:
    """Columns of `frame` as numpy arrays, converted once and cached."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.n = len(frame)
        self._block: np.ndarray | None = None
        self._pos: dict[str, int] = {}
        self._numeric: dict[str, np.ndarray] = {}
        self._codes: dict[tuple[str, int], np.ndarray] = {}
        self._missing: dict[str, np.ndarray] = {}
        self._objects: dict[str, np.ndarray] = {}
        self.columns = set(frame.columns)

    def _ensure_block(self) -> np.ndarray:
        """(numeric columns x rows) float64: one contiguous row per column, as pandas stores them."""
        if self._block is None:
            fast = _float_blocks(self.frame)
            if fast is not None:
                self._block, self._pos = fast
                return self._block
            names = [c for c, dt in zip(self.frame.columns, self.frame.dtypes, strict=True) if _numeric_dtype(dt)]
            self._pos = {c: i for i, c in enumerate(names)}
            if names:
                block = self.frame[names] if len(names) < self.frame.shape[1] else self.frame
                self._block = np.ascontiguousarray(block.to_numpy(dtype=np.float64, na_value=np.nan).T)
            else:
                self._block = np.empty((0, self.n))
        return self._block

    def numeric(self, name: str) -> np.ndarray:
        """float64 values (NaN where missing or not a number); all-NaN when the column is absent."""
        block = self._ensure_block()
        pos = self._pos.get(name)
        if pos is not None:
            return block[pos]
        cached = self._numeric.get(name)
        if cached is None:
            if name in self.columns:
                cached = pd.to_numeric(self.frame[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                cached = np.full(self.n, np.nan)
            self._numeric[name] = cached
        return cached

    def numeric_rows(self, names: Sequence[str], out: np.ndarray) -> None:
        """Write the columns `names` into `out` (len(names) x rows; any float dtype), one row each."""
        block = self._ensure_block()
        pos = self._pos
        if not len(names):
            return
        if all(c in pos for c in names):
            # Copied run by run (features in the frame's order are one run): a fancy-indexed gather
            # would first build a float64 temporary of the whole selection (56 MB for a 50,000-row
            # batch chunk), paying its page faults again on every chunk.
            idx = np.fromiter((pos[c] for c in names), dtype=np.intp, count=len(names))
            breaks = np.flatnonzero(np.diff(idx) != 1) + 1
            starts = np.concatenate(([0], breaks)).tolist()
            ends = np.concatenate((breaks, [len(idx)])).tolist()
            for a, b in zip(starts, ends, strict=True):
                first = int(idx[a])
                out[a:b] = block[first : first + (b - a)]
            return
        for j, c in enumerate(names):
            out[j] = self.numeric(c)

    def numeric_matrix(self, names: Sequence[str]) -> np.ndarray:
        """(rows x len(names)) float64 in `names` order."""
        out = np.empty((len(names), self.n))
        self.numeric_rows(names, out)
        return out.T

    def objects(self, name: str) -> np.ndarray:
        """The raw values as an object array (None-filled when the column is absent)."""
        cached = self._objects.get(name)
        if cached is None:
            if name in self.columns:
                cached = self.frame[name].to_numpy(dtype=object)
            else:
                cached = np.full(self.n, None, dtype=object)
            self._objects[name] = cached
        return cached

    def codes(self, name: str, categories: list[str]) -> np.ndarray:
        """float32 code of each value among `categories` (missing or unseen: NaN), as encode_frame does."""
        key = (name, id(categories))
        cached = self._codes.get(key)
        if cached is None:
            if name not in self.columns:
                cached = np.full(self.n, np.nan, dtype=np.float32)
            elif self.n <= SMALL:
                lookup = {c: float(i) for i, c in enumerate(categories)}
                cached = np.array(
                    [np.nan if v is None or v is pd.NA or v != v else lookup.get(str(v), np.nan)
                     for v in self.objects(name)],
                    dtype=np.float32,
                )  # fmt: skip
            else:
                codes = pd.Categorical(self.frame[name].astype("string"), categories=categories).codes
                cached = np.where(codes < 0, np.nan, codes).astype(np.float32)
            self._codes[key] = cached
        return cached

    def missing(self, name: str) -> np.ndarray:
        """pandas' isna of the column (True everywhere when absent)."""
        cached = self._missing.get(name)
        if cached is None:
            if name not in self.columns:
                cached = np.ones(self.n, dtype=bool)
            elif name in self._pos or _numeric_dtype(self.frame[name].dtype):
                cached = np.isnan(self.numeric(name))
            else:
                cached = pd.isna(self.objects(name))
            self._missing[name] = cached
        return cached

    def column_values(self, name: str, rows: np.ndarray) -> list[Any]:
        """The raw values at `rows` as Python scalars (floats for numeric columns; None-filled when
        the column is absent)."""
        if name not in self.columns:
            return [None] * len(rows)
        self._ensure_block()
        if name in self._pos:
            return self.numeric(name)[rows].tolist()
        return [v.item() if isinstance(v, np.generic) else v for v in self.objects(name)[rows].tolist()]


def encode_matrix(
    cols: FeatureColumns, features: Sequence[str], categories: dict[str, list[str]], extra: dict[str, np.ndarray]
) -> np.ndarray:
    """The float32 matrix LightGBM is given, in training column order: `encode_frame` on arrays.
    `extra` holds derived columns (BG/NBD) that replace any frame column of the same name.

    Filled one feature at a time in a (features x rows) buffer, each a contiguous write, then
    transposed once to the row-major layout LightGBM reads fastest."""
    names = list(features)
    rows = np.empty((len(names), cols.n), dtype=np.float32)
    plain = [j for j, c in enumerate(names) if c not in categories and c not in extra]
    if plain and plain == list(range(plain[0], plain[0] + len(plain))):
        cols.numeric_rows([names[j] for j in plain], rows[plain[0] : plain[0] + len(plain)])
    elif plain:
        part = np.empty((len(plain), cols.n), dtype=np.float32)
        cols.numeric_rows([names[j] for j in plain], part)
        rows[plain] = part
    for j, c in enumerate(names):
        if c in extra:
            rows[j] = extra[c]
        elif c in categories:
            rows[j] = cols.codes(c, categories[c])
    return np.ascontiguousarray(rows.T)


@functools.lru_cache(maxsize=16)
def _fixed_table(spec: str, scale: float, limit: int) -> tuple[str, ...]:
    return tuple(format(i / scale, spec) for i in range(-limit, limit + 1))


def fixed_codes(
    values: np.ndarray, decimals: int, plus: bool = False, span: int = 10
) -> tuple[np.ndarray, Sequence[str]]:
    """`format(v, ".{decimals}f")` (`"+"` in front when `plus`) of every value, exactly as Python
    writes it, as dictionary codes: (int32 code per value, the texts the codes index). A table
    lookup per value: values within +-`span` not within 1e-6 of a rounding tie take the cached text
    of their multiple of 10^-decimals; the rest (near ties, out of range, NaN, inf, negative zeros)
    are written by `format` once per distinct text. Batch scoring writes hundreds of thousands of
    numbers per chunk into reason text this way."""
    v = np.asarray(values, dtype=float)
    spec = f"{'+' if plus else ''}.{decimals}f"
    scale = 10.0**decimals
    limit = int(span * scale)
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = v * scale
        frac = np.abs(scaled - np.floor(scaled) - 0.5)
        fast = np.isfinite(scaled) & (np.abs(scaled) <= limit) & (frac > 1e-6) & ~((scaled == 0) & np.signbit(v))
        codes = (np.where(fast, np.rint(scaled), 0) + limit).astype(np.int32)
    table: Sequence[str] = _fixed_table(spec, scale, limit)
    extra = np.flatnonzero(~fast)
    if len(extra):  # a -0 that rounds to zero is written "-0.000", unlike the table's "0.000"
        texts = [format(x, spec) for x in v[extra].tolist()]
        uniq = list(dict.fromkeys(texts))
        where = {t: len(table) + i for i, t in enumerate(uniq)}
        codes[extra] = [where[t] for t in texts]
        table = [*table, *uniq]
    with np.errstate(invalid="ignore"):
        near_zero = fast & (codes == limit) & (v < 0)  # -0.0004 rounds to zero and is written "-0.000"
    if near_zero.any():
        minus = format(-0.0, spec)
        table = [*table, minus]
        codes[near_zero] = len(table) - 1
    return codes, table


def fixed_text(values: np.ndarray, decimals: int, plus: bool = False, span: int = 10) -> np.ndarray:
    """`format(v, ".{decimals}f")` (`"+"` in front when `plus`) of every value, as an object array,
    exactly as Python writes it (`fixed_codes`, decoded)."""
    codes, texts = fixed_codes(values, decimals, plus=plus, span=span)
    return np.asarray(texts, dtype=object)[codes]
