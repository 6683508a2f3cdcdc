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
mkdir -p "$DEMO_DIR" && chmod 700 "$DEMO_DIR"
CASE="TOISIO-$(date -u +%Y)-1"
export TOISIO_EXTRACTS_DIR="$PWD/$DEMO_DIR/extracts"   # where the worker finds the controllers' extracts
PREFECT_PORT=${DEMO_PREFECT_PORT:-4200}
PREFECT_URL="http://127.0.0.1:$PREFECT_PORT"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
DEMO_PASSWORD=${DEMO_PASSWORD:-toisio-demo-password}
USERS_FILE="$DEMO_DIR/demo-users.txt"
# adduser NAME ARGS...: an operator command; keeps the user's TOTP secret so the demo can make codes
adduser() {
  local name=$1 out secret
  shift
  out=$(printf '%s\n' "$DEMO_PASSWORD" | $T users add "$name" --password-stdin "$@")
  secret=$(printf '%s\n' "$out" | sed -n 's/^TOTP secret (shown once[^)]*): //p')
  printf '%s %s\n' "$name" "$secret" >> "$USERS_FILE"
}
totp() { .venv/bin/python -c 'import pyotp, sys; print(pyotp.TOTP(sys.argv[1]).now())' "$1"; }
# signin NAME: `toisio login` with the password and a one-time code, into the user's own config directory
signin() {
  local secret
  secret=$(awk -v n="$1" '$1 == n {print $2}' "$USERS_FILE")
  printf '%s\n' "$DEMO_PASSWORD" | XDG_CONFIG_HOME="$DEMO_DIR/config/$1" \
    $T login --user "$1" --password-stdin --code "$(totp "$secret")" >/dev/null
}
# run_as NAME ARGS...: a toisio command as the signed-in NAME
run_as() { local name=$1; shift; XDG_CONFIG_HOME="$DEMO_DIR/config/$name" $T "$@"; }

say "1. Controllers' registry extracts and Kanta's FHIR export of the same persons (synthetic, with injected defects)"
$T synth --persons "$PERSONS" --seed 7 --defect-rate 0.002 --fhir --out "$DEMO_DIR/extracts"

say "2. Users: a researcher, an analyst, a handler, a decider, two data controllers and two output checkers"
# An operator on the service host creates the accounts (recorded as operator:<OS user>); each person gets a
# password and a TOTP secret for their authenticator app, and signs in with both.
adduser alice --name "Alice Researcher" --email alice@uni.example
adduser bob --name "Bob Analyst" --email bob@uni.example
adduser hanna --name "Hanna Handler" --email hanna@toisio.example --role handler
adduser dora --name "Dora Decider" --email dora@toisio.example --role decider
adduser thl --name "THL extraction" --email thl@thl.example --role controller \
  --registry hilmo --registry population --registry causes_of_death
adduser kela --name "Kela extraction" --email kela@kela.example --role controller --registry kela_purchases \
  --registry kanta_dispense
adduser oscar --name "Oscar Checker" --email oscar@toisio.example --role output_checker
adduser olga --name "Olga Checker" --email olga@toisio.example --role output_checker
for u in alice bob hanna dora thl kela oscar olga; do signin "$u"; done
run_as hanna whoami
PORT=${DEMO_PORT:-8700}
PORTAL="http://127.0.0.1:$PORT"
# the web process hands every recorded step to the flow run that follows its case (flows/follow.py)
PREFECT_API_URL="$PREFECT_URL/api" $T serve --port "$PORT" 2> "$DEMO_DIR/serve.log" &
SERVE_PID=$!
.venv/bin/python - "$PORTAL" <<'PY' || { echo "the portal did not start; see $DEMO_DIR/serve.log"; exit 1; }
import sys, time, httpx
for _ in range(150):
    try:
        if httpx.get(sys.argv[1] + "/api/v1/health", timeout=2).status_code == 200:
            sys.exit(0)
    except httpx.HTTPError:
        pass
    time.sleep(0.3)
