#!/usr/bin/env bash
# The chaos run: the local stack (every function as its binary, moto behind a fault proxy, the
# fake Meta) driven through SIGNUPS signups (default 300) and disconnects, bans, reinstatements,
# quality changes and failing webhook endpoints under faults; then its invariants. Writes
# docs/RELIABILITY.md. SEED=<n> replays a run (the seed is printed at its start and end).
set -euo pipefail
cd "$(dirname "$0")/.."
export VENV=${VENV:-.venv}
cargo build --quiet --workspace --bins
source scripts/moto.sh
args=(--report "${REPORT:-docs/RELIABILITY.md}" --signups "${SIGNUPS:-300}")
if [[ -n "${SEED:-}" ]]; then args+=(--seed "$SEED"); fi
if [[ -n "${NOTE:-}" ]]; then args+=(--note "$NOTE"); fi
cargo run --quiet -p muchaw-chaos -- "${args[@]}" "$@"
