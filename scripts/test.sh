#!/usr/bin/env bash
# Every check the project has: formatting, lints, the SAM template (cfn-lint, sam validate,
# checkov), the OpenAPI document's lint, unit and integration tests (against moto and the fake
# Meta), the schema-driven API tests, and each events/ file through cargo lambda invoke.
#
# Nothing that could not run passes silently: a test that cannot run here (the browser tests
# without Chromium) appends "<test>: <why>" to $MUCHAW_NOT_RUN, and the last lines of the run,
# passed or failed, are "Did not run:" with those and every step an earlier failure kept from
# running, or "Everything ran.".
#
# Every function's AWS requests go through the local AWS gateway with only its own role's rights
# (tools/local/src/aws_proxy): the authorizer logs each grant used and each denial to
# $MUCHAW_IAM_LOG_DIR, and the last step writes docs/LEAST-PRIVILEGE.md from it, failing on any
# denied request and listing any grant no test used that template.yaml gives no reason for.
set -euo pipefail
cd "$(dirname "$0")/.."

not_run_dir=$(mktemp -d)
export MUCHAW_NOT_RUN="$not_run_dir/not-run"
: >"$MUCHAW_NOT_RUN"
steps=(
  "bootstrap"
  "cargo fmt"
  "cargo clippy"
  "template"
  "openapi lint"
  "cargo test"
  "cargo test: the heavy integration tests"
  "the small chaos run"
  "schema-driven API tests"
  "events/ through cargo lambda invoke"
  "least privilege"
)
started=0
# Starts the next of `steps`, in order; $1 is said after its name.
step() {
  echo "== ${steps[$started]}${1:-}" >&2
  started=$((started + 1))
}
on_exit() {
  local status=$?
  if declare -F stop_moto >/dev/null; then stop_moto; fi
  local failed=""
  if [ "$status" -ne 0 ] && [ "$started" -gt 0 ]; then failed=${steps[$((started - 1))]}; fi
  for ((i = started; i < ${#steps[@]}; i++)); do
    echo "${steps[$i]}: not reached${failed:+ ($failed failed)}" >>"$MUCHAW_NOT_RUN"
  done
  if [ -s "$MUCHAW_NOT_RUN" ]; then
    echo "Did not run:"
    awk '!seen[$0]++ { print "  " $0 }' "$MUCHAW_NOT_RUN"
  else
    echo "Everything ran."
  fi
  rm -rf "$not_run_dir"
  exit "$status"
}
trap on_exit EXIT

started=1
scripts/bootstrap.sh --browser
export VENV=${VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
export SAM_CLI_TELEMETRY=0

step
cargo fmt --all -- --check
step
cargo clippy --workspace --all-targets --quiet -- -D warnings
step
scripts/validate-template.sh
step
scripts/lint-openapi.sh

export MUCHAW_IAM_LOG_DIR="${CARGO_TARGET_DIR:-$PWD/target}/iam-log"
rm -rf "$MUCHAW_IAM_LOG_DIR"
mkdir -p "$MUCHAW_IAM_LOG_DIR"

source scripts/moto.sh
# moto.sh stops moto on exit with a trap of its own; on_exit calls it and ends the run's output.
trap on_exit EXIT
step " (the fuzz properties included)"
# The tests that load the shared moto server most (a burst of 200 signups, a 5,000-number
# account, the small chaos run with every function as its binary) run after the rest, one at a
# time: beside them, other tests wait on moto, not on code.
heavy=(burst:: large_account::)
chaos=a_small_run_under_every_kind_of_fault_keeps_every_invariant
skips=(--skip "$chaos")
for t in "${heavy[@]}"; do skips+=(--skip "$t"); done
cargo test --workspace --no-fail-fast -- "${skips[@]}"
step ", one at a time"
cargo test -p muchaw-tests --test suite -- "${heavy[@]}" --test-threads=1
step " (fixed seed; its invariants, the outbox relay's included)"
cargo test -p muchaw-chaos --test small_run -- "$chaos"
step " (schemathesis)"
scripts/schema-tests.sh
step
scripts/invoke-events.sh
step " (docs/LEAST-PRIVILEGE.md from the authorizer's log)"
cargo run --quiet -p muchaw-local -- iam-report --log-dir "$MUCHAW_IAM_LOG_DIR" --out docs/LEAST-PRIVILEGE.md
