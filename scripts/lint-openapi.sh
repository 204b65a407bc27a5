#!/usr/bin/env bash
# Lints docs/openapi.yaml with Redocly CLI (installed by scripts/bootstrap.sh), every
# recommended rule an error (docs/redocly.yaml).
set -euo pipefail
cd "$(dirname "$0")/../docs"
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
../.local/redocly/node_modules/.bin/redocly lint openapi.yaml --config redocly.yaml --format stylish
