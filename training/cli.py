"""`journey train`, `journey evaluate`, `journey models list`: thin wiring of training to the command line."""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from core.output import emit, fail, progress

TASK_CHOICES = ("churn", "next_purchase", "conversion", "clv")
models_app = typer.Typer(help="Registered models: champions and challengers.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON summary on stdout.")]
TaskOpt = Annotated[str, typer.Option("--task", help="churn, next_purchase, conversion, clv or all.")]


def _tasks(task: str, json_out: bool) -> list[str]:
    if task == "all":
        return list(TASK_CHOICES)
    if task not in TASK_CHOICES:
        fail(f"--task must be one of {', '.join(TASK_CHOICES)} or all, not {task!r}", json_out)
    return [task]


def _quiet() -> None:
    """MLflow and LightGBM chatter goes away; our own progress lines stay on stderr.

    OMP_WAIT_POLICY=PASSIVE (unless set): LightGBM's OpenMP threads otherwise spin while
    waiting, which on a busy 2-core machine makes training 10x slower. It must be set
    before LightGBM loads, which is why the commands import it lazily."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    for name in ("mlflow", "alembic", "urllib3", "git"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def _round(metrics: dict[str, Any], keys: tuple[str, ...]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in metrics.items() if k in keys and v is not None and not math.isnan(v)}


KEY_METRICS = ("auc", "ece", "pr_auc", "lift_top_decile", "lift_quality", "concordance", "spearman", "mae", "rmse",
               "auc_to_oracle", "oracle_auc", "spearman_to_oracle")  # fmt: skip


def _oracle(sim_dir: Path | None, json_out: bool) -> Any:
    if sim_dir is None:
        return None
    try:
        from features.simulator import ground_truth, load_simulation
    except ImportError:
        fail("--sim-dir needs the simulator (features.simulator)", json_out)
    try:
        sim = load_simulation(sim_dir)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc), json_out)
    return lambda cutoff, horizon: ground_truth(sim, cutoff, horizon)


def _feature_source(kind: str, glob: str, customers: Any, service: str, json_out: bool) -> Any:
    from training.dataset import compute_features_source, feast_feature_source

    if kind == "store":
        return compute_features_source(glob, customers)
    if kind == "feast":
        from core.settings import get_settings

        return feast_feature_source(service, get_settings())
    fail(f"--features must be store or feast, not {kind!r}", json_out)


def train_command(
    task: TaskOpt = "all",
    test_cutoff: Annotated[
        str | None,
        typer.Option("--test-cutoff", help="Fixed test cutoff (UTC); default: the latest whose horizon has passed."),
    ] = None,
    features: Annotated[
        str, typer.Option("--features", help="Feature source: store (compute from events) or feast.")
    ] = "store",
    sim_dir: Annotated[
        Path | None, typer.Option("--sim-dir", help="Simulation folder: adds oracle metrics from its ground truth.")
    ] = None,
    max_train_rows: Annotated[
        int | None, typer.Option("--max-train-rows", help="Cap on training rows (sampled).")
    ] = None,
    no_register: Annotated[bool, typer.Option("--no-register", help="Log the runs but register no version.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Train LightGBM and baselines per task on the event store; log to MLflow; register; run the promotion gate."""
    _quiet()
    from core.settings import get_settings
    from core.time import to_utc
    from training.config import ConfigError, load_config
    from training.dataset import SplitError
    from training.labels import SpecError, load_spec
    from training.registry import default_artifact_root
    from training.store import StoreError, known_customers, load_customers, load_label_events, store_glob
    from training.train import planned_cutoffs, train_task

    tasks = _tasks(task, json_out)
    # Under `mlflow run` the project's run id is in the environment; our runs go to the
    # task experiments instead, and the project run gets their ids as tags.
    project_run = os.environ.pop("MLFLOW_RUN_ID", None)
    settings = get_settings()
    glob = store_glob(settings.events_dir)
    try:
        cutoff = to_utc(test_cutoff) if test_cutoff else None
    except ValueError as exc:
        fail(str(exc), json_out)
    oracle = _oracle(sim_dir, json_out)
    try:
        progress(f"reading events from {settings.events_dir}")
        events = load_label_events(glob)
    except StoreError as exc:
        fail(str(exc), json_out)
    if sim_dir is not None:
        events.source = "simulator"
    customers = known_customers(events.first_seen, load_customers(settings.customers_path))
    results: list[dict[str, Any]] = []
    try:
        overrides = {"splits.max_train_rows": max_train_rows} if max_train_rows else None
        configs = {name: load_config(name, overrides=overrides) for name in tasks}
        specs = {name: load_spec(cfg.label_spec) for name, cfg in configs.items()}
    except (SpecError, ConfigError) as exc:
        fail(str(exc), json_out)
    shared = _feature_source(features, glob, customers, "", json_out) if features == "store" else None
    if shared is not None and hasattr(shared, "prefetch"):
        wanted = sorted({c for n in tasks for c in planned_cutoffs(configs[n], specs[n], events, cutoff)})
        progress(f"computing journey features at {len(wanted)} cutoffs")
        try:
            shared.prefetch(wanted)
        except ImportError as exc:
            fail(f"the feature engine is not available ({exc}); try --features feast", json_out)
    for name in tasks:
        try:
            cfg, spec = configs[name], specs[name]
            source = shared or _feature_source(features, glob, customers, spec.feature_service, json_out)
            progress(f"training {name} (label spec {spec.name} {spec.hash})")
            result = train_task(
                name, events, source, tracking_uri=settings.tracking_uri, customers=customers, oracle=oracle,
                config=cfg, spec=spec, dataset_uri=glob, test_cutoff=cutoff, register=not no_register,
                artifact_root=default_artifact_root(settings.tracking_uri, settings.root),
            )  # fmt: skip
        except (SplitError, SpecError, ConfigError, ValueError, KeyError) as exc:
            fail(f"{name}: {exc}", json_out, task=name, completed=[r["task"] for r in results])
        except ImportError as exc:
            fail(
                f"{name}: a feature source is not available ({exc}); try --features feast or build the features",
                json_out,
            )
        results.append(
            {
                "task": name,
                "run_id": result.run_id,
                "version": result.version,
                "promoted": result.promoted,
                "gate": result.gate["reasons"],
                "metrics": _round(result.metrics, KEY_METRICS),
                "baselines": {b: _round(m, KEY_METRICS) for b, m in result.baselines.items()},
                "test_cutoff": result.plan["test_cutoff"],
                "rows": result.rows,
                "seconds": round(result.seconds, 1),
                "notes": result.notes,
            }
        )
    if project_run:
        from training.registry import client

        cl = client(settings.tracking_uri)
        for r in results:
            cl.set_tag(project_run, f"journeyml.{r['task']}.run_id", str(r["run_id"]))
            cl.set_tag(project_run, f"journeyml.{r['task']}.version", str(r["version"]))
    summary = {"ok": True, "tracking_uri": settings.tracking_uri, "tasks": results}
    lines = []
    for r in results:
        status = "champion" if r["promoted"] else "challenger"
        lines.append(f"[bold]{r['task']}[/bold] v{r['version']} ({status}) test {r['test_cutoff']}: {r['metrics']}")
        lines.append(f"  baselines: {r['baselines']}")
        lines.append(f"  gate: {'; '.join(r['gate'])}")
    emit(summary, json_out, "\n".join(lines))


