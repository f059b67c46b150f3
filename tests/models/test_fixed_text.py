"""The vectorised formatters batch scoring writes reason text and JSON with must give exactly what
Python's `format` and `json.dumps` give, for any value."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from models.columns import fixed_codes, fixed_text
from serving.batch import _json_strings

FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-2, max_value=2),
    st.integers(-2000, 2000).map(lambda i: i / 1000 + 0.0005),  # ties at three decimals
    st.integers(-200, 200).map(lambda i: i / 100 + 0.005),  # ties at two
    st.sampled_from([-0.0, 0.0, -0.0004, 0.125, 2.675, 1e9, -1e-12]),
)


@given(st.lists(FLOATS, max_size=60), st.integers(0, 3), st.booleans())
def test_fixed_text_and_codes_are_pythons_format(values: list[float], decimals: int, plus: bool) -> None:
    spec = f"{'+' if plus else ''}.{decimals}f"
    want = [format(v, spec) for v in values]
    assert fixed_text(np.array(values, dtype=float), decimals, plus=plus).tolist() == want
    codes, texts = fixed_codes(np.array(values, dtype=float), decimals, plus=plus)
    assert [texts[c] for c in codes.tolist()] == want


@given(st.lists(st.one_of(st.text(max_size=30), st.none()), max_size=30))
def test_json_strings_are_json_dumps(values: list[str | None]) -> None:
    got = _json_strings(np.array(values, dtype=object)).to_pylist()
    assert got == [json.dumps(v) for v in values]
