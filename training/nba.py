"""The next-best-action policy: catalog I/O, uplift training sets, training, evaluation, registry, loading.

Data flow (`journey nba train`):

1. `contact_log`: marketing_contact events -> (customer_id, event_time, action, propensity).
2. `decision_rows`: decisions in [start, end): every logged contact (treated) and a seeded sample
   of known customers not contacted that day (controls), each at the start of its day (UTC; the
   information a daily campaign job has), with outcomes per outcome group: an outcome event in
   (decision, decision + horizon]. `weight` undoes the control sampling.
3. Features as of each decision (a `FeatureFn`, by default `features.journeys.compute_features`).
4. `fit_uplift_models`: one `models.uplift.UpliftModel` per outcome group the catalog uses,
   weighted by the logged propensities.
5. `uplift_metrics` on later decisions (a time split): Qini coefficient, AUUC, uplift at 10%,
   per arm and pooled, and the uplift-by-decile table (plotted as an MLflow artifact).
6. `register_policy`: MLflow run + registered model `journeyml-nba`; `challenger` always moves,
   `champion` only through the gate (positive Qini, better than the champion's on the same rows).

`load_policy(settings)` is what the API and batch call: the champion's models with the
current catalog, or a priors-only policy (`Policy.priors_only`) when nothing is registered.
`evaluate_on_simulator` judges every policy against the simulator's true effects.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from core.output import json_default
from core.settings import Settings
from core.time import to_utc
from models.estimators import learn_categories
from models.nba import (
    NO_ACTION,
    OUTCOME_EVENTS,
    Catalog,
    CatalogError,
    Policy,
    catalog_markdown,
    decide_arrays,
    outcome_group,
    parse_catalog,
    rank,
)
from models.uplift import (
    UpliftModel,
    auuc,
    dr_terms,
    ips_terms,
    qini_coefficient,
    qini_curve,
    uplift_at_k,
    uplift_by_decile,
)

CATALOG_PATH = Path(__file__).resolve().parents[1] / "conf" / "actions.yaml"
REGISTERED_MODEL = "journeyml-nba"
EXPERIMENT = "journeyml-nba"
CHALLENGER = "challenger"  # the same aliases as training.registry
CHAMPION = "champion"
BUNDLE_FILE = "nba_policy.json"
DAY = pd.Timedelta(days=1)
ID_COLUMNS = ("customer_id", "cutoff")

FeatureFn = Callable[[pd.DataFrame], pd.DataFrame]
"""entity frame (customer_id, cutoff) -> features, one row per entity row in the same order."""


class NBAError(RuntimeError):
    """Something the NBA commands cannot work around (no events, no contacts, no registry)."""


# -------------------------------------------------------------------- the catalog


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Read and validate `conf/actions.yaml` (or `path`). Raises CatalogError with a clear message."""
    p = Path(path) if path is not None else CATALOG_PATH
    if not p.is_file():
        raise CatalogError(f"no action catalog at {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise CatalogError(f"{p} is not valid YAML: {exc}") from None
    try:
        return parse_catalog(raw)
    except CatalogError as exc:
        raise CatalogError(f"{p}: {exc}") from None


NOTES_MARKER = "<!-- written by hand below this line: `journey nba docs --out docs/actions.md` keeps it -->"


def actions_markdown(path: str | Path | None = None) -> str:
    """The generated part of docs/actions.md (everything above `NOTES_MARKER`) for the catalog at `path`."""
    return catalog_markdown(load_catalog(path))


def write_actions_doc(out: str | Path, path: str | Path | None = None) -> Path:
    """Write the generated catalog doc to `out`, keeping the hand-written part after `NOTES_MARKER`."""
    target = Path(out)
    text = actions_markdown(path)
    if target.is_file():
        old = target.read_text()
        if NOTES_MARKER in old:
            text += NOTES_MARKER + old.split(NOTES_MARKER, 1)[1]
    target.write_text(text)
    return target


# -------------------------------------------------------------------- uplift training sets

_ACTION_RE = r'"action"\s*:\s*"([^"]*)"'
_PROPENSITY_RE = r'"propensity"\s*:\s*([-+0-9.eE]+)'


def contact_log(events: pd.DataFrame) -> pd.DataFrame:
    """Marketing contacts: customer_id, event_time, action, propensity (NaN when not logged)."""
    mc = events.loc[
        (events["event_type"] == "marketing_contact").to_numpy(), ["customer_id", "event_time", "properties"]
    ]
    props = mc["properties"].astype("string").fillna("")
    out = pd.DataFrame(
        {
            "customer_id": mc["customer_id"].astype(str).to_numpy(),
            "event_time": pd.to_datetime(mc["event_time"], utc=True).to_numpy(),
            "action": props.str.extract(_ACTION_RE, expand=False).to_numpy(dtype=object),
            "propensity": pd.to_numeric(props.str.extract(_PROPENSITY_RE, expand=False), errors="coerce").to_numpy(
                float
            ),
        }
    )
    out["event_time"] = pd.to_datetime(out["event_time"], utc=True)
    out = out[out["action"].notna() & (out["action"] != "")]
    return out.sort_values(["event_time", "customer_id"], kind="stable").reset_index(drop=True)


def _first_seen(events: pd.DataFrame) -> pd.Series:
    times = pd.to_datetime(events["event_time"], utc=True)
    return times.groupby(events["customer_id"].astype(str).to_numpy()).min()


def _to_us(values: Any) -> np.ndarray:
    """Timestamps as int64 microseconds since the epoch (UTC)."""
    ts = pd.to_datetime(pd.Series(values), utc=True).dt.as_unit("us").dt.tz_localize(None)
    return ts.to_numpy().astype(np.int64)


def count_in_windows(
    ev_codes: np.ndarray,
    ev_us: np.ndarray,
    q_codes: np.ndarray,
    q_lo: np.ndarray,
    q_hi: np.ndarray,
    lo_closed: bool = False,
    hi_closed: bool = True,
) -> np.ndarray:
    """Per query, how many events of its customer fall between q_lo and q_hi (microseconds).

    Times are replaced by their rank among the distinct event times, so (customer, rank) packs
    into one int64 key and every query is two binary searches. Negative q_codes count 0.
    """
    if len(ev_codes) == 0 or len(q_codes) == 0:
        return np.zeros(len(q_codes), dtype=np.int64)
    uniq = np.unique(ev_us)
    m = np.int64(len(uniq) + 2)
    key = np.sort(ev_codes.astype(np.int64) * m + np.searchsorted(uniq, ev_us) + 1)
    r_lo = np.searchsorted(uniq, q_lo, side="left" if lo_closed else "right")
    r_hi = np.searchsorted(uniq, q_hi, side="right" if hi_closed else "left")
    codes = q_codes.astype(np.int64)
    hi = np.searchsorted(key, codes * m + r_hi, side="right")
    lo = np.searchsorted(key, codes * m + r_lo, side="right")
    return np.where(codes >= 0, np.maximum(hi - lo, 0), 0)


def _any_event_within(
    rows: pd.DataFrame, events: pd.DataFrame, event_types: Sequence[str], horizon_days: int
) -> np.ndarray:
    """Per row, 1 if the customer has one of `event_types` in (cutoff, cutoff + horizon]."""
    ev = events.loc[events["event_type"].isin(list(event_types)).to_numpy(), ["customer_id", "event_time"]]
    if ev.empty or rows.empty:
        return np.zeros(len(rows), dtype=np.int8)
    cust = pd.Categorical(ev["customer_id"].astype(str))
    q_codes = pd.Categorical(rows["customer_id"].astype(str), categories=cust.categories).codes
    t0 = _to_us(rows["cutoff"])
    counts = count_in_windows(
        cust.codes, _to_us(ev["event_time"]), q_codes, t0, t0 + int(horizon_days) * 86_400_000_000
    )
    return (counts > 0).astype(np.int8)


def decision_rows(
    events: pd.DataFrame,
    start: Any,
    end: Any,
    horizon_days: int,
    *,
    outcome_groups: Sequence[str] = ("purchase",),
    min_gap_days: float = 0.0,
    control_ratio: float = 2.0,
    max_treated: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Logged decisions with day starts in [start, end): contacts (treated) and sampled controls.

    Columns: customer_id, cutoff (the decision: 00:00 UTC of the contact's day; features use
    events up to it), treatment (action id or no_action), propensity (logged; NaN for controls),
    weight (1 / sampling rate: controls are a sample of the known, uncontacted customers of each
    day, `control_ratio` times as many as contacts; contacts beyond `max_treated` are sampled too),
    y_<group> per outcome group (an outcome event in (cutoff, cutoff + horizon_days]). Controls
    contacted that day or within `min_gap_days` before it are left out (the policy could not
    contact them either). Outcomes must be complete: `end` should be at most the data end minus
    the horizon.
    """
    t_start, t_end = to_utc(start).normalize(), to_utc(end).normalize()
    rng = np.random.default_rng(seed)
    contacts = contact_log(events)
    contacts["cutoff"] = contacts["event_time"].dt.floor("D")
    treated = contacts[(contacts["cutoff"] >= t_start) & (contacts["cutoff"] < t_end)]
    treated = treated.drop_duplicates(["customer_id", "cutoff"], keep="first")
    treated_weight = 1.0
    if max_treated is not None and len(treated) > max_treated:
        treated_weight = len(treated) / max_treated
        treated = treated.iloc[np.sort(rng.choice(len(treated), max_treated, replace=False))]
    treated_rows = pd.DataFrame(
        {
            "customer_id": treated["customer_id"].to_numpy(),
            "cutoff": treated["cutoff"].to_numpy(),
            "treatment": treated["action"].to_numpy(),
            "propensity": treated["propensity"].to_numpy(),
            "weight": treated_weight,
        }
    )
    first_seen = _first_seen(events).sort_values()
    ids = first_seen.index.to_numpy()
    seen_us = _to_us(first_seen.to_numpy())
    days = pd.date_range(t_start, t_end, freq="D", inclusive="left")
    day_us = _to_us(days)
    known_per_day = np.searchsorted(seen_us, day_us, side="left")  # first seen strictly before the day starts
    candidates = int(known_per_day.sum())
    rate = min(1.0, control_ratio * max(len(treated_rows), 1) / max(candidates, 1))
    picked_ids, picked_days = [], []
    for d, n_known in enumerate(known_per_day):
        pick = np.flatnonzero(rng.random(n_known) < rate) if n_known else np.zeros(0, dtype=np.int64)
        picked_ids.append(pick)
        picked_days.append(np.full(len(pick), d))
    pick = np.concatenate(picked_ids) if picked_ids else np.zeros(0, dtype=np.int64)
    pick_day = np.concatenate(picked_days) if picked_days else np.zeros(0, dtype=np.int64)
    # Leave out customers contacted that day or within min_gap_days before it.
    c_codes = pd.Categorical(contacts["customer_id"], categories=ids).codes
    t_day = day_us[pick_day] if len(pick_day) else np.zeros(0, dtype=np.int64)
    gap_us = int(min_gap_days * 86_400_000_000)
    hits = count_in_windows(c_codes, _to_us(contacts["event_time"]), pick, t_day - gap_us, t_day + 86_400_000_000,
                            lo_closed=True, hi_closed=False)  # fmt: skip
    keep = hits == 0
    controls = pd.DataFrame({"customer_id": ids[pick[keep]], "cutoff": days[pick_day[keep]]})
    controls["treatment"] = NO_ACTION
    controls["propensity"] = np.nan
    controls["weight"] = 1.0 / rate if rate > 0 else 1.0
    rows = pd.concat([treated_rows, controls], ignore_index=True)
    rows["cutoff"] = pd.to_datetime(rows["cutoff"], utc=True).dt.as_unit("us")
    rows["customer_id"] = rows["customer_id"].astype(str)
    for group in outcome_groups:
        rows[f"y_{group}"] = _any_event_within(rows, events, OUTCOME_EVENTS[group], horizon_days)
    return rows.sort_values(["cutoff", "customer_id", "treatment"], kind="stable").reset_index(drop=True)


def compute_features_fn(events: Any, customers: Any = None) -> FeatureFn:
    """A FeatureFn over `features.journeys.compute_features`, one call per distinct cutoff.

    `events`: a pandas frame or Arrow table in the event contract (sliced per call to the customers
    the call needs, so each call scans only their events), or a Parquet path / glob (scanned by the
    engine each call). `customers`: a frame or path with customer_id and first_seen, or None.
    """
    import pyarrow as pa

    table: pa.Table | None = None
    ranges: dict[str, tuple[int, int]] = {}
    if isinstance(events, pd.DataFrame):
        events = pa.Table.from_pandas(events, preserve_index=False)
    if isinstance(events, pa.Table):
        order = np.argsort(
            np.asarray(events["customer_id"].to_numpy(zero_copy_only=False), dtype=object), kind="stable"
        )
        table = events.take(pa.array(order))
        ids_sorted = np.asarray(table["customer_id"].to_numpy(zero_copy_only=False), dtype=object)
        uniq, first = np.unique(ids_sorted, return_index=True)
        bounds = np.append(first, len(ids_sorted))
        ranges = {str(u): (int(bounds[i]), int(bounds[i + 1])) for i, u in enumerate(uniq)}
    cust = pd.read_parquet(customers) if isinstance(customers, str | Path) else customers

    def source(entity: pd.DataFrame) -> pd.DataFrame:
        from features.journeys import compute_features

        cutoffs = pd.to_datetime(entity["cutoff"], utc=True).dt.as_unit("us").to_numpy()
        ent = pd.DataFrame({"customer_id": entity["customer_id"].astype(str).to_numpy(), "cutoff": cutoffs})
        parts = []
        for cutoff, idx in ent.groupby("cutoff", sort=True).indices.items():
            ids = pd.unique(ent["customer_id"].to_numpy()[idx]).tolist()
            data: Any = events
            if table is not None:
                spans = [ranges[i] for i in ids if i in ranges]
                rows = np.concatenate([np.arange(a, b) for a, b in spans]) if spans else np.zeros(0, dtype=np.int64)
                data = table.take(pa.array(rows, type=pa.int64()))
            c = cust[cust["customer_id"].astype(str).isin(ids)] if isinstance(cust, pd.DataFrame) else cust
            parts.append(compute_features(data, [pd.Timestamp(cutoff)], customers=c, customer_ids=ids))
        feats = pd.concat(parts, ignore_index=True)
        feats["customer_id"] = feats["customer_id"].astype(str)
        feats["cutoff"] = pd.to_datetime(feats["cutoff"], utc=True).dt.as_unit("us")
        ent["cutoff"] = pd.to_datetime(ent["cutoff"], utc=True).dt.as_unit("us")
        out = ent.merge(feats, on=["customer_id", "cutoff"], how="left", validate="many_to_one")
        return out.reset_index(drop=True)

    return source


def model_feature_columns(features: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(feature columns, categorical columns) an uplift model uses: every column but the ids that has a
    value; the categoricals are the non-numeric ones (the feature engine writes them as strings)."""
    cols = [c for c in features.columns if c not in ID_COLUMNS and features[c].notna().any()]
    cat = [
        c for c in cols if not (pd.api.types.is_numeric_dtype(features[c]) or pd.api.types.is_bool_dtype(features[c]))
    ]
    return cols, cat


# -------------------------------------------------------------------- fitting and metrics


@dataclass
class UpliftParams:
    """The uplift learner's settings. With the default "lift" learner each action's log-hazard ratio starts at the
    catalog's documented prior (log(1 + prior_lift)) and moves only as far as the logged data is sure of:
    `lift_prior_sd` (pooled over stages) and `segment_prior_sd` (per stage, around the pooled one) are prior
    standard deviations on that scale. 0.05 because on the simulator the true per-stage effects are within
    about +-0.05 while the logs estimate them with standard errors of 0.03 to 0.5 (docs/actions.md,
    "Where the value is lost"): wider priors let noise pick the actions."""

    learner: str = "lift"
    n_estimators: int = 150
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_child_samples: int = 100
    max_weight: float = 20.0
    min_arm_rows: int = 200
    lift_prior_sd: float = 0.05
    segment_prior_sd: float = 0.05
    lift_z: float = 0.0
    seed: int = 0

    def estimator(
        self,
        features: list[str],
        categorical: list[str],
        segment: str | None = None,
        prior_theta: dict[str, float] | None = None,
    ) -> UpliftModel:
        return UpliftModel(
            learner=self.learner, segment=segment, lift_prior_sd=self.lift_prior_sd, prior_theta=prior_theta,
            segment_prior_sd=self.segment_prior_sd, lift_z=self.lift_z, features=features, categorical=categorical,
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate, num_leaves=self.num_leaves, min_child_samples=self.min_child_samples,
            max_weight=self.max_weight, min_arm_rows=self.min_arm_rows, num_threads=2, seed=self.seed,
        )  # fmt: skip


def catalog_groups(catalog: Catalog) -> list[str]:
    return sorted({outcome_group(a.outcome) for a in catalog.actions if a.id != NO_ACTION})


def fit_uplift_models(
    rows: pd.DataFrame, features: pd.DataFrame, catalog: Catalog, params: UpliftParams | None = None
) -> dict[str, UpliftModel]:
    """One UpliftModel per outcome group with at least one positive and one control row.

    Rows whose treatment is not in the catalog are dropped (they are neither a known action nor
    the control).
    """
    params = params or UpliftParams()
    known = rows["treatment"].isin(catalog.action_ids).to_numpy()
    rows, features = rows[known].reset_index(drop=True), features[known].reset_index(drop=True)
    cols, cat = model_feature_columns(features)
    models: dict[str, UpliftModel] = {}
    for group in catalog_groups(catalog):
        y = rows[f"y_{group}"].to_numpy(float) if f"y_{group}" in rows else None
        ctrl = (rows["treatment"] == NO_ACTION).to_numpy()
        if y is None or not ctrl.any() or y[ctrl].min() == y[ctrl].max():
            continue
        prior = {a.id: math.log1p(a.prior_lift) for a in catalog.actions if a.id != NO_ACTION}
        est = params.estimator(cols, cat, segment=catalog.columns.stage, prior_theta=prior)
        models[group] = est.fit(
            features, rows["treatment"].to_numpy(), y, propensity=rows["propensity"].to_numpy(float),
            sample_weight=rows["weight"].to_numpy(float),
        )  # fmt: skip
    return models


def _ipw(rows: pd.DataFrame, max_weight: float = 20.0) -> np.ndarray:
    p = rows["propensity"].to_numpy(float)
    w = np.where(np.isfinite(p) & (p > 0), np.minimum(1.0 / np.clip(p, 1e-12, 1), max_weight), 1.0)
    return w * rows["weight"].to_numpy(float)


def stacked_uplift_data(models: dict[str, UpliftModel], rows: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """Per (modelled arm, row of that arm or the control): y, treated, predicted uplift, weight, arm."""
    parts = []
    for group, model in models.items():
        y_col = f"y_{group}"
        if y_col not in rows:
            continue
        uplift = model.predict_uplift(features)
        w = _ipw(rows)
        ctrl = (rows["treatment"] == NO_ACTION).to_numpy()
        for i, arm in enumerate(model.arms_):
            if not model.n_treated_.get(arm):
                continue
            arm_rows = (rows["treatment"] == arm).to_numpy()
            sel = arm_rows | ctrl
            if arm_rows.sum() == 0:
                continue
            parts.append(
                pd.DataFrame(
                    {
                        "group": group,
                        "arm": arm,
                        "y": rows.loc[sel, y_col].to_numpy(float),
                        "treated": arm_rows[sel],
                        "score": uplift[sel, i],
                        "weight": w[sel],
                    }
                )
            )
    if not parts:
        return pd.DataFrame(columns=["group", "arm", "y", "treated", "score", "weight"])
    return pd.concat(parts, ignore_index=True)


def uplift_metrics(
    models: dict[str, UpliftModel], rows: pd.DataFrame, features: pd.DataFrame
) -> tuple[dict[str, float], pd.DataFrame, pd.DataFrame]:
    """(metrics, uplift by decile, Qini curve) on held-out decisions, propensity-weighted.

    `qini` / `auuc` / `uplift_at_10` pool every modelled arm against the controls (controls
    counted once per arm); `qini_<arm>` per arm. Units: incremental outcomes per decision.
    """
    data = stacked_uplift_data(models, rows, features)
    metrics: dict[str, float] = {"eval_rows": float(len(rows))}
    if data.empty or not data["treated"].any() or data["treated"].all():
        return {**metrics, "qini": math.nan, "auuc": math.nan, "uplift_at_10": math.nan}, pd.DataFrame(), pd.DataFrame()
    y, t, s, w = data["y"], data["treated"], data["score"], data["weight"]
    metrics["qini"] = qini_coefficient(y, t, s, w)
    metrics["auuc"] = auuc(y, t, s, w)
    metrics["uplift_at_10"] = uplift_at_k(y, t, s, 0.1, w)
    for arm, part in data.groupby("arm"):
        if part["treated"].any():
            metrics[f"qini_{arm}"] = qini_coefficient(part["y"], part["treated"], part["score"], part["weight"])
            metrics[f"uplift_at_10_{arm}"] = uplift_at_k(part["y"], part["treated"], part["score"], 0.1, part["weight"])
    frac, q = qini_curve(y, t, s, w)
    curve = pd.DataFrame({"fraction": frac, "qini": q})
    return metrics, uplift_by_decile(y, t, s, w), curve


def plot_uplift(deciles: pd.DataFrame, curve: pd.DataFrame, path: Path) -> Path:
    """Uplift by decile (observed vs predicted) and the Qini curve, as one PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if not deciles.empty:
        x = deciles["decile"].to_numpy()
        ax1.bar(x - 0.2, deciles["observed_uplift"].fillna(0).to_numpy(), width=0.4, label="observed")
        ax1.bar(x + 0.2, deciles["predicted_uplift"].fillna(0).to_numpy(), width=0.4, label="predicted")
        ax1.set_xticks(x)
    ax1.axhline(0, color="black", linewidth=0.8)
    ax1.set_xlabel("decile of predicted uplift (1 = highest)")
    ax1.set_ylabel("uplift in outcome probability")
    ax1.set_title("Uplift by decile (propensity-weighted)")
    ax1.legend()
    if not curve.empty:
        ax2.plot(curve["fraction"], curve["qini"], label="model")
        ax2.plot([0, 1], [0, curve["qini"].iloc[-1]], linestyle="--", label="random")
    ax2.set_xlabel("share of decisions targeted")
    ax2.set_ylabel("incremental outcomes per decision")
    ax2.set_title("Qini curve")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -------------------------------------------------------------------- bundles and the registry


def policy_bundle(models: dict[str, UpliftModel], catalog: Catalog, info: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": 1,
        "catalog_version": catalog.version,
        "catalog_hash": catalog.hash,
        "catalog": catalog.model_dump(mode="json"),
        "models": {group: m.to_dict() for group, m in models.items()},
        "info": info,
    }


def models_from_bundle(bundle: dict[str, Any]) -> dict[str, UpliftModel]:
    return {group: UpliftModel.from_dict(state) for group, state in bundle["models"].items()}


def load_bundle(tracking_uri: str, alias: str = CHAMPION) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(bundle, version info) of `models:/journeyml-nba@<alias>`, or None when there is none.

    A SQLite tracking store that does not exist yet holds no model: it is not created.
    """
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).exists():
        return None
    import mlflow.artifacts

    from training.registry import alias_version, client

    cl = client(tracking_uri)
    mv = alias_version(cl, REGISTERED_MODEL, alias)
    if mv is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{REGISTERED_MODEL}/{mv.version}",
                                                         dst_path=tmp))  # fmt: skip
        found = list(local.rglob(BUNDLE_FILE))
        if not found:
            raise NBAError(f"{REGISTERED_MODEL} version {mv.version} has no {BUNDLE_FILE}")
        bundle = json.loads(found[0].read_text())
    return bundle, {"version": str(mv.version), "run_id": mv.run_id, "alias": alias}