sys.exit(1)
PY
echo "the web portal and the REST API run at $PORTAL (log: $DEMO_DIR/serve.log)"
$T worker --port "$PREFECT_PORT" > "$DEMO_DIR/worker.log" 2>&1 &
WORKER_PID=$!
trap 'kill $WORKER_PID $SERVE_PID 2>/dev/null || true' EXIT
echo "the worker serves the recurring jobs and the flows that follow each application and output request, from an"
echo "embedded Prefect server: its UI is at $PREFECT_URL/ (log: $DEMO_DIR/worker.log)"
echo "each signed in with password + one-time code; their tokens are in $DEMO_DIR/config/<user>/toisio/token (mode 600)"
.venv/bin/python - "$PREFECT_URL" <<'PY' || { echo "the worker did not start; see $DEMO_DIR/worker.log"; exit 1; }
import sys, time, httpx
for _ in range(480):  # the worker's Prefect server starts, then its deployments are served
    try:
        if any(d["name"] == "application" for d in httpx.post(sys.argv[1] + "/api/deployments/filter", json={},
                                                              timeout=5).json()):
            sys.exit(0)
    except (httpx.HTTPError, ValueError):
        pass
    time.sleep(0.5)
sys.exit(1)
PY

say "3. Alice stores her research plan and submits a data permit application prepared offline"
run_as alice permits attach examples/research-plan.md
run_as alice permits submit examples/application-diabetes.yaml
echo "the submission started the flow run 'case $CASE', which follows the case to its decision: each step below"
echo "resumes it, and it waits again (suspended, holding no process) for the next person"

say "4. The handler checks it and asks the controllers for estimates"
run_as hanna permits confirm-complete "$CASE"
run_as hanna permits request-estimates "$CASE"
for r in population hilmo causes_of_death; do
  run_as thl permits record-estimate "$CASE" --set registry=$r --set cost_eur=400 --set working_days=20
done
run_as kela permits record-estimate "$CASE" --set registry=kela_purchases --set cost_eur=600 --set working_days=25
run_as kela permits record-estimate "$CASE" --set registry=kanta_dispense --set cost_eur=300 --set working_days=25
run_as hanna permits send-estimate "$CASE"

say "5. Alice accepts: the extraction description is frozen; the handler presents, the decider decides"
run_as alice permits accept "$CASE"
run_as hanna permits present "$CASE"
run_as dora permits approve "$CASE" --set valid_until=2029-12-31

say "6. The service takes it from here: the worker extracts the frozen scope, makes the workspace and opens it"
.venv/bin/python - "$PREFECT_URL" "$CASE" <<'PY' || { echo "the worker did not deliver; see $DEMO_DIR/worker.log"; exit 1; }
import os, subprocess, sys, time
import httpx
url, case = sys.argv[1], sys.argv[2]
env = {**os.environ, "PREFECT_API_URL": url + "/api"}
# the approval resumed the case's flow run, which starts the service's delivery (the advance job); were the
# flows not reachable, the advance job runs every minute anyway: start it if no run for the case appears soon
tag = {"flow_runs": {"tags": {"all_": [f"case:{case}"]}}}
for _ in range(120):
    runs = httpx.post(url + "/api/flow_runs/filter", json=tag, timeout=5).json()
    if any(r["name"] == "advance" or r["name"].startswith("deliver") for r in runs):
        print(f"the decision resumed the flow run of {case}, which started the delivery")
        break
    time.sleep(0.5)
else:
    subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "toisio-advance/advance"], env=env,
                   check=True, capture_output=True)
from toisio.service import service
from permits.service import permit_access
start = time.monotonic()
while time.monotonic() - start < 600:
    state = permit_access(service(), case).state.value
    if state == "active":
        print(f"{case} is active {time.monotonic() - start:.0f} s after the run started: extracted, delivered, "
              f"its workspace made, opened")
        sys.exit(0)
    time.sleep(2)
sys.exit(1)
PY
echo "see the runs 'case $CASE' (submission to decision), 'advance' and 'deliver $CASE', tagged case:$CASE, in"
echo "Prefect's UI: $PREFECT_URL/runs"

