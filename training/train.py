"""Fit one task: honest training set -> LightGBM + baselines -> metrics -> MLflow run -> registry + gate.

The wiring lives here; the pieces are pure: labels (`training.labels`), splits and the
point-in-time join (`training.dataset`), estimators (`models.*`), metrics and plots
(`training.evaluate`), the gate (`training.gate`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.baselines import BTYDBaseline, LinearValueBaseline, LogisticBaseline, RecencyRule
from models.calibration import Calibrator
from models.journey_model import BTYD_COLUMNS, JourneyModel
from models.metrics import classification_metrics, regression_metrics
from models.task_model import TaskModel
from training import evaluate, registry
from training.config import ModelConfig, load_config
from training.dataset import FeatureSource, SplitError, SplitPlan, TrainingSet, build_training_set, plan_splits
from training.gate import GateDecision, decide
from training.labels import LabelSpec, load_spec
from training.store import LabelEvents

# oracle(cutoff, horizon_days) -> frame[customer_id, <truth column>] (the simulator's ground truth)
Oracle = Callable[[pd.Timestamp, int], pd.DataFrame]
ORACLE_COLUMN = {
    "churn": "p_churn",
    "next_purchase": "p_purchase",
    "conversion": "p_first_purchase",
    "clv": "expected_revenue",
}
ID_COLUMNS = ("customer_id", "cutoff", "event_timestamp")
SHAP_ROWS = 1000  # rows explained for the SHAP summary plot (pred_contrib is the slow part of logging)


@dataclass
class TaskResult:
    task: str
    run_id: str | None
    version: str | None
    promoted: bool
    gate: dict[str, Any]
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    plan: dict[str, Any]
    rows: dict[str, int]
    seconds: float
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def categorical_columns(features: pd.DataFrame, columns: list[str], cfg: ModelConfig) -> list[str]:
    """Configured categoricals, else the feature engine's, else every non-numeric column."""
    if cfg.categorical is not None:
        return [c for c in cfg.categorical if c in columns]
    declared: list[str] = []
    try:
        from features.journeys.definitions import categorical_features

        declared = list(categorical_features())
    except ImportError:
        pass
    auto = [c for c in columns if c in features.columns and not pd.api.types.is_numeric_dtype(features[c])]
    return [c for c in columns if c in declared or c in auto]


def model_columns(ds: TrainingSet, cfg: ModelConfig) -> list[str]:
    drop = set(ID_COLUMNS) | set(cfg.exclude_features)
    return [c for c in ds.feature_columns if c not in drop and ds.train.features[c].notna().any()]


def make_model(spec: LabelSpec, cfg: ModelConfig, features: list[str], categorical: list[str]) -> JourneyModel:
    return JourneyModel(
        task=cfg.task,
        kind=spec.kind,
        horizon_days=spec.horizon_days,
        horizons=tuple(spec.horizons or (spec.horizon_days,)) if spec.kind == "timing" else (spec.horizon_days,),
        bins_days=spec.bins_days,
        features=features,
        categorical=categorical,
        btyd_inputs=cfg.btyd_inputs.model_dump() if cfg.btyd else None,
        gbm=cfg.gbm.model_dump(),
        cold_start=cfg.cold_start.model_dump(),
    )


def _binary_target(spec: LabelSpec, labels: pd.DataFrame) -> np.ndarray:
    col = "label" if spec.kind != "timing" else f"label_{spec.horizon_days}d"
    return labels[col].to_numpy(float)