def load_policy(settings: Settings, catalog: Catalog | None = None) -> Policy:
    """The policy the API and batch use: the champion's uplift models with the current catalog.

    With no champion registered (or a registry that cannot be read) it returns a priors-only
    policy: `priors_only=True`, every uplift the catalog's documented prior. The holdout share
    comes from `settings.holdout_share`.
    """
    catalog = catalog or load_catalog()
    try:
        found = load_bundle(settings.tracking_uri, CHAMPION)
    except Exception:  # noqa: BLE001 - an unreadable registry must not stop scoring
        found = None
    if found is None:
        return Policy(catalog=catalog, holdout_share=settings.holdout_share, priors_only=True, version=None)
    bundle, info = found
    return Policy(
        catalog=catalog,
        models=models_from_bundle(bundle),
        holdout_share=settings.holdout_share,
        priors_only=False,
        version=f"{REGISTERED_MODEL}/{info['version']}",
    )


def gate(challenger_qini: float, champion_qini: float | None) -> tuple[bool, str]:
    """Promote when the challenger's Qini is positive and beats the champion's (on the same rows)."""
    if not math.isfinite(challenger_qini) or challenger_qini <= 0:
        return False, f"challenger Qini {challenger_qini:.5f} is not positive"
    if champion_qini is None:
        return True, f"no champion; challenger Qini {challenger_qini:.5f} > 0"
    if not math.isfinite(champion_qini) or challenger_qini > champion_qini:
        return True, f"challenger Qini {challenger_qini:.5f} beats champion {champion_qini:.5f}"
    return False, f"challenger Qini {challenger_qini:.5f} does not beat champion {champion_qini:.5f}"


