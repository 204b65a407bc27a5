#!/usr/bin/env bash
# The chaos run: the local stack (every function as its binary, the AWS emulators behind a fault
# proxy, the fake Meta) driven through SIGNUPS signups (default 300) and disconnects, bans,
# reinstatements, quality changes and failing webhook endpoints under faults; then its
# invariants. Writes docs/RELIABILITY.md. SEED=<n> replays a run (the seed is printed at its start
# and end).
#
# DynamoDB is DynamoDB Local (AWS's own emulator, scripts/dynamodb-local.sh) when java and npm are
# there, moto the rest of AWS: moto's DynamoDB reads every item of a table per index query, so a
# 300-signup run slows as the tables grow (23 min on moto alone, 8 with DynamoDB Local, on 2
# cores). NO_DYNAMODB_LOCAL=1 runs moto alone.
# DynamoDB Local binds every interface, so the run re-executes this script in a private network
# namespace (`unshare --net`, loopback only).
set -euo pipefail
cd "$(dirname "$0")/.."
export VENV=${VENV:-.venv}
source scripts/dynamodb-local.sh

args=(--report "${REPORT:-docs/RELIABILITY.md}" --signups "${SIGNUPS:-300}")
if [[ -n "${SEED:-}" ]]; then args+=(--seed "$SEED"); fi
if [[ -n "${NOTE:-}" ]]; then args+=(--note "$NOTE"); fi

if [[ -n "${CHAOS_STAGE_RUN:-}" ]]; then
  if [[ -n "${DYNAMODB_LOCAL_JAR:-}" ]]; then
    dynamodb_local_start
    trap stop_dynamodb_local EXIT
    # Not started: moto alone (the report says which ran).
    if [[ -z "$DYNAMODB_LOCAL_ENDPOINT" ]]; then unset DYNAMODB_LOCAL_ENDPOINT; fi
  fi
  source scripts/moto.sh
  trap 'stop_moto; stop_dynamodb_local' EXIT
  # Built before the namespace; nothing here needs the network.
  cargo run --offline --quiet -p muchaw-chaos -- "${args[@]}" "$@"
  exit 0
fi

cargo build --quiet --workspace --bins
if [[ -n "${NO_DYNAMODB_LOCAL:-}" ]]; then
  export DYNAMODB_LOCAL_JAR="" DYNAMODB_LOCAL_SKIPPED="skipped (NO_DYNAMODB_LOCAL)"
else
  dynamodb_local_install
fi
export CHAOS_STAGE_RUN=1
if [[ -n "$DYNAMODB_LOCAL_JAR" ]]; then
  unshare --net -- "$0" "$@"
else
  "$0" "$@"
fi
