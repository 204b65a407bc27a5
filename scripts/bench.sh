#!/usr/bin/env bash
# Builds every function and the hello-world baseline as deployed (release, stripped,
# `cargo lambda build --output-format zip`), starts moto and runs muchaw-bench, which writes
# docs/PERFORMANCE.md. `--quick` runs tiny counts (a smoke run); other arguments go to muchaw-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export VENV=${VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/muchaw-release}
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
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

source scripts/moto.sh
"$bin_dir/muchaw-bench" --bin-dir "$bin_dir" --lambda-dir "$zip_dir" --build-note "$note" \
  --reproduce "make bench   # or scripts/bench.sh; build $((built - started)) s here, warm cache" "$@"
echo "== bench.sh done in $(($(date +%s) - started)) s" >&2
