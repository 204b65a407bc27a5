#!/usr/bin/env bash
# Builds every function for Lambda (arm64, provided.al2023) with `sam build`, as deployed: the
# build flags of scripts/lambda-build-flags.sh. Arguments go to `sam build`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/${VENV:-.venv}/bin:$PATH"
source scripts/lambda-build-flags.sh
export SAM_CLI_TELEMETRY=0
exec sam build "$@"