def fit_baselines(
    spec: LabelSpec, cfg: ModelConfig, ds: TrainingSet, features: list[str], categorical: list[str], model: JourneyModel
) -> dict[str, np.ndarray]:
    """Baselines fitted on the training rows (probabilities calibrated on the validation cutoff,
    like LightGBM's); returns their test predictions of the primary output."""
    X, Xv, Xt = ds.train.features, ds.validation.features, ds.test.features
    preds: dict[str, np.ndarray] = {}
    if spec.kind == "regression":
        y = ds.train.labels["label"].to_numpy(float)
        preds["linear"] = LinearValueBaseline(features, categorical).fit(X, y).predict(Xt)
        if cfg.btyd and model.btyd_ is not None and cfg.aov_column and cfg.aov_column in Xt.columns:
            btyd = BTYDBaseline(spec.horizon_days, "value", BTYD_COLUMNS, cfg.aov_column)
            btyd.model_ = model.btyd_
            btyd.fallback_ = 0.0
            preds["btyd"] = btyd.score_rows(model.augment(Xt))
        return preds
    y, yv = _binary_target(spec, ds.train.labels), _binary_target(spec, ds.validation.labels)
    positive_when_recent = spec.label.kind == "any_event"
    candidates: dict[str, Any] = {
        "logistic": LogisticBaseline(features, categorical),
        "recency": RecencyRule(cfg.recency_column, positive_when_recent=positive_when_recent),
    }
    if cfg.btyd and model.btyd_ is not None:
        candidates["btyd"] = BTYDBaseline(
            spec.horizon_days, "purchase" if positive_when_recent else "churn", BTYD_COLUMNS
        )
    for name, est in candidates.items():
        if name == "recency" and cfg.recency_column not in X.columns:
            continue
        if name == "btyd":
            # the same BG/NBD fit LightGBM uses as features: fitted once on the training rows
            est.model_, est.fallback_, est.classes_ = model.btyd_, float(np.nanmean(y)), np.array([0, 1])
            Xva, Xta = model.augment(Xv), model.augment(Xt)
        else:
            est.fit(X, y)
            Xva, Xta = Xv, Xt
        cal = Calibrator(cfg.gbm.calibration).fit(est.predict_proba(Xva)[:, 1], yv)
        preds[name] = cal.transform(est.predict_proba(Xta)[:, 1])
    return preds


