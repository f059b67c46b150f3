"""MLflow model registry: logging a task model, the challenger/champion aliases, loading for serving.

One registered model per task (`journeyml-churn`, ...). Every training run registers a
version and points `challenger` at it; `champion` moves only when the promotion gate
passes. A version's MLflow model is the primary LightGBM booster in the native LightGBM
flavour; its `extra_files` carry the scoring bundle (feature list, calibrators, BG/NBD
parameters, cold-start priors, spec hash, feature service) and any further boosters as
LightGBM text files, so one version is all serving needs.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from core.output import json_default
from models.estimators import encode_frame
from models.task_model import TaskModel

CHALLENGER = "challenger"
CHAMPION = "champion"
BUNDLE_FILE = "scoring_bundle.json"


class RegistryError(RuntimeError):
    """Nothing registered yet, or a version that cannot be loaded."""


def client(tracking_uri: str) -> Any:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=tracking_uri)


def use_experiment(name: str, artifact_root: str | None) -> str:
    """Create (if needed) and activate an experiment. With a database backend, MLflow would put
    artifacts under ./mlruns of the working directory; `artifact_root` keeps them in the workspace."""
    import mlflow

    existing = mlflow.get_experiment_by_name(name)
    if existing is None:
        location = None
        if artifact_root:
            remote = "://" in artifact_root
            location = f"{artifact_root}/{name}" if remote else (Path(artifact_root) / name).resolve().as_uri()
        # Tagged as model training, so the MLflow 3 UI opens on the runs table and model
        # comparison rather than the GenAI (traces) overview.
        exp_id = mlflow.create_experiment(
            name, artifact_location=location, tags={"mlflow.experimentKind": "custom_model_development"}
        )
    else:
        exp_id = existing.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return str(exp_id)


def default_artifact_root(tracking_uri: str, home: Path) -> str | None:
    """Artifacts next to the database for database backends; the server decides for http(s)."""
    if tracking_uri.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "mysql", "mssql"):
        return str(home / "mlartifacts")
    return None


def registered_name(task: str) -> str:
    from training.config import load_config

    return load_config(task).registered_model


def _example(model: TaskModel, features: pd.DataFrame) -> pd.DataFrame:
    """The primary booster's input as the native flavour sees it (categoricals as integer codes)."""
    part = model.primary
    est = part.estimator_
    enc = encode_frame(part.augment(features.head(5)), est.feature_names_, est.categories_)
    if "period" in est.booster_.feature_name():
        enc["period"] = np.float32(0)
    return enc.astype("float64").reset_index(drop=True)


def log_task_model(model: TaskModel, features: pd.DataFrame, registered_model: str | None) -> Any:
    """Log (and register, when a name is given) inside the active run. Returns MLflow's ModelInfo."""
    import mlflow
    import mlflow.lightgbm
    from mlflow.models import infer_signature

    example = _example(model, features)
    booster = model.primary.estimator_.booster_
    signature = infer_signature(
        example, booster.predict(example, num_iteration=model.primary.estimator_.best_iteration_)
    )
    with tempfile.TemporaryDirectory() as tmp:
        bundle_path = Path(tmp) / BUNDLE_FILE
        bundle_path.write_text(json.dumps(model.to_bundle(), default=json_default))
        extra = [str(bundle_path)]
        for name, b in model.boosters().items():
            if name != "part0":
                path = Path(tmp) / f"{name}.lgb.txt"
                b.save_model(str(path))
                extra.append(str(path))
        return mlflow.lightgbm.log_model(
            booster,
            name="model",
            signature=signature,
            input_example=example,
            registered_model_name=registered_model,
            extra_files=extra,
            metadata={"task": model.task, "spec_hash": model.spec_hash, "feature_service": model.feature_service},
            # stated, not inferred: inference loads the model in a subprocess and costs seconds per run
            pip_requirements=pip_requirements(),
        )