def register_policy(
    models: dict[str, UpliftModel],
    catalog: Catalog,
    metrics: dict[str, float],
    deciles: pd.DataFrame,
    curve: pd.DataFrame,
    eval_rows: pd.DataFrame,
    eval_features: pd.DataFrame,
    params: dict[str, Any],
    settings: Settings,
) -> dict[str, Any]:
    """Log a run, register a version as `challenger`, and promote it to `champion` through the gate.

    Uses the project's registry helpers (`training.registry`): the experiment keeps its artifacts
    in the workspace (`$JOURNEY_HOME/mlartifacts` for a database tracking store).
    """
    import mlflow
    import mlflow.lightgbm

    from training.registry import client, default_artifact_root, set_alias, use_experiment

    if not models:
        raise NBAError("no uplift model was trained: nothing to register")
    tracking_uri = settings.tracking_uri
    cl = client(tracking_uri)
    use_experiment(EXPERIMENT, default_artifact_root(tracking_uri, settings.root))
    champion_qini = None
    champion = load_bundle(tracking_uri, CHAMPION)
    if champion is not None:
        try:
            champ_metrics, _, _ = uplift_metrics(models_from_bundle(champion[0]), eval_rows, eval_features)
            champion_qini = champ_metrics["qini"]
        except Exception:  # noqa: BLE001 - a champion on other features cannot be compared
            champion_qini = None
    promote, why = gate(metrics.get("qini", math.nan), champion_qini)
    with mlflow.start_run(run_name="nba") as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params({k: v for k, v in params.items() if v is not None})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))})
        if champion_qini is not None and math.isfinite(champion_qini):
            mlflow.log_metric("champion_qini_same_rows", champion_qini)
        plot = plot_uplift(deciles, curve, Path(tmp) / "uplift_by_decile.png")
        mlflow.log_artifact(str(plot), artifact_path="evaluation")
        if not deciles.empty:
            table = Path(tmp) / "uplift_by_decile.csv"
            deciles.to_csv(table, index=False)
            mlflow.log_artifact(str(table), artifact_path="evaluation")
        bundle_path = Path(tmp) / BUNDLE_FILE
        bundle_path.write_text(json.dumps(policy_bundle(models, catalog, {"metrics": metrics, "params": params}),
                                          default=json_default))  # fmt: skip
        catalog_path = Path(tmp) / "actions.yaml"
        catalog_path.write_text(yaml.safe_dump(catalog.model_dump(mode="json"), sort_keys=False))
        primary_group = "purchase" if "purchase" in models else sorted(models)[0]
        primary = models[primary_group]
        booster = next(iter(primary.boosters_.values()))
        info = mlflow.lightgbm.log_model(
            booster,
            name="model",
            registered_model_name=REGISTERED_MODEL,
            extra_files=[str(bundle_path), str(catalog_path)],
            metadata={
                "catalog_version": str(catalog.version),
                "catalog_hash": catalog.hash,
                "learner": primary.learner,
            },  # fmt: skip
        )
        run_id = run.info.run_id
    version = str(info.registered_model_version)
    set_alias(cl, REGISTERED_MODEL, CHALLENGER, version)
    cl.set_model_version_tag(REGISTERED_MODEL, version, "gate", why)
    if promote:
        set_alias(cl, REGISTERED_MODEL, CHAMPION, version)
    return {
        "registered_model": REGISTERED_MODEL,
        "version": version,
        "run_id": run_id,
        "promoted": promote,
        "gate": why,
        "champion_qini_same_rows": champion_qini,
    }