def evaluate_command(
    task: TaskOpt = "all",
    alias: Annotated[
        str, typer.Option("--alias", help="Registry alias to evaluate: champion or challenger.")
    ] = "champion",
    test_cutoff: Annotated[str | None, typer.Option("--test-cutoff", help="Cutoff to evaluate at (UTC).")] = None,
    features: Annotated[str, typer.Option("--features", help="Feature source: store or feast.")] = "store",
    json_out: JsonOpt = False,
) -> None:
    """Score a registered model on the latest complete cutoff of the current event store and report its metrics."""
    _quiet()
    from core.settings import get_settings
    from core.time import to_utc
    from training.dataset import SplitError
    from training.registry import RegistryError, default_artifact_root
    from training.store import StoreError, known_customers, load_customers, load_label_events, store_glob
    from training.train import evaluate_registered

    tasks = _tasks(task, json_out)
    settings = get_settings()
    glob = store_glob(settings.events_dir)
    try:
        cutoff = to_utc(test_cutoff) if test_cutoff else None
        events = load_label_events(glob)
    except (StoreError, ValueError) as exc:
        fail(str(exc), json_out)
    customers = known_customers(events.first_seen, load_customers(settings.customers_path))
    results = []
    for name in tasks:
        try:
            from training.labels import load_spec

            source = _feature_source(features, glob, customers, load_spec(name).feature_service, json_out)
            results.append(
                evaluate_registered(
                    name,
                    alias,
                    events,
                    source,
                    settings.tracking_uri,
                    customers=customers,
                    cutoff=cutoff,
                    artifact_root=default_artifact_root(settings.tracking_uri, settings.root),
                )  # fmt: skip
            )
        except (RegistryError, SplitError, ValueError, KeyError) as exc:
            fail(f"{name}: {exc}", json_out, task=name)
    for r in results:
        r["metrics"] = _round(r["metrics"], KEY_METRICS)
    emit({"ok": True, "tasks": results}, json_out,
         "\n".join(f"[bold]{r['task']}[/bold] v{r['version']} @{r['alias']} at {r['cutoff']}: {r['metrics']}"
                   for r in results))  # fmt: skip


