#!/usr/bin/env bash
# template.yaml must pass cfn-lint and `sam validate --lint` with no errors and no warnings
# (cfn-lint exits non-zero on warnings too). Nothing is suppressed. Offline: the credentials
# are placeholders, never real ones, and neither check calls AWS.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x
unset AWS_SESSION_TOKEN AWS_PROFILE
export SAM_CLI_TELEMETRY=0

echo "== cfn-lint template.yaml" >&2
"$VENV/bin/cfn-lint" template.yaml
echo "== sam validate --lint" >&2
"$VENV/bin/sam" validate --lint --template template.yaml