# -------------------------------------------------------------------- training from the store


@dataclass
class TrainConfig:
    horizon_days: int | None = None  # default: the catalog's
    train_days: int = 300  # decisions in the last train_days with complete outcomes
    eval_share: float = 0.25  # the latest share of those days is held out for the metrics
    control_ratio: float = 1.5
    max_treated: int | None = 40_000
    uplift: UpliftParams = field(default_factory=UpliftParams)


@dataclass
class UpliftData:
    train_rows: pd.DataFrame
    train_features: pd.DataFrame
    eval_rows: pd.DataFrame
    eval_features: pd.DataFrame
    data_end: pd.Timestamp


def build_uplift_data(
    events: pd.DataFrame,
    catalog: Catalog,
    feature_fn: FeatureFn,
    cfg: TrainConfig,
    cutoff: Any = None,
    seed: int = 0,
) -> UpliftData:
    """Decision rows before `cutoff` (default: the data end) with complete outcomes, split by time."""
    horizon = cfg.horizon_days or catalog.horizon_days
    data_end = to_utc(cutoff) if cutoff is not None else pd.to_datetime(events["event_time"], utc=True).max()
    end = (data_end - horizon * DAY).floor("D")
    start = end - cfg.train_days * DAY
    if contact_log(events).empty:
        raise NBAError("no marketing_contact events: the uplift models learn from logged contacts")
    rows = decision_rows(
        events, start, end, horizon, outcome_groups=catalog_groups(catalog),
        min_gap_days=catalog.contact_rules.min_days_between_contacts, control_ratio=cfg.control_ratio,
        max_treated=cfg.max_treated, seed=seed,
    )  # fmt: skip
    if rows.empty or (rows["treatment"] == NO_ACTION).all():
        raise NBAError(f"no logged contacts between {start.date()} and {end.date()} with complete outcomes")
    feats = feature_fn(rows[["customer_id", "cutoff"]])
    split = end - max(int(round(cfg.train_days * cfg.eval_share)), 1) * DAY
    is_train = (rows["cutoff"] < split).to_numpy()
    return UpliftData(
        train_rows=rows[is_train].reset_index(drop=True),
        train_features=feats[is_train].reset_index(drop=True),
        eval_rows=rows[~is_train].reset_index(drop=True),
        eval_features=feats[~is_train].reset_index(drop=True),
        data_end=data_end,
    )