def baseline_metrics(
    spec: LabelSpec, labels: pd.DataFrame, preds: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    out = {}
    for name, p in preds.items():
        if spec.kind == "regression":
            out[name] = regression_metrics(labels["label"], p)
        else:
            out[name] = classification_metrics(_binary_target(spec, labels), p)
    return out


def oracle_metrics(
    task: str, spec: LabelSpec, labels: pd.DataFrame, metrics: dict[str, float], oracle: Oracle, cutoff: pd.Timestamp
) -> dict[str, float]:
    """AUC (or Spearman for values) of the true probabilities on the same test rows, and our ratio to it."""
    out: dict[str, float] = {}
    horizons = list(spec.horizons or (spec.horizon_days,)) if spec.kind == "timing" else [spec.horizon_days]
    for h in horizons:
        truth = oracle(cutoff, h)
        col = ORACLE_COLUMN[task]
        if col not in truth.columns:
            continue
        truth = truth.assign(customer_id=truth["customer_id"].astype(str)).drop_duplicates("customer_id")
        p = (
            labels[["customer_id"]]
            .merge(truth[["customer_id", col]], on="customer_id", how="left")[col]
            .to_numpy(float)
        )
        ok = ~np.isnan(p)
        suffix = "" if h == spec.horizon_days else f"_{h}d"
        if spec.kind == "regression":
            ref = regression_metrics(labels["label"].to_numpy(float)[ok], p[ok])
            key = "spearman"
        else:
            y = labels["label" if spec.kind != "timing" else f"label_{h}d"].to_numpy(float)[ok]
            ref = classification_metrics(y, p[ok])
            key = "auc"
            out[f"oracle_ece{suffix}"] = ref["ece"]
        out[f"oracle_{key}{suffix}"] = ref[key]
        mine = metrics.get(f"{key}{suffix}", math.nan)
        out[f"{key}_to_oracle{suffix}"] = mine / ref[key] if ref[key] and not math.isnan(ref[key]) else math.nan
        out[f"oracle_coverage{suffix}"] = float(ok.mean()) if len(ok) else math.nan
    return out


@dataclass
class FittedPart:
    spec: LabelSpec
    plan: SplitPlan
    ds: TrainingSet
    model: JourneyModel
    outputs: pd.DataFrame
    metrics: dict[str, float]
    features: list[str]
    categorical: list[str]


def fit_part(
    spec: LabelSpec,
    cfg: ModelConfig,
    events: LabelEvents,
    feature_source: FeatureSource,
    customers: pd.DataFrame | None,
    test_cutoff: Any = None,
) -> FittedPart:
    s = cfg.splits
    plan = _plan(spec, cfg, events, test_cutoff)
    ds = build_training_set(
        events.events,
        spec,
        plan,
        feature_source,
        customers=customers,
        max_train_rows=s.max_train_rows,
        max_eval_rows=s.max_eval_rows,
        source=events.source,
        seed=cfg.gbm.seed,
    )
    features = model_columns(ds, cfg)
    categorical = categorical_columns(ds.train.features, features, cfg)
    model = make_model(spec, cfg, features, categorical)
    model.fit(ds.train.features, ds.train.labels, ds.validation.features, ds.validation.labels)
    outputs = model.predict_frame(ds.test.features)
    horizons = list(spec.horizons or (spec.horizon_days,))
    metrics = evaluate.score_metrics(spec.kind, ds.test.labels, outputs, cfg.task, horizons, spec.horizon_days)
    metrics["cold_start_share"] = float(outputs["cold_start"].mean())
    return FittedPart(spec, plan, ds, model, outputs, metrics, features, categorical)


def part_specs(spec: LabelSpec) -> list[LabelSpec]:
    """Value tasks fit one model per horizon (each with its own honest split); others fit one."""
    if spec.kind != "regression":
        return [spec]
    extra = [h for h in spec.all_horizons if h != spec.horizon_days]
    return [spec] + [dataclasses.replace(spec, horizon_days=h, horizons=(h,)) for h in extra]


def _plan(spec: LabelSpec, cfg: ModelConfig, events: LabelEvents, test_cutoff: Any = None) -> SplitPlan:
    s = cfg.splits
    return plan_splits(
        events.data_start,
        events.data_end,
        spec.horizon_days,
        n_train_cutoffs=s.n_train_cutoffs,
        step_days=s.step_days,
        min_history_days=s.min_history_days,
        test_cutoff=test_cutoff,
    )


def planned_cutoffs(cfg: ModelConfig, spec: LabelSpec, events: LabelEvents, test_cutoff: Any = None) -> list[Any]:
    """Every cutoff `train_task` will ask features for (all parts and backtest folds), for prefetching."""
    out: set[Any] = set()
    for i, ps in enumerate(part_specs(spec)):
        try:
            plan = _plan(ps, cfg, events, test_cutoff if i == 0 else None)
        except SplitError:
            continue
        out.update(plan.cutoffs)
        if i == 0:
            for k in range(1, cfg.backtest_folds + 1):
                try:
                    shifted = plan.test_cutoff - pd.Timedelta(days=k * cfg.splits.step_days)
                    out.update(_plan(ps, cfg, events, shifted).cutoffs)
                except SplitError:
                    break
    return sorted(out)


def champion_metrics(
    cl: Any, cfg: ModelConfig, spec: LabelSpec, part: FittedPart
) -> tuple[dict[str, float] | None, str | None, str | None]:
    """The current champion's metrics on the challenger's test rows: (metrics, note, version)."""
    mv = registry.alias_version(cl, cfg.registered_model, registry.CHAMPION)
    if mv is None:
        return None, None, None
    try:
        champ = registry.load_model_uri(f"models:/{cfg.registered_model}/{mv.version}")
    except Exception as exc:  # noqa: BLE001 - an unloadable champion must not stop training
        return (
            None,
            f"champion v{mv.version} could not be loaded ({exc}); compared with baselines only",
            str(mv.version),
        )
    if champ.spec_hash != spec.hash:
        return (
            None,
            f"champion v{mv.version} was trained on label spec {champ.spec_hash}; not comparable",
            str(mv.version),
        )
    try:
        outputs = champ.primary.predict_frame(part.ds.test.features)
    except Exception as exc:  # noqa: BLE001 - e.g. it needs features this frame no longer has
        return None, f"champion v{mv.version} cannot score this test set ({exc}); not comparable", str(mv.version)
    horizons = list(spec.horizons or (spec.horizon_days,))
    metrics = evaluate.score_metrics(spec.kind, part.ds.test.labels, outputs, cfg.task, horizons, spec.horizon_days)
    return metrics, None, str(mv.version)


def backtest(
    spec: LabelSpec,
    cfg: ModelConfig,
    events: LabelEvents,
    feature_source: FeatureSource,
    customers: pd.DataFrame | None,
    plan: SplitPlan,
) -> dict[str, dict[str, float]]:
    """Refit at earlier origins (test cutoff moved back by k * step) and score each: per-cutoff metrics."""
    out: dict[str, dict[str, float]] = {}
    for k in range(1, cfg.backtest_folds + 1):
        cutoff = plan.test_cutoff - pd.Timedelta(days=k * cfg.splits.step_days)
        try:
            part = fit_part(spec, cfg, events, feature_source, customers, test_cutoff=cutoff)
        except SplitError:
            break
        out[cutoff.date().isoformat()] = part.metrics
    return out


def train_task(
    task: str,
    events: LabelEvents,
    feature_source: FeatureSource,
    *,
    tracking_uri: str,
    customers: pd.DataFrame | None = None,
    oracle: Oracle | None = None,
    config: ModelConfig | None = None,
    spec: LabelSpec | None = None,
    experiment_prefix: str = "journeyml",
    dataset_uri: str = "",
    test_cutoff: Any = None,
    register: bool = True,
    artifact_root: str | None = None,
) -> TaskResult:
    """Train, evaluate, log and register one task. Raises SplitError / ValueError with a clear message."""
    started = time.perf_counter()
    cfg = config or load_config(task)
    spec = spec or load_spec(cfg.label_spec)
    notes: list[str] = []
    parts: list[FittedPart] = []
    for i, ps in enumerate(part_specs(spec)):
        try:
            parts.append(fit_part(ps, cfg, events, feature_source, customers, test_cutoff if i == 0 else None))
        except SplitError as exc:
            if i == 0:
                raise
            notes.append(f"horizon {ps.horizon_days}d skipped: {exc}")
    main = parts[0]
    metrics = dict(main.metrics)
    for p in parts[1:]:
        metrics.update({f"{k}_{p.spec.horizon_days}d": v for k, v in p.metrics.items()})
    base_preds = fit_baselines(spec, cfg, main.ds, main.features, main.categorical, main.model)
    base_metrics = baseline_metrics(spec, main.ds.test.labels, base_preds)
    if oracle is not None:
        try:
            metrics.update(oracle_metrics(task, spec, main.ds.test.labels, metrics, oracle, main.plan.test_cutoff))
        except Exception as exc:  # noqa: BLE001 - the oracle is a bonus; training stands without it
            notes.append(f"oracle metrics unavailable: {exc}")
    per_cutoff = {main.plan.test_cutoff.date().isoformat(): main.metrics}
    per_cutoff.update(backtest(spec, cfg, events, feature_source, customers, main.plan))
    task_model = TaskModel(task, spec.hash, spec.feature_service, [p.model for p in parts])
    task_model.info = {
        "test_cutoff": main.plan.test_cutoff.isoformat(),
        "trained_at": pd.Timestamp.now("UTC").isoformat(),
    }

    cl = registry.client(tracking_uri)
    champ, champ_note, champ_version = champion_metrics(cl, cfg, spec, main)
    decision = decide(metrics, base_metrics, champ, cfg.gate, champ_note)

    run_id, version = _log_run(
        task, cfg, spec, main, parts, metrics, base_metrics, base_preds, per_cutoff, decision, task_model,
        experiment_prefix=experiment_prefix, dataset_uri=dataset_uri, notes=notes, register=register,
        champion_version=champ_version, artifact_root=artifact_root,
    )  # fmt: skip
    if register and version is not None:
        registry.set_alias(cl, cfg.registered_model, registry.CHALLENGER, version)
        cl.set_model_version_tag(
            cfg.registered_model, version, "gate_decision", "promoted" if decision.promote else "rejected"
        )
        cl.set_model_version_tag(cfg.registered_model, version, "label_spec_hash", spec.hash)
        cl.set_model_version_tag(cfg.registered_model, version, "test_cutoff", main.plan.test_cutoff.date().isoformat())
        if decision.promote:
            registry.set_alias(cl, cfg.registered_model, registry.CHAMPION, version)
    return TaskResult(
        task=task,
        run_id=run_id,
        version=version,
        promoted=bool(decision.promote and register),
        gate=decision.as_dict(),
        metrics=metrics,
        baselines=base_metrics,
        plan=main.plan.as_dict(),
        rows={s.name: len(s) for s in main.ds.splits()},
        seconds=time.perf_counter() - started,
        notes=notes,
    )


def _artifact_root(tracking_uri: str) -> str | None:
    from core.settings import get_settings

    return registry.default_artifact_root(tracking_uri, get_settings().root)


def _clean(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in metrics.items() if v is not None and not math.isnan(float(v))}


def _log_run(
    task: str,
    cfg: ModelConfig,
    spec: LabelSpec,
    main: FittedPart,
    parts: list[FittedPart],
    metrics: dict[str, float],
    base_metrics: dict[str, dict[str, float]],
    base_preds: dict[str, np.ndarray],
    per_cutoff: dict[str, dict[str, float]],
    decision: GateDecision,
    task_model: TaskModel,
    *,
    experiment_prefix: str,
    dataset_uri: str,
    notes: list[str],
    register: bool,
    champion_version: str | None,
    artifact_root: str | None,
) -> tuple[str, str | None]:
    import mlflow

    registry.use_experiment(f"{experiment_prefix}-{task}", artifact_root or _artifact_root(mlflow.get_tracking_uri()))
    plan = main.plan
    test_day = plan.test_cutoff.date().isoformat()
    stamp = pd.Timestamp.now("UTC").strftime("%Y%m%d-%H%M%S")
    tags = {
        "task": task,
        "feature_service": spec.feature_service,
        "label_spec": spec.name,
        "label_spec_hash": spec.hash,
        "data_window": f"{plan.data_start.date()}..{plan.data_end.date()}",
        "train_window": plan.window(),
        "test_cutoff": test_day,
        "dataset_source": main.ds.source,
        "model_kind": spec.kind,
    }
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    with mlflow.start_run(run_name=f"{task}-lightgbm-test{test_day}-{stamp}", tags=tags) as run:
        mlflow.log_params(
            {
                "horizon_days": spec.horizon_days,
                "horizons": ",".join(str(h) for h in spec.all_horizons),
                "train_cutoffs": ",".join(c.date().isoformat() for c in plan.train_cutoffs),
                "validation_cutoff": plan.validation_cutoff.date().isoformat(),
                "test_cutoff": test_day,
                "n_features": len(main.features),
                "categorical": ",".join(main.categorical),
                "btyd": cfg.btyd,
                "best_iteration": main.model.estimator_.best_iteration_,
                **{f"gbm_{k}": v for k, v in cfg.gbm.model_dump().items()},
                **{f"split_{k}": v for k, v in cfg.splits.model_dump().items()},
                "cold_start_min_events": cfg.cold_start.min_events,
            }
        )
        _log_inputs(main.ds, spec, dataset_uri)
        mlflow.log_metrics(_clean(metrics, "test_"))
        mlflow.log_metrics({f"rows_{s.name}": float(len(s)) for s in main.ds.splits()})
        for step, (day, m) in enumerate(sorted(per_cutoff.items())):
            key = {k: m[k] for k in ("auc", "spearman", "ece", "concordance", "lift_quality") if k in m}
            mlflow.log_metrics(_clean(key, "backtest_"), step=step)
            mlflow.log_metrics(_clean(key, f"cutoff_{day}_"))
        if main.model.btyd_ is not None:
            mlflow.log_params({f"btyd_{k}": round(v, 6) for k, v in main.model.btyd_.params_.items()})
        mlflow.set_tags(
            {"gate_decision": "promoted" if decision.promote else "rejected", "gate_reasons": decision.summary[:4900]}
        )
        if champion_version:
            mlflow.set_tag("champion_version_at_training", champion_version)
        if notes:
            mlflow.set_tag("notes", " | ".join(notes)[:4900])
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "label_spec.yaml").write_text(spec.to_yaml())
            (folder / "features.json").write_text(
                json.dumps(
                    {
                        "features": main.features,
                        "categorical": main.categorical,
                        "model_features": main.model.model_features_,
                        "input_features": task_model.input_features,
                    },
                    indent=2,
                )  # fmt: skip
            )
            (folder / "split_plan.json").write_text(json.dumps([p.plan.as_dict() for p in parts], indent=2))
            (folder / "gate.json").write_text(json.dumps(decision.as_dict(), indent=2, default=str))
            (folder / "per_cutoff_metrics.json").write_text(json.dumps(per_cutoff, indent=2, default=str))
            (folder / "baselines.json").write_text(json.dumps(base_metrics, indent=2, default=str))
            _plots(main, base_preds, folder / "plots")
            mlflow.log_artifacts(str(folder))
        info = registry.log_task_model(task_model, main.ds.test.features, cfg.registered_model if register else None)
        for name, m in base_metrics.items():
            with mlflow.start_run(run_name=f"{task}-baseline-{name}-test{test_day}-{stamp}", nested=True,
                                  tags={**tags, "baseline": name}):  # fmt: skip
                mlflow.log_param("baseline", name)
                mlflow.log_metrics(_clean(m, "test_"))
    version = getattr(info, "registered_model_version", None)
    return run.info.run_id, None if version is None else str(version)


