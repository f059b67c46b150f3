"""Journey features: events + cutoffs -> one row of features per (customer, cutoff).

`compute_features` is the entry point; `definitions` holds every feature's name, stage,
definition, window and unit; `catalog` renders them as Markdown (docs/features.md).
"""

from features.journeys.aging import age_features
from features.journeys.definitions import (
    FEATURES,
    FEATURES_BY_NAME,
    Feature,
    aging_features,
    categorical_features,
    feature_names,
    numeric_features,
)
from features.journeys.engine import compute_features

__all__ = [
    "FEATURES",
    "FEATURES_BY_NAME",
    "Feature",
    "age_features",
    "aging_features",
    "categorical_features",
    "compute_features",
    "feature_names",
    "numeric_features",
]
