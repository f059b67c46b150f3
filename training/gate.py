"""The promotion gate: when a challenger may take the `champion` alias. Pure function."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from training.config import GateParams


@dataclass
class GateDecision:
    promote: bool
    metric: str
    challenger: float
    champion: float | None
    baselines: dict[str, float]
    ece: float | None
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def summary(self) -> str:
        return ("promoted: " if self.promote else "kept champion: ") + "; ".join(self.reasons)


def _better(a: float, b: float, margin: float, higher: bool) -> bool:
    return a >= b + margin if higher else a <= b - margin


def decide(
    challenger: dict[str, float],
    baselines: dict[str, dict[str, float]],
    champion: dict[str, float] | None,
    gate: GateParams,
    champion_note: str | None = None,
) -> GateDecision:
    """Promote only if every check passes.

    - the challenger beats the current champion, evaluated on the same (latest) test
      cutoff, by `min_improvement` (no champion: passes; an incomparable champion, e.g.
      trained on another label spec, is reported in `champion_note` and does not block);
    - it beats every baseline (strictly) on the gate metric;
    - its expected calibration error is within `max_ece` plus the sampling noise of ECE on the test
      set (`ece_noise`: what a perfectly calibrated model would show there; when the task has probabilities).
    """
    metric = gate.metric
    value = float(challenger.get(metric, math.nan))
    reasons: list[str] = []
    ok = True
    if math.isnan(value):
        return GateDecision(False, metric, value, None, {}, None, [f"challenger has no {metric} on the test cutoff"])
    direction = "higher" if gate.higher_is_better else "lower"
    champ_value = None if champion is None else float(champion.get(metric, math.nan))
    if champion is None:
        reasons.append(champion_note or "no current champion")
    elif champ_value is None or math.isnan(champ_value):
        reasons.append(f"champion has no {metric} on this test cutoff; compared with baselines only")
    elif _better(value, champ_value, gate.min_improvement, gate.higher_is_better):
        reasons.append(f"{metric} {value:.4f} beats champion {champ_value:.4f} by >= {gate.min_improvement}")
    else:
        ok = False
        reasons.append(
            f"{metric} {value:.4f} does not beat champion {champ_value:.4f} by {gate.min_improvement} "
            f"({direction} is better)"
        )
    base_values = {}
    for name, m in baselines.items():
        b = float(m.get(metric, math.nan))
        base_values[name] = b
        if math.isnan(b):
            reasons.append(f"baseline {name} has no {metric}")
        elif _better(value, b, 0.0, gate.higher_is_better) and value != b:
            reasons.append(f"beats baseline {name} ({b:.4f})")
        else:
            ok = False
            reasons.append(f"does not beat baseline {name} ({metric} {b:.4f} vs {value:.4f})")
    ece = challenger.get("ece")
    if gate.max_ece is not None:
        noise = float(challenger.get("ece_noise", 0.0))
        bound = gate.max_ece + (noise if math.isfinite(noise) else 0.0)
        what = f"{gate.max_ece} + sampling noise {noise:.4f}" if noise > 0 else f"{gate.max_ece}"
        if ece is None or math.isnan(ece):
            ok = False
            reasons.append("no expected calibration error to check")
        elif ece > bound:
            ok = False
            reasons.append(f"ECE {ece:.4f} above the bound {what}")
        else:
            reasons.append(f"ECE {ece:.4f} within {what}")
    return GateDecision(ok, metric, value, champ_value, base_values, None if ece is None else float(ece), reasons)
