"""Journey simulator: realistic multi-channel customer journeys with an exact ground truth.

`simulate` -> Simulation (events in the contract, customers, latent state); `write_simulation` /
`load_simulation` round-trip it through a folder; `ground_truth`, `true_effects` and
`realised_outcomes` judge models and next-best-action policies against what really drives the data.
"""

from __future__ import annotations

from features.simulator.params import ACTION_IDS
from features.simulator.simulation import Simulation, load_simulation, simulate, write_simulation
from features.simulator.truth import email_consent, ground_truth, realised_outcomes, true_effects

__all__ = [
    "ACTION_IDS",
    "Simulation",
    "email_consent",
    "ground_truth",
    "load_simulation",
    "realised_outcomes",
    "simulate",
    "true_effects",
    "write_simulation",
]
