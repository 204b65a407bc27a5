#!/usr/bin/env bash
# Runs the whole system locally: moto as AWS, the template's resources, the HTTP API on :3000.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/${VENV:-.venv}/bin:$PATH"
exec cargo run --quiet -p muchaw-local --bin muchaw-local -- "$@"
