"""Leaf attributions of a LightGBM booster: TreeSHAP-like reasons at the cost of a prediction.

TreeSHAP (`pred_contrib`) costs O(leaves x depth^2) per tree and row, 20-80 times a prediction
on journeyml's models. Here a row's contributions come from the leaves it reaches: one
`pred_leaf` call and a product with a sparse table of (trees x leaves x features) built once per
model.

A leaf's row of the table is, when the model's training rows reached it, the mean TreeSHAP
values of that tree over those rows (`leaf_shap_table`, computed when the model is fitted and
saved with it): rows that share a leaf share every split on their path and differ only in the
splits off it, so this is TreeSHAP's expectation given the leaf. Otherwise (a leaf no sampled
row reached, or a model saved before the table existed) it is the leaf's path credit (Saabas,
"tree interpreter"): the change of expected value at each step from root to leaf, credited to
the step's split feature.

Both kinds of row add up, per tree, to the leaf value minus the tree's expected value (leaf values
weighted by training rows, TreeSHAP's bias), so a row's contributions plus the bias equal its raw
score exactly, as `pred_contrib`'s do. Agreement with exact TreeSHAP on the bench models and the
cost: docs/performance.md#reasons (`python benchmarks/bench_reasons.py`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

METHODS = ("leaf", "shap")
_DENSE_CELLS = 60_000  # rows x trees x features up to which a dense gather beats the sparse product
SAMPLE_ROWS = 2_000  # training rows the leaf table is averaged over


def _expected(node: dict[str, Any], values: dict[int, float]) -> float:
    """The expected value of `node` over the training rows that reached it (leaf values weighted by
    their row counts, as in TreeSHAP), stored in `values` by node id for the node and everything
    below it; returns the node's value."""
    stack: list[tuple[dict[str, Any], bool]] = [(node, False)]
    counts: dict[int, float] = {}
    while stack:
        cur, done = stack.pop()
        if "split_feature" not in cur:
            values[id(cur)] = float(cur["leaf_value"])
            counts[id(cur)] = float(cur.get("leaf_count", 1) or 0)
        elif not done:
            stack += [(cur, True), (cur["left_child"], False), (cur["right_child"], False)]
        else:
            left, right = cur["left_child"], cur["right_child"]
            nl, nr = counts[id(left)], counts[id(right)]
            total = nl + nr
            values[id(cur)] = (
                (values[id(left)] * nl + values[id(right)] * nr) / total if total > 0 else float(cur["internal_value"])
            )
            counts[id(cur)] = total
    return values[id(node)]


