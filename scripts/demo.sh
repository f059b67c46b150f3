#!/usr/bin/env bash
# The whole story on the embedded default (DuckDB, SQLite, local files; no other service):
# install, simulate a business, ingest, build features, materialize, train, score, report.
# Options (environment): DEMO_CUSTOMERS (default 10000), DEMO_DAYS (540), DEMO_SEED (7),
# DEMO_START (default: DEMO_DAYS before today, so the simulated business is live and the API's scores are current),
# DEMO_REAL=1 to import the UCI Online Retail data from ../shared/data instead of simulating.
set -euo pipefail
cd "$(dirname "$0")/.."
export JOURNEY_HOME="${JOURNEY_HOME:-$PWD/.journey}"
CUSTOMERS="${DEMO_CUSTOMERS:-10000}"
DAYS="${DEMO_DAYS:-540}"
SEED="${DEMO_SEED:-7}"
START="${DEMO_START:-$(python -c "import datetime as d, sys; print(d.date.today() - d.timedelta(days=int(sys.argv[1])))" "$DAYS")}"
python -m pip install -q -e ".[dev]"
step() { printf '\n== %s\n' "$*" >&2; }

if [ "${DEMO_REAL:-0}" = "1" ]; then
  step "ingest the UCI Online Retail data"
  journey ingest ../shared/data/online_retail.parquet --mapping conf/mappings/online_retail.yaml --json
  END="2011-12-09"
else
  step "simulate $CUSTOMERS customers over $DAYS days"
  journey simulate --customers "$CUSTOMERS" --days "$DAYS" --seed "$SEED" --start "$START" --out "$JOURNEY_HOME/sim" --json
  step "ingest"
  journey ingest "$JOURNEY_HOME/sim/events.parquet" --customers "$JOURNEY_HOME/sim/customers.parquet" --json
  END=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['end'][:10])" "$JOURNEY_HOME/sim/meta.json")
fi

step "build features as of $END"
journey features build --as-of "$END" --json
step "materialize the online store"
journey features materialize --json

step "train every task with its baselines, promote champions"
journey train --task all --json
journey models list
if [ "${DEMO_REAL:-0}" = "1" ]; then
  # Real data can fail the promotion gate (Online Retail's test cutoff falls in the Christmas
  # season, so calibration drifts). Serve those challengers anyway, recorded as a gate override.
  for task in $(journey models list --json | python -c "
import json, sys
for r in json.loads(sys.stdin.read().splitlines()[-1])['models']:
    c = r['challenger']
    if r['champion'] is None and c and ({'auc', 'spearman'} & set(c.get('metrics', {}))):
        print(r['task'])"); do
    step "the gate kept $task out; promoting its challenger for the demo (journey models promote)"
    journey models promote --task "$task" --reason "demo on real data: gate rejected, served to show the flow" --json
  done
  step "no next-best-action policy: Online Retail has no logged marketing contacts to learn uplift from"
else
  step "train the next-best-action policy"
  journey nba train --json
fi
step "batch-score everyone"
journey score --as-of "$END" --out "$JOURNEY_HOME/scores/scores.parquet" --json
step "journey report"
journey report --as-of "$END" --out "$JOURNEY_HOME/report.html" --json

cat >&2 <<TXT

Done. What to open:
  - the journey report:   $JOURNEY_HOME/report.html
  - the MLflow UI:        mlflow ui --backend-store-uri sqlite:///$JOURNEY_HOME/mlflow.db --port 5000
                          (compare LightGBM against the baselines per task; Models -> journeyml-* for aliases)
  - the API:              JOURNEY_HOME=$JOURNEY_HOME JOURNEY_API_KEYS=demo-key journey serve --port 8000
                          curl -s -H 'X-API-Key: demo-key' -H 'content-type: application/json' \\
                            -d '{"customer_ids": ["c000001"], "explain": true}' http://127.0.0.1:8000/v1/score
TXT
