#!/usr/bin/env bash
# The demo: declare a dataset and a project, see what blocks it, approve it, see the gate open,
# verify the audit log and export the transparency register. Uses a throwaway TRE_HOME.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/${VENV:-.venv}/bin:$PATH"
export TRE_HOME=${TRE_HOME:-$PWD/.tre/demo}
unset TRE_TOKEN TRE_DATABASE_URL
rm -rf "$TRE_HOME"
expires=$(date -d '+1 year' +%F)
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
step tre audit verify
step tre register export --format csv
printf '\nDemo state is in %s; continue with: export TRE_HOME=%s\n' "$TRE_HOME" "$TRE_HOME"
