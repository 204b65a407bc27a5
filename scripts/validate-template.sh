#!/usr/bin/env bash
# template.yaml must pass cfn-lint and sam validate --lint, with no warnings.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1} AWS_REGION=${AWS_REGION:-us-east-1}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}
export SAM_CLI_TELEMETRY=0
"$VENV/bin/cfn-lint" template.yaml
"$VENV/bin/sam" validate --lint --template template.yaml