def _log_inputs(ds: TrainingSet, spec: LabelSpec, dataset_uri: str) -> None:
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    for split, context in ((ds.train, "training"), (ds.validation, "validation"), (ds.test, "testing")):
        frame = split.features.copy()
        for col in ("label", "event_days", "followup_days"):
            if col in split.labels.columns:
                frame[col] = split.labels[col].to_numpy()
        for col in frame.columns:
            if isinstance(frame[col].dtype, pd.CategoricalDtype) or frame[col].dtype == object:
                frame[col] = frame[col].astype("string")
        cutoffs = ",".join(c.date().isoformat() for c in split.cutoffs)
        digest = hashlib.sha256(f"{spec.hash}|{split.name}|{cutoffs}|{len(frame)}".encode()).hexdigest()[:16]
        dataset = from_pandas(
            frame.head(1000), source=dataset_uri or "journeyml-store", name=f"{spec.name}-{split.name}",
            targets="label", digest=digest,
        )  # fmt: skip
        mlflow.log_input(dataset, context=context, tags={"cutoffs": cutoffs, "rows": str(len(frame))})


def _plots(main: FittedPart, base_preds: dict[str, np.ndarray], folder: Path) -> None:
    spec, model, ds = main.spec, main.model, main.ds
    primary = model.primary_output
    scores = {"lightgbm": main.outputs[primary].to_numpy(float), **base_preds}
    if spec.kind == "regression":
        figs = evaluate.regression_plots(ds.test.labels["label"].to_numpy(float), scores, spec.name)
    else:
        y = _binary_target(spec, ds.test.labels)
        figs = evaluate.classification_plots(y, scores, f"{spec.name} {spec.horizon_days}d")
    sample = ds.test.features.sample(n=min(len(ds.test.features), SHAP_ROWS), random_state=0)
    contrib = model.contributions(sample)
    figs.update(evaluate.shap_plots(contrib, model.feature_values(sample), model.estimator_.feature_importance()))
    evaluate.save_figures(figs, folder)
    model.estimator_.feature_importance().to_csv(folder / "feature_importance.csv", index=False)