def read_store_events(settings: Settings) -> pd.DataFrame:
    """The workspace event store ($JOURNEY_HOME/events/event_date=*/*.parquet) as one frame."""
    import pyarrow.dataset as ds

    files = sorted(settings.events_dir.glob("event_date=*/*.parquet"))
    if not files:
        raise NBAError(f"the event store is empty ({settings.events_dir}): run `journey ingest` first")
    return ds.dataset([str(f) for f in files], format="parquet").to_table().to_pandas()


def train_policy(
    settings: Settings,
    cfg: TrainConfig | None = None,
    *,
    events: pd.DataFrame | None = None,
    feature_fn: FeatureFn | None = None,
    catalog: Catalog | None = None,
    register: bool = True,
) -> dict[str, Any]:
    """`journey nba train`: uplift data from the store, fit, evaluate on later decisions, register."""
    started = time.perf_counter()
    cfg = cfg or TrainConfig()
    catalog = catalog or load_catalog()
    events = events if events is not None else read_store_events(settings)
    if feature_fn is None:
        customers = settings.customers_path if settings.customers_path.exists() else None
        feature_fn = compute_features_fn(events, customers)
    data = build_uplift_data(events, catalog, feature_fn, cfg)
    models = fit_uplift_models(data.train_rows, data.train_features, catalog, cfg.uplift)
    if not models:
        raise NBAError("no outcome group had both controls and outcomes: nothing to learn from")
    metrics, deciles, curve = uplift_metrics(models, data.eval_rows, data.eval_features)
    params = {
        "learner": cfg.uplift.learner,
        "horizon_days": cfg.horizon_days or catalog.horizon_days,
        "train_days": cfg.train_days,
        "eval_share": cfg.eval_share,
        "n_estimators": cfg.uplift.n_estimators,
        "num_leaves": cfg.uplift.num_leaves,
        "catalog_version": catalog.version,
        "catalog_hash": catalog.hash,
        "train_rows": len(data.train_rows),
        "eval_rows": len(data.eval_rows),
        "data_end": data.data_end.isoformat(),
    }
    summary: dict[str, Any] = {
        "ok": True,
        "groups": sorted(models),
        "arms": {g: {a: m.n_treated_[a] for a in m.arms_} for g, m in models.items()},
        "train_rows": len(data.train_rows),
        "eval_rows": len(data.eval_rows),
        "metrics": {k: round(v, 6) if math.isfinite(v) else None for k, v in metrics.items()},
    }
    if register:
        summary.update(register_policy(models, catalog, metrics, deciles, curve, data.eval_rows, data.eval_features,
                                       params, settings))  # fmt: skip
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return summary


# -------------------------------------------------------------------- judged against the simulator's truth

# The stage-to-action rule baseline: what a marketer would send at each journey stage.
STAGE_RULE: dict[str, str] = {
    "awareness": "retargeting_content",
    "consideration": "comparison_guide",
    "first_purchase": "onboarding_series",
    "repeat": "loyalty_reward",
    "lapsing": "win_back_offer",
    "churned": "win_back_offer",
}
PROPENSITY_ACTIONS = {"churn": "win_back_offer", "next_purchase": "cart_reminder"}


@dataclass
class SimEvalConfig:
    customers: int = 20_000
    days: int = 365
    seed: int = 0
    budget_share: float = 0.2  # every policy contacts at most this share of the customers
    holdout_share: float = 0.05
    train: TrainConfig = field(default_factory=TrainConfig)
    references: bool = True  # also value the "how much is reachable" references (a few seconds more)


def simulator_catalog(catalog: Catalog, action_ids: Sequence[str]) -> Catalog:
    """The catalog restricted to the simulator's actions, every one judged on purchases.

    The simulator's true effects are changes in P(purchase), so review and referral actions
    are valued as purchases here (value = the customer's order value, as for purchase actions).
    """
    missing = sorted(set(action_ids) - set(catalog.action_ids))
    if missing:
        raise CatalogError(f"the catalog lacks the simulator's actions {missing}")
    return catalog.restrict(action_ids, outcome="purchase", value_per_customer=bool(catalog.columns.value))


def _quick_scores(events: pd.DataFrame, feature_fn: FeatureFn, cutoff: pd.Timestamp, ids: np.ndarray,
                  feats_now: pd.DataFrame, horizon: int, seed: int) -> pd.DataFrame:  # fmt: skip
    """Task scores the baselines and reasons use: next_purchase (P(purchase in horizon)) and churn
    (P(no purchase in 90 days) for buyers), small LightGBMs fitted one horizon before the cutoff."""
    from models.estimators import GBMClassifier

    cols, cat = model_feature_columns(feats_now)
    out = pd.DataFrame({"customer_id": ids})
    for task, h in (("next_purchase", horizon), ("churn", 90)):
        past = cutoff - h * DAY
        entity = pd.DataFrame({"customer_id": ids, "cutoff": past})
        f_past = feature_fn(entity)
        known = f_past["tenure_days"].notna().to_numpy() if "tenure_days" in f_past else np.ones(len(ids), bool)
        rows = pd.DataFrame({"customer_id": ids, "cutoff": past})
        y = _any_event_within(rows, events, ("purchase",), h).astype(float)
        if task == "churn":
            buyers = pd.to_numeric(f_past.get("orders_lifetime"), errors="coerce").fillna(0).to_numpy() > 0
            known &= buyers
            y = 1.0 - y
        model = GBMClassifier(features=cols, categorical=cat, n_estimators=150, num_leaves=15, calibration="none",
                              early_stopping_rounds=0, seed=seed)  # fmt: skip
        model.fit(f_past[known].reset_index(drop=True), y[known])
        out[task] = model.predict_proba(feats_now)[:, 1]
        if task == "churn":
            buyers_now = pd.to_numeric(feats_now.get("orders_lifetime"), errors="coerce").fillna(0).to_numpy() > 0
            out.loc[~buyers_now, task] = np.nan
    return out


