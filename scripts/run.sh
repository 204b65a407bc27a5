#!/usr/bin/env bash
# Runs the whole system locally: moto as AWS, the fake Meta, the template's resources, every
# function as its binary, the HTTP API on :3000.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/${VENV:-.venv}/bin:$PATH"
# Every function's binary: the local stack runs each under a local Lambda Runtime API.
cargo build --quiet --workspace --bins
exec cargo run --quiet -p muchaw-local --bin muchaw-local -- "$@"