@models_app.command("list")
def list_command(json_out: JsonOpt = False) -> None:
    """Per task: the champion and challenger versions and their key test metrics."""
    _quiet()
    from core.settings import get_settings
    from training.registry import list_models

    settings = get_settings()
    try:
        rows = list_models(list(TASK_CHOICES), settings.tracking_uri)
    except Exception as exc:  # noqa: BLE001 - an unreachable tracking server is a user error here
        fail(f"cannot read the model registry at {settings.tracking_uri}: {exc}", json_out)
    for row in rows:
        for alias in ("champion", "challenger"):
            if row[alias]:
                row[alias]["metrics"] = _round(
                    {k.removeprefix("test_"): v for k, v in row[alias].get("metrics", {}).items()}, KEY_METRICS
                )
                row[alias].pop("tags", None)
    lines = []
    for row in rows:
        parts = []
        for alias in ("champion", "challenger"):
            v = row[alias]
            parts.append(f"{alias} " + (f"v{v['version']} {v['metrics']}" if v else "-"))
        lines.append(f"[bold]{row['task']}[/bold] ({row['registered_model']}): " + "; ".join(parts))
    emit({"ok": True, "tracking_uri": settings.tracking_uri, "models": rows}, json_out, "\n".join(lines))


@models_app.command("promote")
def promote_command(
    task: Annotated[str, typer.Option("--task", help="churn, next_purchase, conversion or clv.")],
    reason: Annotated[str, typer.Option("--reason", help="Why the gate is overridden (recorded on the version).")],
    version: Annotated[str | None, typer.Option("--version", help="Version to serve; default: the challenger.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Make a version the champion by hand, past the promotion gate; the reason is recorded."""
    _quiet()
    from core.settings import get_settings
    from training.registry import RegistryError, promote

    if task not in TASK_CHOICES:
        fail(f"--task must be one of {', '.join(TASK_CHOICES)}, not {task!r}", json_out)
    if not reason.strip():
        fail("--reason must say why the gate is overridden", json_out)
    settings = get_settings()
    try:
        out = promote(task, version, reason.strip(), settings.tracking_uri)
    except RegistryError as exc:
        fail(str(exc), json_out)
    except Exception as exc:  # noqa: BLE001 - an unreachable tracking server is a user error here
        fail(f"cannot update the model registry at {settings.tracking_uri}: {exc}", json_out)
    emit({"ok": True, **out}, json_out, f"{out['registered_model']}: champion v{out['champion']} "
         f"(was {out['previous'] or '-'}); reason recorded: {out['reason']}")  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("evaluate")(evaluate_command)
    app.add_typer(models_app, name="models")