def _policy_value(choice: np.ndarray, effect: np.ndarray, value: np.ndarray, cost: np.ndarray, no_action: int) -> float:
    """Sum over customers of true uplift x value - cost of the chosen action (no_action: 0)."""
    rows = np.arange(len(choice))
    act = choice != no_action
    gain = effect[rows, choice] * value[rows, choice] - cost[choice]
    return float(np.where(act, gain, 0.0).sum())


def _budgeted(score: np.ndarray, candidates: np.ndarray, budget: int) -> np.ndarray:
    """Boolean mask of at most `budget` candidates with the highest score (ties by row order)."""
    s = np.where(candidates, score, -np.inf)
    order = np.argsort(-s, kind="stable")[: min(budget, int(candidates.sum()))]
    mask = np.zeros(len(score), dtype=bool)
    mask[order] = True
    return mask


def baseline_choices(
    eligible: np.ndarray,
    catalog: Catalog,
    stage: np.ndarray,
    scores: pd.DataFrame,
    budget: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Action index per customer for the baseline policies, under the same eligibility and budget."""
    rng = np.random.default_rng(seed)
    ids = catalog.action_ids
    no_action = ids.index(NO_ACTION)
    n = eligible.shape[0]
    acting = eligible.copy()
    acting[:, no_action] = False
    out: dict[str, np.ndarray] = {}

    # random: random customers with any eligible action, a random eligible action each
    r = np.where(acting, rng.random(acting.shape), -1.0)
    pick = _budgeted(np.asarray(rng.random(size=n), dtype=float), np.asarray(acting.any(axis=1)), budget)
    out["random"] = np.where(pick, r.argmax(axis=1), no_action)

    # stage rule: the stage's action when eligible, random customers up to the budget
    rule = np.array([ids.index(STAGE_RULE[s]) if STAGE_RULE.get(s) in ids else -1 for s in stage.astype(str)])
    ok = (rule >= 0) & acting[np.arange(n), np.maximum(rule, 0)]
    pick = _budgeted(np.asarray(rng.random(size=n), dtype=float), ok, budget)
    out["stage_rule"] = np.where(pick, rule, no_action)

    # propensity targeting: the highest scores get one fixed action
    for task, action in PROPENSITY_ACTIONS.items():
        if action not in ids or task not in scores:
            continue
        j = ids.index(action)
        score = scores[task].to_numpy(float)
        pick = _budgeted(np.nan_to_num(score, nan=-np.inf), acting[:, j] & ~np.isnan(score), budget)
        out[f"propensity_{task}"] = np.where(pick, j, no_action)
    return out


def fit_contact_model(rows: pd.DataFrame, features: pd.DataFrame, seed: int = 0) -> Any:
    """P(any contact | x) on logged decisions (controls weighted back to all uncontacted customer-days).

    The logging policy's probability of "no action" is not logged; 1 - this estimates it.
    """
    cols, cat = model_feature_columns(features)
    est = UpliftModel(features=cols, categorical=cat, n_estimators=150, num_leaves=15, seed=seed)
    est.feature_names_ = cols
    est.categories_ = learn_categories(features, cat)
    contacted = (rows["treatment"] != NO_ACTION).to_numpy().astype(float)
    booster = est._train(est._encode(features), contacted, rows["weight"].to_numpy(float))
    return _ContactModel(est, booster)


@dataclass
class _ContactModel:
    encoder: UpliftModel
    booster: Any

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = np.asarray(self.booster.predict(self.encoder._encode(X)), dtype=float)
        return np.column_stack([1 - p, p])


def logged_min_gap_days(events: pd.DataFrame) -> float:
    """The shortest gap between two logged contacts of one customer, in whole days (inf if none)."""
    log = contact_log(events)
    if log.empty:
        return math.inf
    t = _to_us(log["event_time"])
    order = np.lexsort((t, log["customer_id"].to_numpy()))
    ids, t = log["customer_id"].to_numpy()[order], t[order]
    same = ids[1:] == ids[:-1]
    gaps = (t[1:] - t[:-1])[same] / 86_400_000_000
    return float(np.floor(gaps.min())) if len(gaps) else math.inf


def off_policy_estimates(
    policy: Policy,
    rows: pd.DataFrame,
    features: pd.DataFrame,
    contact_model: Any,
    truth: np.ndarray | None = None,
    max_weight: float = 1000.0,
    dr_max_weight: float = 20.0,
) -> dict[str, float]:
    """IPS and doubly robust estimates of the policy's incremental value per 1,000 logged decisions.

    Target: the policy's top action at each logged decision (no budget, no holdout). Its
    incremental value is E[1{a != none} ((y(a) - y(none)) v(a) - c(a))], estimated from the
    logged rows alone: IPS weights the rows whose logged action equals the target's (first
    term) or is "none" (second term) by 1 / propensity (the logged one for contacts, 1 - P(contact
    | x) from `contact_model` for controls) and by the control sampling weight; DR adds the
    uplift model's predictions as the control variate. IPS weights are capped at `max_weight`
    (1,000: practically unbiased, and its variance shows); DR's at `dr_max_weight` (20: a contact
    the logging policy made at random, propensity 0.00125, would otherwise weigh 800 and decide the
    estimate alone; the model term carries what clipping removes). On the simulator clipping DR
    at 20 cut its standard error about 3x. Standard errors (`*_se`) are those of a mean over rows.
    The estimates need the logging policy to have tried every decision the target
    makes: pass a policy whose contact rules stay within the logged support (see
    `logged_min_gap_days`). `truth` (rows x catalog actions, true uplift in P(purchase)) adds the
    true value of the same decisions.
    """
    catalog = policy.catalog
    ids = catalog.action_ids
    no_action = ids.index(NO_ACTION)
    known = rows["treatment"].isin(ids).to_numpy()
    rows, features = rows[known].reset_index(drop=True), features[known].reset_index(drop=True)
    if truth is not None:
        truth = truth[known]
    unheld = Policy(catalog, policy.models, holdout_share=0.0, priors_only=policy.priors_only)
    decision = decide_arrays(features, None, unheld, k=1)
    target, inputs = decision.top, decision.inputs
    logged = pd.Categorical(rows["treatment"], categories=ids).codes.astype(np.int64)
    n = len(rows)
    r = np.arange(n)
    ctrl = logged == no_action
    p_contact = np.clip(contact_model.predict_proba(features)[:, 1], 0.0, 0.999)
    prop = np.where(ctrl, 1.0 - p_contact, rows["propensity"].to_numpy(float))
    prop = np.where(np.isfinite(prop) & (prop > 0), prop, 1.0)
    y = rows["y_purchase"].to_numpy(float)
    scale = rows["weight"].to_numpy(float) * n / rows["weight"].sum()  # control sampling, mean 1
    acts = target != no_action
    v = inputs.value[r, target]
    c = inputs.cost[target]
    mu0 = np.nanmax(np.where(np.arange(len(ids)) == no_action, np.nan, inputs.p_base), axis=1)
    mu0 = np.nan_to_num(mu0, nan=0.0)
    mu_t = mu0 + inputs.uplift[r, target]
    # First term: value with the target action; second: the no-action outcome at the same value.
    reward1, q1 = acts * (y * v - c) * scale, acts * (mu_t * v - c) * scale
    reward0, q0 = acts * y * v * scale, acts * mu0 * v * scale
    match1 = (logged == target) & acts
    ips_rows = ips_terms(reward1, match1, prop, max_weight) - ips_terms(reward0, ctrl, prop, max_weight)
    dr_rows = dr_terms(reward1, match1, prop, q1, q1, dr_max_weight) - dr_terms(
        reward0, ctrl, prop, q0, q0, dr_max_weight
    )
    se = 1000.0 / math.sqrt(max(n, 1))
    out = {
        "decisions": float(n),
        "contacted_share": float(np.mean(acts * scale)),
        "ips_per_1000": 1000.0 * float(ips_rows.mean()),
        "ips_se": se * float(ips_rows.std()),
        "dr_per_1000": 1000.0 * float(dr_rows.mean()),
        "dr_se": se * float(dr_rows.std()),
        "dr_max_weight": float(dr_max_weight),
        "model_per_1000": 1000.0 * float(np.mean(np.where(acts, decision.eiv[r, target], 0.0) * scale)),
    }
    if truth is not None:
        gain = truth[r, target] * v - c
        out["true_per_1000"] = 1000.0 * float(np.mean(np.where(acts, gain, 0.0) * scale))
    return out


def evaluate_on_simulator(
    cfg: SimEvalConfig,
    catalog: Catalog | None = None,
    feature_fn_factory: Callable[[pd.DataFrame, pd.DataFrame], FeatureFn] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """`journey nba evaluate`: simulate, learn from the logged history before the cutoff (the end of
    the simulation), decide at the cutoff, and value every policy with the simulator's true effects.

    Every policy sees the same customers, eligibility (catalog rules, caps, cooldowns, holdout) and
    budget (at most `budget_share` of the customers contacted, one action each). Values are the sum
    of true uplift x value - cost over the contacts, per 1,000 customers known at the cutoff. The
    oracle and the references also obey the truth's consent (no email to a customer who opted out);
    a policy that emails one anyway gains nothing and pays the cost (`not_allowed` counts them).
    """
    from features.simulator.params import ACTION_IDS
    from features.simulator.simulation import simulate
    from features.simulator.truth import true_effects

    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    catalog = simulator_catalog(catalog or load_catalog(), ACTION_IDS)
    horizon = cfg.train.horizon_days or catalog.horizon_days
    say(f"simulating {cfg.customers:,} customers over {cfg.days} days (seed {cfg.seed})")
    sim = simulate(cfg.customers, cfg.days, seed=cfg.seed)
    events = sim.events
    make_fn = feature_fn_factory or (lambda ev, cust: compute_features_fn(ev, cust))
    feature_fn = make_fn(events, sim.customers)
    cutoff = sim.end
    say("building the uplift training set from the logged contacts")
    data = build_uplift_data(events, catalog, feature_fn, cfg.train, cutoff=cutoff, seed=cfg.seed)
    say(f"fitting uplift models on {len(data.train_rows):,} decisions ({cfg.train.uplift.learner}-learner)")
    models = fit_uplift_models(data.train_rows, data.train_features, catalog, cfg.train.uplift)
    metrics, _, _ = uplift_metrics(models, data.eval_rows, data.eval_features)
    policy = Policy(catalog, models, holdout_share=cfg.holdout_share, priors_only=False)

    say("deciding at the cutoff")
    known = sim.customers.loc[(sim.customers["first_seen"] <= cutoff).to_numpy(), "customer_id"].astype(str).to_numpy()
    feats = feature_fn(pd.DataFrame({"customer_id": known, "cutoff": cutoff}))
    scores = _quick_scores(events, feature_fn, cutoff, known, feats, horizon, cfg.seed)
    effects = true_effects(sim, cutoff, horizon)
    effects = effects.set_index(effects["customer_id"].astype(str)).reindex(known)
    ids = catalog.action_ids
    no_action = ids.index(NO_ACTION)
    effect = np.zeros((len(known), len(ids)))
    for j, a in enumerate(ids):
        if a != NO_ACTION:
            effect[:, j] = effects[a].to_numpy(float)
    allowed = ~np.isnan(effect)  # the truth's NaN: an email to a customer who opted out
    effect_or_nan, effect = effect, np.nan_to_num(effect, nan=0.0)
    budget = int(cfg.budget_share * len(known))
    decision = decide_arrays(feats, scores, policy, k=1, max_contacts=budget)
    eligible = decision.eligible  # holdout rows already hold only no_action
    inputs = decision.inputs
    choices = baseline_choices(eligible, catalog, feats[catalog.columns.stage].astype(str).to_numpy(),
                               scores, budget, cfg.seed)  # fmt: skip
    choices["journeyml"] = decision.top
    truly_eligible = eligible & allowed
    oracle_eiv = np.where(truly_eligible, effect * inputs.value - inputs.cost[None, :], -np.inf)
    oracle_eiv[:, no_action] = 0.0
    order, _ = rank(oracle_eiv, no_action, 1, inputs.cost, max_contacts=budget)
    choices["oracle"] = order[:, 0]
    # A reference, not a policy one could run: the true effects averaged within cells of (journey
    # stage, predicted base purchase probability in 5% bins), i.e. a perfect model of what the
    # features reveal about the effects at the stage level.
    p_hat = np.nan_to_num(np.nanmax(np.where(np.arange(len(ids)) == no_action, np.nan, inputs.p_base), axis=1))
    cell = (
        pd.Series(feats[catalog.columns.stage].astype(str).to_numpy())
        + "|"
        + pd.Series(np.minimum((p_hat * 20).astype(int), 19)).astype(str)
    )
    cell_mean = pd.DataFrame(effect_or_nan).groupby(cell.to_numpy()).transform("mean").to_numpy()
    cell_eiv = np.where(truly_eligible, np.nan_to_num(cell_mean) * inputs.value - inputs.cost[None, :], -np.inf)
    cell_eiv[:, no_action] = 0.0
    order, _ = rank(cell_eiv, no_action, 1, inputs.cost, max_contacts=budget)
    choices["oracle_stage_propensity"] = order[:, 0]
    priors = decide_arrays(feats, scores, Policy(catalog, holdout_share=cfg.holdout_share), k=1, max_contacts=budget)
    choices["priors_only"] = priors.top
    if cfg.references:
        # How much of the oracle's value is within reach at all (references, not policies one could run):
        # the true effects averaged by the latent effect type (persuadable, indifferent, sleeping dog) x
        # stage x p_base, and LightGBM regressions of the true effects themselves on the decision features
        # (cross-fitted on two halves of the customers), the best any model of these features can do.
        lat = sim.latent.set_index(sim.latent["customer_id"].astype(str)).reindex(known)
        typed = cell + "|" + lat["effect_type"].astype(str).to_numpy()
        typed_mean = np.nan_to_num(pd.DataFrame(effect_or_nan).groupby(typed.to_numpy()).transform("mean").to_numpy())
        choices["oracle_effect_type"] = _rank_top(
            typed_mean, truly_eligible, inputs.value, inputs.cost, no_action, budget
        )
        fitted = _crossfit_effects(feats, effect, no_action, cfg.seed)
        choices["ceiling_features"] = _rank_top(fitted, truly_eligible, inputs.value, inputs.cost, no_action, budget)
    per = 1000.0 / len(known)
    table = {}
    rows = np.arange(len(known))
    for name, choice in choices.items():
        table[name] = {
            "value_per_1000": round(per * _policy_value(choice, effect, inputs.value, inputs.cost, no_action), 2),
            "contacts": int((choice != no_action).sum()),
            "not_allowed": int(((choice != no_action) & ~allowed[rows, choice]).sum()),
        }

    say("off-policy estimates on the held-out logged decisions")
    contact_model = fit_contact_model(data.train_rows, data.train_features, cfg.seed)
    truth_rows = _truth_for_rows(sim, data.eval_rows, ids, horizon)
    # Only decisions the logging policy could have made can be judged from its logs.
    gap = max(catalog.contact_rules.min_days_between_contacts, logged_min_gap_days(events))
    supported = catalog.model_copy(
        update={"contact_rules": catalog.contact_rules.model_copy(update={"min_days_between_contacts": gap})}
    )
    ope_policy = Policy(supported, models, holdout_share=0.0, priors_only=False)
    ope = off_policy_estimates(ope_policy, data.eval_rows, data.eval_features, contact_model, truth_rows)
    ope["min_days_between_contacts"] = gap
    oracle = table["oracle"]["value_per_1000"]
    ours = table["journeyml"]["value_per_1000"]
    best_propensity = max((v["value_per_1000"] for k, v in table.items() if k.startswith("propensity_")), default=0.0)
    reference = table["oracle_stage_propensity"]["value_per_1000"]
    ceiling = table.get("ceiling_features", {}).get("value_per_1000")
    return {
        "ok": True,
        "customers": int(len(known)),
        "days": cfg.days,
        "seed": cfg.seed,
        "cutoff": cutoff.isoformat(),
        "horizon_days": horizon,
        "budget_contacts": budget,
        "holdout_share": cfg.holdout_share,
        "learner": cfg.train.uplift.learner,
        "train_rows": len(data.train_rows),
        "eval_rows": len(data.eval_rows),
        "uplift_metrics": {k: round(v, 6) if math.isfinite(v) else None for k, v in metrics.items()},
        "policies": table,
        "share_of_oracle": round(ours / oracle, 4) if oracle > 0 else None,
        "share_of_stage_propensity_reference": round(ours / reference, 4) if reference > 0 else None,
        "share_of_feature_ceiling": round(ours / ceiling, 4) if ceiling and ceiling > 0 else None,
        "vs_best_propensity": round(ours / best_propensity, 4) if best_propensity > 0 else None,
        "off_policy": {k: round(v, 3) if math.isfinite(v) else None for k, v in ope.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }


def _rank_top(
    uplift: np.ndarray, eligible: np.ndarray, value: np.ndarray, cost: np.ndarray, no_action: int, budget: int
) -> np.ndarray:
    """The action each customer gets when `uplift` is taken as the truth (same rules and budget)."""
    eiv = np.where(eligible, uplift * value - cost[None, :], -np.inf)
    eiv[:, no_action] = 0.0
    order, _ = rank(eiv, no_action, 1, cost, max_contacts=budget)
    return order[:, 0]


def _crossfit_effects(features: pd.DataFrame, effect: np.ndarray, no_action: int, seed: int) -> np.ndarray:
    """Per action, LightGBM regressions of the true effects on the features, each half predicted by the other."""
    import lightgbm as lgb

    from models.estimators import encode_frame

    cols, cat = model_feature_columns(features)
    X = encode_frame(features, cols, learn_categories(features, cat))
    half = np.random.default_rng(seed).random(len(X)) < 0.5
    params = {"objective": "regression", "learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 50,
              "num_threads": 2, "seed": seed, "deterministic": True, "force_row_wise": True, "verbose": -1}  # fmt: skip
    out = np.zeros_like(effect)
    for j in range(effect.shape[1]):
        if j == no_action:
            continue
        for fit_on in (half, ~half):
            if fit_on.sum() < 100 or (~fit_on).sum() == 0:
                continue
            booster = lgb.train(params, lgb.Dataset(X[fit_on], effect[fit_on, j]), num_boost_round=150)
            out[~fit_on, j] = booster.predict(X[~fit_on])
    return out


def _truth_for_rows(sim: Any, rows: pd.DataFrame, action_ids: list[str], horizon: int) -> np.ndarray:
    """True uplift (rows x catalog actions) at each row's decision time, from the simulator."""
    from features.simulator.truth import true_effects

    out = np.zeros((len(rows), len(action_ids)))
    for cutoff, idx in rows.groupby("cutoff").indices.items():
        eff = true_effects(sim, pd.Timestamp(cutoff), horizon)
        eff = eff.set_index(eff["customer_id"].astype(str)).reindex(rows["customer_id"].to_numpy()[idx])
        for j, a in enumerate(action_ids):
            if a != NO_ACTION and a in eff.columns:
                out[idx, j] = eff[a].fillna(0.0).to_numpy(float)
    return out