say "7. The permit's workspace: its own JupyterLab on 127.0.0.1; bob gets his own login token"
BOB_TOKEN=$(run_as bob workspace token --permit "$CASE" --analyst bob | sed -n 's/^bob: //p')
printf '{"bob": "%s"}\n' "$BOB_TOKEN" > "$DEMO_DIR/tokens.json" && chmod 600 "$DEMO_DIR/tokens.json"
run_as hanna workspace start --permit "$CASE"
trap 'run_as hanna workspace stop --permit "$CASE" --reason "demo finished" >/dev/null 2>&1 || true; kill $WORKER_PID $SERVE_PID 2>/dev/null || true' EXIT
URL=$(run_as hanna workspace status --permit "$CASE" --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["url"])')
echo "bob would now open ${URL}lab in his browser and log in with his token"

say "8. Bob runs the cohort notebook in the workspace (no network, read-only data); every cell is audited"
.venv/bin/python scripts/demo_workspace.py "$URL" "$DEMO_DIR/tokens.json" bob examples/01_cohort_description.ipynb
.venv/bin/python scripts/demo_workspace.py "$URL" "$DEMO_DIR/tokens.json" bob examples/02_survival_after_diagnosis.ipynb
run_as hanna workspace audit --permit "$CASE"

say "9. The output airlock: Bob asks for the table; two independent checkers approve, then it is released"
SCRATCH="$TOISIO_HOME/workspaces/$CASE/root/scratch"
REQ=$(run_as bob outputs create --permit "$CASE")
run_as bob outputs add "$REQ" "$SCRATCH/cohort_by_age_band.csv" --index age_band \
  --description "cohort members by age band and role" --method "distinct pseudonyms, safe_crosstab"
run_as bob outputs submit "$REQ"
for checker in oscar olga; do
  run_as $checker outputs vote "$REQ" cohort_by_age_band.csv approve
  run_as $checker outputs submit-review "$REQ"
done
run_as oscar outputs decide "$REQ" approve
run_as olga outputs show "$REQ"
run_as olga outputs release "$REQ"
echo "released to $TOISIO_HOME/releases/$CASE/$REQ/"

say "10. The same service through the web portal's own routes (what a browser does)"
.venv/bin/python scripts/demo_portal.py "$PORTAL" "$USERS_FILE" "$DEMO_PASSWORD" "$CASE"

say "11. Everyone whose turn it was is told: the notifier reads the audit chain and queues each message once"
$T notify
echo "no SMTP server is configured for the demo (TOISIO_SMTP_HOST), so the messages wait in each user's inbox"
echo "in the portal (Notifications), in their language; the worker below runs this job every minute"

say "12. The workspace stops; the case, its history and the audit chain"
run_as hanna workspace stop --permit "$CASE" --reason "analysis done"
run_as hanna permits show "$CASE"
$T audit verify

kill $SERVE_PID $WORKER_PID 2>/dev/null || true
wait $SERVE_PID $WORKER_PID 2>/dev/null || true

say "Now click through it yourself"
echo "Start the portal (it stopped with the demo):"
echo "  TOISIO_HOME=$TOISIO_HOME PREFECT_API_URL=$PREFECT_URL/api .venv/bin/toisio serve --port $PORT"
echo "then open $PORTAL/ and sign in as any demo user: alice (researcher), bob (analyst), hanna (handler),"
echo "dora (decider), thl and kela (data controllers), oscar and olga (output checkers)."
echo "  password:        $DEMO_PASSWORD"
echo "  one-time code:   .venv/bin/python scripts/demo_code.py USER   (or add the TOTP secret in $USERS_FILE"
echo "                   to an authenticator app)"
echo "The language menu switches between suomi, svenska and English; the API's documentation is $PORTAL/docs."
echo "JupyterLab: start the permit's workspace from bob's Workspaces page and open his login link there."
echo "Command line as a user: TOISIO_HOME=$TOISIO_HOME .venv/bin/toisio login --user hanna; then e.g. toisio permits queue"
echo "The worker (it stopped with the demo): approved permits taken to in force, notifications every minute,"
echo "permit expiry, the handlers' deadline digest, estimate reminders, draft tidying and data deletion on their"
echo "schedules; Prefect's UI, with the demo's runs, at $PREFECT_URL/ :"
echo "  TOISIO_HOME=$TOISIO_HOME TOISIO_EXTRACTS_DIR=$TOISIO_EXTRACTS_DIR .venv/bin/toisio worker --port $PREFECT_PORT"
