"""`journey nba`: train, evaluate and document the next-best-action policy."""

from __future__ import annotations

import typer

from core.output import emit, fail, progress
from core.settings import get_settings

nba_app = typer.Typer(name="nba", help="Next best actions: uplift models, policy evaluation, the catalog.",
                      no_args_is_help=True)  # fmt: skip

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON summary on stdout.")


@nba_app.command("train")
def train_command(
    learner: str = typer.Option("lift", "--learner", help="Uplift learner: lift (default), t, x or s."),
    train_days: int = typer.Option(300, "--train-days", min=7, help="Days of logged decisions to learn from."),
    horizon_days: int | None = typer.Option(None, "--horizon", min=1, help="Outcome horizon (default: catalog)."),
    catalog: str | None = typer.Option(None, "--catalog", help="Action catalog YAML (default conf/actions.yaml)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed for the control sample and the models."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Learn uplift models from the logged contacts in the event store, evaluate them on later
    decisions (Qini, AUUC, uplift at 10%), and register them as `journeyml-nba` (challenger;
    champion when the gate passes)."""
    from models.nba import CatalogError
    from training.nba import NBAError, TrainConfig, UpliftParams, load_catalog, train_policy

    if learner not in ("lift", "t", "x", "s"):
        fail(f"--learner must be lift, t, x or s, not {learner!r}", json_out)
    try:
        cat = load_catalog(catalog)
    except CatalogError as exc:
        fail(str(exc), json_out)
    cfg = TrainConfig(horizon_days=horizon_days, train_days=train_days, uplift=UpliftParams(learner=learner, seed=seed))
    progress("training the next-best-action policy from the event store")
    try:
        summary = train_policy(get_settings(), cfg, catalog=cat)
    except (NBAError, CatalogError, ValueError) as exc:
        fail(str(exc), json_out)
    m = summary["metrics"]
    human = (
        f"journeyml-nba version {summary.get('version')}: Qini {m.get('qini', float('nan')):.5f}, "
        f"AUUC {m.get('auuc', float('nan')):.5f} on {summary['eval_rows']:,} held-out decisions; "
        f"{'promoted to champion' if summary.get('promoted') else 'challenger only'} ({summary.get('gate')})"
    )
    emit(summary, json_out, human)


@nba_app.command("evaluate")
def evaluate_command(
    customers: int = typer.Option(20_000, "--customers", min=100, help="Simulated customers."),
    days: int = typer.Option(365, "--days", min=120, help="Simulated days; the cutoff is the end."),
    seed: int = typer.Option(0, "--seed", min=0, help="Simulation and model seed."),
    budget: float = typer.Option(0.2, "--budget", min=0.0, max=1.0, help="Share of customers any policy may contact."),
    learner: str = typer.Option("lift", "--learner", help="Uplift learner: lift (default), t, x or s."),
    train_days: int = typer.Option(300, "--train-days", min=14, help="Days of logged decisions to learn from."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Judge the policy against the simulator's truth: value per 1,000 customers of random actions,
    a stage rule, propensity targeting, journeyml and the oracle, plus off-policy estimates."""
    from training.nba import NBAError, SimEvalConfig, TrainConfig, UpliftParams, evaluate_on_simulator, evaluation_table

    if learner not in ("lift", "t", "x", "s"):
        fail(f"--learner must be lift, t, x or s, not {learner!r}", json_out)
    if train_days + 60 > days:
        fail(f"--train-days {train_days} leaves too little history in {days} days (need train days + 60)", json_out)
    cfg = SimEvalConfig(
        customers=customers, days=days, seed=seed, budget_share=budget,
        holdout_share=get_settings().holdout_share,
        train=TrainConfig(train_days=train_days, uplift=UpliftParams(learner=learner, seed=seed)),
    )  # fmt: skip
    try:
        result = evaluate_on_simulator(cfg, progress=progress)
    except (NBAError, ValueError) as exc:
        fail(str(exc), json_out)
    emit(result, json_out, evaluation_table(result))


@nba_app.command("docs")
def docs_command(
    catalog: str | None = typer.Option(None, "--catalog", help="Action catalog YAML (default conf/actions.yaml)."),
    out: str | None = typer.Option(
        None, "--out", help="Write this file (docs/actions.md), keeping its hand-written part; default: print."
    ),
) -> None:
    """Print the catalog doc, or write it with `--out docs/actions.md` (the hand-written evaluation is kept)."""
    from models.nba import CatalogError
    from training.nba import actions_markdown, write_actions_doc

    try:
        if out is not None:
            write_actions_doc(out, catalog)
            return
        text = actions_markdown(catalog)
    except CatalogError as exc:
        fail(str(exc), False)
    typer.echo(text, nl=False)


def register(app: typer.Typer) -> None:
    app.add_typer(nba_app, name="nba")
