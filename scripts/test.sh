#!/usr/bin/env bash
# Every check the project has: formatting, lints, the SAM template, the OpenAPI document's lint,
# unit and integration tests (against moto and the fake Meta), the schema-driven API tests, and
# each events/ file through cargo lambda invoke.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export VENV=${VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
export SAM_CLI_TELEMETRY=0

echo "== cargo fmt" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== template" >&2
scripts/validate-template.sh
echo "== openapi lint" >&2
scripts/lint-openapi.sh

source scripts/moto.sh
echo "== cargo test (the fuzz properties included)" >&2
# The tests that load the shared moto server most (a burst of 200 signups, a 5,000-number
# account, the small chaos run with every function as its binary) run after the rest, one at a
# time: beside them, other tests wait on moto, not on code.
heavy=(burst:: large_account::)
chaos=a_small_run_under_every_kind_of_fault_keeps_every_invariant
skips=(--skip "$chaos")
for t in "${heavy[@]}"; do skips+=(--skip "$t"); done
cargo test --workspace --no-fail-fast -- "${skips[@]}"
echo "== cargo test: the heavy integration tests, one at a time" >&2
cargo test -p muchaw-tests --test suite -- "${heavy[@]}" --test-threads=1
echo "== the small chaos run (fixed seed; its invariants, the outbox relay's included)" >&2
cargo test -p muchaw-chaos --test small_run -- "$chaos"
echo "== schema-driven API tests (schemathesis)" >&2
scripts/schema-tests.sh
echo "== events/ through cargo lambda invoke" >&2
scripts/invoke-events.sh
