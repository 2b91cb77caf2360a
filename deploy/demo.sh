#!/usr/bin/env bash
# The demo: declare a dataset and a project, see what blocks it, approve it, see the gate open, provision its
# extract (opt-outs removed, identifiers pseudonymised with a key kept in OpenBao), verify the audit log and
# export the transparency register. Uses a throwaway TRE_HOME and a throwaway OpenBao.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/${VENV:-.venv}/bin:$PATH"
export TRE_HOME=${TRE_HOME:-$PWD/.tre/demo}
unset TRE_TOKEN TRE_DATABASE_URL
rm -rf "$TRE_HOME"
mkdir -p "$TRE_HOME"
expires=$(date -d '+1 year' +%F)

# A throwaway OpenBao (Vault API) for the project's pseudonymisation key; stopped when the demo ends.
bao_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
bao_token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
(umask 077 && printf '%s' "$bao_token" > "$TRE_HOME/vault-token")
bao server -dev -dev-no-store-token -dev-listen-address="127.0.0.1:$bao_port" -dev-root-token-id="$bao_token" \
  > "$TRE_HOME/openbao.log" 2>&1 &
bao_pid=$!
trap 'kill "$bao_pid" 2>/dev/null; wait "$bao_pid" 2>/dev/null' EXIT
export TRE_VAULT_ADDR="http://127.0.0.1:$bao_port" TRE_VAULT_TOKEN_FILE="$TRE_HOME/vault-token"
python3 - <<'PY'
import os, time, urllib.request
for _ in range(100):
    try:
        urllib.request.urlopen(os.environ["TRE_VAULT_ADDR"] + "/v1/sys/health", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
PY
accredited=$(date -d '+2 years' +%F)

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step tre user add alice --role researcher --accreditation "safe-researcher:$accredited"
step tre user add bob --role researcher --accreditation "safe-researcher:$accredited"
step tre user add carol --role approver
step tre user add olive --role output-checker
step tre dataset register -f examples/hospital-episodes.dataset.yaml
step tre project apply -f examples/diabetes-outcomes.project.yaml
step tre project show diabetes-outcomes
step tre project approve diabetes-outcomes --by carol --reference 25/NE/0001 --expires "$expires" \
  --agreement DSA-2026-014 --condition "No linkage to other datasets"
step tre project show diabetes-outcomes
step tre project list
step tre demo-data --out examples/data --rows 20000
step tre optout import examples/data/optouts.txt
step tre provision diabetes-outcomes
step tre data manifest diabetes-outcomes
step tre audit verify
step tre register export --format csv
printf '\nDemo state is in %s; continue with: export TRE_HOME=%s (its OpenBao has stopped)\n' "$TRE_HOME" "$TRE_HOME"