def evaluate_registered(
    task: str,
    alias: str,
    events: LabelEvents,
    feature_source: FeatureSource,
    tracking_uri: str,
    *,
    customers: pd.DataFrame | None = None,
    cutoff: Any = None,
    experiment_prefix: str = "journeyml",
    artifact_root: str | None = None,
) -> dict[str, Any]:
    """Score the registered `alias` version at one cutoff (default: the latest complete one) and log an
    evaluation run in the task's experiment. Raises SpecMismatchError if the label spec changed."""
    import mlflow

    from core.time import to_utc
    from training.dataset import join_features
    from training.labels import labels

    cfg = load_config(task)
    spec = load_spec(cfg.label_spec)
    model, info = registry.load_version(task, alias, tracking_uri)
    model.check_spec(spec.hash)
    h = pd.Timedelta(days=spec.horizon_days)
    at = to_utc(cutoff) if cutoff is not None else (events.data_end - h).floor("D")
    if at + h > events.data_end:
        raise SplitError(f"the horizon of cutoff {at.date()} has not passed yet (data end {events.data_end.date()})")
    lab = labels(events.events, spec, [at], customers=customers, observed_until=events.data_end)
    lab = lab[lab["complete"]].reset_index(drop=True)
    if lab.empty:
        raise SplitError(f"no eligible customers at {at.date()}")
    feats = join_features(lab[["customer_id", "cutoff"]], feature_source)
    outputs = model.primary.predict_frame(feats)
    horizons = list(spec.horizons or (spec.horizon_days,))
    metrics = evaluate.score_metrics(spec.kind, lab, outputs, task, horizons, spec.horizon_days)
    metrics["cold_start_share"] = float(outputs["cold_start"].mean())
    registry.client(tracking_uri)
    registry.use_experiment(f"{experiment_prefix}-{task}", artifact_root or _artifact_root(mlflow.get_tracking_uri()))
    day = at.date().isoformat()
    with mlflow.start_run(
        run_name=f"{task}-evaluate-v{info['version']}-{alias}-at{day}",
        tags={"task": task, "evaluation": "true", "model_version": info["version"], "alias": alias,
              "label_spec_hash": spec.hash, "test_cutoff": day, "feature_service": spec.feature_service},
    ) as run:  # fmt: skip
        mlflow.log_metrics(_clean(metrics, "test_"))
    return {"task": task, "alias": alias, "version": info["version"], "cutoff": day, "rows": len(lab),
            "metrics": metrics, "run_id": run.info.run_id}  # fmt: skip