def evaluation_table(result: dict[str, Any]) -> str:
    """The evaluation as a plain-text table (for the CLI and the benchmark)."""
    names = {
        "random": "random actions",
        "stage_rule": "stage-to-action rule",
        "propensity_churn": "propensity: churn risk -> win_back_offer",
        "propensity_next_purchase": "propensity: purchase -> cart_reminder",
        "priors_only": "catalog priors alone (no learning)",
        "journeyml": "journeyml uplift policy",
        "oracle_stage_propensity": "reference: true effects by stage x p_base",
        "ceiling_features": "reference: model fitted to true effects",
        "oracle_effect_type": "reference: + latent effect type",
        "oracle": "oracle (true effects)",
    }
    lines = [f"{'policy':44} {'value / 1,000 customers':>24} {'contacts':>9}"]
    for key, label in names.items():
        if key in result["policies"]:
            row = result["policies"][key]
            lines.append(f"{label:44} {row['value_per_1000']:>24,.2f} {row['contacts']:>9,}")
    lines.append("")
    lines.append(
        f"journeyml: {result['share_of_oracle']} of the oracle, {result['share_of_stage_propensity_reference']} of "
        f"the stage x p_base reference, {result.get('share_of_feature_ceiling')} of the feature ceiling, "
        f"{result['vs_best_propensity']} x the best propensity targeting"
    )
    ope = result["off_policy"]
    lines.append(
        f"off-policy, journeyml (contacts >= {ope['min_days_between_contacts']:g} days apart, as in the logs) on "
        f"{int(ope['decisions']):,} held-out logged decisions, value / 1,000 decisions:"
    )
    lines.append(
        f"  IPS {ope['ips_per_1000']:,.2f} (se {ope['ips_se']:,.2f})   DR (weights <= {ope['dr_max_weight']:g}) "
        f"{ope['dr_per_1000']:,.2f} "
        f"(se {ope['dr_se']:,.2f})   model {ope['model_per_1000']:,.2f}   "
        f"true {ope.get('true_per_1000', math.nan):,.2f}"
    )
    return "\n".join(lines)
