#!/usr/bin/env bash
# The end-to-end story on synthetic data: an application submitted and decided, data extracted
# with the frozen scope, the permit activated, a workspace started and an analysis run in it, an output
# checked and released, and the audit chain verified.
set -euo pipefail
T=.venv/bin/toisio
PERSONS=${DEMO_PERSONS:-20000}
DEMO_DIR=${DEMO_DIR:-var/demo}
export TOISIO_HOME=${TOISIO_HOME:-$HOME/.local/share/toisio-demo}
rm -rf "$TOISIO_HOME" "$DEMO_DIR"     # the demo starts from nothing each time
CASE="TOISIO-$(date -u +%Y)-1"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "1. Controllers' registry extracts (synthetic, with injected defects)"
$T synth --persons "$PERSONS" --seed 7 --defect-rate 0.002 --out "$DEMO_DIR/extracts"

say "2. Users: a researcher, an analyst, a handler, a decider and two data controllers"
$T users add alice --name "Alice Researcher" --email alice@uni.example >/dev/null
$T users add hanna --name "Hanna Handler" --email hanna@toisio.example --role handler >/dev/null
$T users add dora --name "Dora Decider" --email dora@toisio.example --role decider >/dev/null
$T users add thl --name "THL extraction" --email thl@thl.example --role controller \
  --registry hilmo --registry population --registry causes_of_death >/dev/null
$T users add kela --name "Kela extraction" --email kela@kela.example --role controller \
  --registry kela_purchases >/dev/null
$T users add oscar --name "Oscar Checker" --email oscar@toisio.example --role output_checker >/dev/null
$T users add olga --name "Olga Checker" --email olga@toisio.example --role output_checker >/dev/null
echo "created alice, hanna (handler), dora (decider), thl and kela (controllers), oscar and olga (output checkers)"

say "3. Alice stores her research plan and submits a data permit application prepared offline"
$T permits attach examples/research-plan.md
$T permits submit examples/application-diabetes.yaml --as alice

say "4. The handler checks it and asks the controllers for estimates"
$T permits confirm-complete "$CASE" --as hanna
$T permits request-estimates "$CASE" --as hanna
for r in population hilmo causes_of_death; do
  $T permits record-estimate "$CASE" --as thl --set registry=$r --set cost_eur=400 --set working_days=20
done
$T permits record-estimate "$CASE" --as kela --set registry=kela_purchases --set cost_eur=600 --set working_days=25
$T permits send-estimate "$CASE" --as hanna

say "5. Alice accepts: the extraction description is frozen; the handler presents, the decider decides"
$T permits accept "$CASE" --as alice
$T permits present "$CASE" --as hanna
$T permits approve "$CASE" --as dora --set valid_until=2029-12-31

say "6. Extraction with the frozen scope, as a Prefect flow"
$T extract --flow --permit "$CASE" --as hanna --in "$DEMO_DIR/extracts" --out "$DEMO_DIR/delivery/$CASE"
$T permits activate "$CASE" --as hanna

say "7. The permit's workspace: its own JupyterLab on 127.0.0.1, one token per named analyst"
$T workspace create --permit "$CASE" --as hanna --tokens-out "$DEMO_DIR/tokens.json"
$T workspace start --permit "$CASE" --as hanna
trap '$T workspace stop --permit "$CASE" --as hanna --reason "demo finished" >/dev/null 2>&1 || true' EXIT
URL=$($T workspace status --permit "$CASE" --as hanna --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["url"])')
echo "bob would now open ${URL}lab in his browser and log in with his token"

say "8. Bob runs the cohort notebook in the workspace (no network, read-only data); every cell is audited"
.venv/bin/python scripts/demo_workspace.py "$URL" "$DEMO_DIR/tokens.json" bob examples/01_cohort_description.ipynb
.venv/bin/python scripts/demo_workspace.py "$URL" "$DEMO_DIR/tokens.json" bob examples/02_survival_after_diagnosis.ipynb
$T workspace audit --permit "$CASE" --as hanna

say "9. The output airlock: Bob asks for the table; two independent checkers approve, then it is released"
SCRATCH="$TOISIO_HOME/workspaces/$CASE/root/scratch"
REQ=$($T outputs create --permit "$CASE" --as bob)
$T outputs add "$REQ" "$SCRATCH/cohort_by_age_band.csv" --index age_band --as bob \
  --description "cohort members by age band and role" --method "distinct pseudonyms, safe_crosstab"
$T outputs submit "$REQ" --as bob
for checker in oscar olga; do
  $T outputs vote "$REQ" cohort_by_age_band.csv approve --as $checker
  $T outputs submit-review "$REQ" --as $checker
done
$T outputs decide "$REQ" approve --as oscar
$T outputs show "$REQ" --as olga
$T outputs release "$REQ" --as olga
echo "released to $TOISIO_HOME/releases/$CASE/$REQ/"

say "10. The workspace stops; the case, its history and the audit chain"
$T workspace stop --permit "$CASE" --as hanna --reason "analysis done"
$T permits show "$CASE" --as hanna
$T audit verify