def pip_requirements() -> list[str]:
    """What loading the native LightGBM model needs, pinned to the versions that trained it."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in ("lightgbm", "mlflow", "numpy", "pandas", "scikit-learn", "scipy"):
        try:
            reqs.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            reqs.append(dist)
    return reqs


def load_model_uri(model_uri: str) -> TaskModel:
    """A TaskModel from an MLflow model URI (models:/name@alias, models:/name/3, runs:/...)."""
    import mlflow.artifacts
    import mlflow.lightgbm

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        booster = mlflow.lightgbm.load_model(str(local))
        if not isinstance(booster, lgb.Booster):  # a scikit-learn LightGBM model would carry one
            booster = booster.booster_
        found = list(local.rglob(BUNDLE_FILE))
        if not found:
            raise RegistryError(f"{model_uri} has no {BUNDLE_FILE}: not a journeyml model")
        bundle = json.loads(found[0].read_text())
        boosters = {"part0": booster}
        for i in range(1, len(bundle["parts"])):
            files = list(local.rglob(f"part{i}.lgb.txt"))
            if not files:
                raise RegistryError(f"{model_uri} lacks booster part{i}")
            boosters[f"part{i}"] = lgb.Booster(model_file=str(files[0]))
    return TaskModel.from_bundle(bundle, boosters)


def version_info(mv: Any, cl: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "name": mv.name,
        "version": str(mv.version),
        "run_id": mv.run_id,
        "aliases": list(getattr(mv, "aliases", []) or []),
        "tags": dict(mv.tags or {}),
    }
    if mv.run_id:
        try:
            run = cl.get_run(mv.run_id)
            info["metrics"] = {k: v for k, v in run.data.metrics.items() if k.startswith("test_")}
            info["run_name"] = run.info.run_name
        except Exception:  # noqa: BLE001 - a deleted run leaves the version usable
            info["metrics"] = {}
    return info


def alias_version(cl: Any, name: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return cl.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def load_version(
    task: str, alias: str = CHAMPION, tracking_uri: str | None = None, *, check_spec: bool = True
) -> tuple[TaskModel, dict[str, Any]]:
    """(scorer-ready TaskModel, version info) for `models:/<registered name>@<alias>`.

    With `check_spec`, a model trained on another version of `conf/labels/<task>.yaml` than the
    one in force raises SpecMismatchError instead of loading."""
    from core.settings import get_settings

    uri = tracking_uri or get_settings().tracking_uri
    cl = client(uri)
    name = registered_name(task)
    mv = alias_version(cl, name, alias)
    if mv is None:
        raise RegistryError(f"no {alias} for {name}: run `journey train --task {task}` first")
    model = load_model_uri(f"models:/{name}/{mv.version}")
    info = version_info(mv, cl)
    model.info.update({"registered_model": name, "version": info["version"], "alias": alias, "run_id": info["run_id"]})
    if check_spec:
        from training.labels import load_spec

        model.check_spec(load_spec(task).hash)
    return model, info


def load_champion(
    task: str, tracking_uri: str | None = None, *, check_spec: bool = True
) -> tuple[TaskModel, dict[str, Any]]:
    """The champion of a task, ready for `models.scorer.Scorer`, and its version info.
    Raises RegistryError when there is none, SpecMismatchError when the label spec changed since."""
    return load_version(task, CHAMPION, tracking_uri, check_spec=check_spec)


def set_alias(cl: Any, name: str, alias: str, version: str) -> None:
    cl.set_registered_model_alias(name, alias, str(version))


def promote(task: str, version: str | None, reason: str, tracking_uri: str) -> dict[str, Any]:
    """Move `champion` to a version by hand (default: the current challenger), past the gate.

    The override is recorded on the version (`gate_override` with the reason and the previous
    champion), so the registry keeps why a model serves that the gate did not promote."""
    from mlflow.exceptions import MlflowException

    cl = client(tracking_uri)
    name = registered_name(task)
    if version is None:
        mv = alias_version(cl, name, CHALLENGER)
        if mv is None:
            raise RegistryError(f"{name} has no {CHALLENGER}: train it first or pass --version")
        version = str(mv.version)
    try:
        cl.get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(f"{name} has no version {version}") from exc
    before = alias_version(cl, name, CHAMPION)
    previous = None if before is None else str(before.version)
    set_alias(cl, name, CHAMPION, str(version))
    cl.set_model_version_tag(name, str(version), "gate_override", f"{reason} (previous champion: {previous or '-'})")
    return {"task": task, "registered_model": name, "champion": str(version), "previous": previous, "reason": reason}


def list_models(tasks: list[str], tracking_uri: str) -> list[dict[str, Any]]:
    """Per task: the champion and challenger versions with their test metrics (None when absent)."""
    cl = client(tracking_uri)
    rows = []
    for task in tasks:
        name = registered_name(task)
        row: dict[str, Any] = {"task": task, "registered_model": name}
        for alias in (CHAMPION, CHALLENGER):
            mv = alias_version(cl, name, alias)
            row[alias] = None if mv is None else version_info(mv, cl)
        rows.append(row)
    return rows