def leaf_shap_table(booster: Any, X: np.ndarray, num_iteration: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Per tree and leaf, the mean TreeSHAP values of the rows of `X` (a sample of the training
    matrix; at most SAMPLE_ROWS are used) that reach the leaf; JSON-ready and sparse: per tree the
    features with any credit, the leaves reached and their values (9 significant digits)."""
    X = np.asarray(X, dtype=np.float32)
    if len(X) > SAMPLE_ROWS:
        X = X[np.sort(np.random.default_rng(seed).choice(len(X), SAMPLE_ROWS, replace=False))]
    n_trees = int(num_iteration or booster.current_iteration())
    leaves = np.asarray(booster.predict(X, pred_leaf=True, num_iteration=n_trees), dtype=np.int64).reshape(len(X), -1)
    trees = []
    for t in range(n_trees):
        shap = np.asarray(booster.predict(X, pred_contrib=True, start_iteration=t, num_iteration=1))[:, :-1]
        width = int(leaves[:, t].max()) + 1 if len(X) else 0
        counts = np.bincount(leaves[:, t], minlength=width)
        sums = np.zeros((width, shap.shape[1]))
        np.add.at(sums, leaves[:, t], shap)
        seen = np.flatnonzero(counts)
        means = sums[seen] / counts[seen, None]
        used = np.flatnonzero(np.abs(means).sum(axis=0) > 0)
        trees.append({
            "features": used.tolist(),
            "leaves": seen.tolist(),
            "values": [[float(f"{v:.9g}") for v in row] for row in means[:, used]],
        })  # fmt: skip
    return {"rows": len(X), "trees": trees}


class LeafAttribution:
    """The per-leaf credit table of one booster (its first `num_iteration` trees)."""

    booster: Any = None  # the booster the table was built from (set by the estimator that caches it)

    def __init__(self, booster: Any, num_iteration: int | None = None, leaf_shap: dict[str, Any] | None = None) -> None:
        dump = booster.dump_model(num_iteration=num_iteration or -1)
        self.n_features = int(dump["max_feature_idx"]) + 1
        trees = dump["tree_info"]
        if num_iteration:
            trees = trees[:num_iteration]
        self.n_trees = len(trees)
        widths = [max(int(t.get("num_leaves", 1)), 1) for t in trees]
        self.offsets = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
        self.table = np.zeros((int(sum(widths)), self.n_features), dtype=np.float64)
        bias = 0.0
        for t, tree in enumerate(trees):
            root = tree["tree_structure"]
            if "split_feature" not in root:  # a one-leaf tree: a constant
                bias += float(root["leaf_value"])
                continue
            values: dict[int, float] = {}
            bias += _expected(root, values)
            self._credit(root, values, int(self.offsets[t]))
        self.bias = bias
        self._sparse: Any = None
        self.shap_leaves = 0
        if leaf_shap:
            for t, tree in enumerate(leaf_shap["trees"][: self.n_trees]):
                rows = self.offsets[t] + np.asarray(tree["leaves"], dtype=np.int64)
                block = np.zeros((len(rows), self.n_features))
                if tree["features"]:
                    block[:, tree["features"]] = np.asarray(tree["values"], dtype=float)
                self.table[rows] = block
                self.shap_leaves += len(rows)

    def _credit(self, root: dict[str, Any], values: dict[int, float], offset: int) -> None:
        """Each leaf's path credit: the change of expected value at every step from the root,
        credited to the step's split feature."""
        stack: list[tuple[dict[str, Any], np.ndarray]] = [(root, np.zeros(self.n_features))]
        while stack:
            node, credit = stack.pop()
            parent = values[id(node)]
            for side in ("left_child", "right_child"):
                child = node[side]
                step = credit.copy()
                step[int(node["split_feature"])] += values[id(child)] - parent
                if "split_feature" in child:
                    stack.append((child, step))
                else:
                    self.table[offset + int(child.get("leaf_index", 0))] = step

    def contributions(self, leaves: np.ndarray) -> np.ndarray:
        """(n, features + 1) from `pred_leaf` output (n, trees): per-feature credit, bias last.

        One sparse product: a row's leaves as a 0/1 row over all trees' leaves, times the credit
        table, which is sparse too (a leaf credits only the features split on above it), so the
        cost is rows x trees x depth, not rows x trees x features."""
        from scipy import sparse

        n = len(leaves)
        index = (np.asarray(leaves, dtype=np.int64).reshape(n, -1)[:, : self.n_trees] + self.offsets).ravel()
        if n * self.n_trees * self.n_features <= _DENSE_CELLS:  # a few rows: a plain gather is quicker
            out = np.empty((n, self.n_features + 1), dtype=float)
            out[:, :-1] = self.table[index.reshape(n, -1)].sum(axis=1)
            out[:, -1] = self.bias
            return out
        if self._sparse is None:
            self._sparse = sparse.csr_matrix(self.table)
        reached = sparse.csr_matrix(
            (np.ones(len(index)), index, np.arange(0, len(index) + 1, self.n_trees)), shape=(n, len(self.table))
        )
        out = np.empty((n, self.n_features + 1), dtype=float)
        out[:, :-1] = (reached @ self._sparse).toarray()
        out[:, -1] = self.bias
        return out
