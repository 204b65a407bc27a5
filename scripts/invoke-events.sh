#!/usr/bin/env bash
# Runs every events/<function>/*.json through `cargo lambda watch` + `cargo lambda invoke`,
# against moto (MOTO_ENDPOINT must be set), and checks each statusCode against events/expected.json.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MOTO_ENDPOINT:?start moto first (scripts/moto.sh)}"
VENV=${VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
# Each function's access key comes from `muchaw-local env`, which serves the AWS gateway that
# holds it to its role in template.yaml while its events run.
export AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1

# events/<crate>/ -> the function's logical id in template.yaml
declare -A FUNCTION_IDS=(
  [numbers-api]=NumbersApiFunction
  [signup-callback]=SignupCallbackFunction
  [exchange-token]=ExchangeTokenFunction
  [subscribe-waba]=SubscribeWabaFunction
  [register-number]=RegisterNumberFunction
  [configure-pin]=ConfigurePinFunction
  [fetch-profile]=FetchProfileFunction
  [activate-number]=ActivateNumberFunction
  [provisioning-failed]=ProvisioningFailedFunction
  [teardown-number]=TeardownNumberFunction
  [dispatch-events]=DispatchEventsFunction
  [deliver-webhooks]=DeliverWebhooksFunction
  [meta-webhook]=MetaWebhookFunction
  [health-sync]=HealthSyncFunction
  [relay-outbox]=OutboxRelayFunction
)
failures=0
workdir=$(mktemp -d)
cleanup() {
  [ -n "${WATCH_PID:-}" ] && kill -- -"$WATCH_PID" 2>/dev/null || true
  [ -n "${GATEWAY_PID:-}" ] && kill "$GATEWAY_PID" 2>/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT

cargo build --quiet -p muchaw-local --bin muchaw-local
for dir in events/*/; do
  fn=$(basename "$dir")
  logical=${FUNCTION_IDS[$fn]:-}
  if [ -z "$logical" ]; then echo "events/$fn: no function mapping in $0" >&2; exit 1; fi
  "${CARGO_TARGET_DIR:-target}/debug/muchaw-local" env --function "$logical" >"$workdir/$fn.env" &
  GATEWAY_PID=$!
  for _ in $(seq 1 300); do
    grep -q '^# ready' "$workdir/$fn.env" 2>/dev/null && break
    kill -0 "$GATEWAY_PID" 2>/dev/null || { echo "events/$fn: muchaw-local env failed" >&2; exit 1; }
    sleep 0.1
  done
  # Quick retries: an example's transient failure should show in seconds, not minutes.
  echo "RETRY_BASE_SECONDS=1" >> "$workdir/$fn.env"
  port=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  setsid cargo lambda watch --ignore-changes --quiet --invoke-address 127.0.0.1 --invoke-port "$port" \
    --env-file "$workdir/$fn.env" >"$workdir/$fn.watch.log" 2>&1 &
  WATCH_PID=$!
  for f in "$dir"*.json; do
    name=$(basename "$f")
    want=$("$VENV/bin/python" -c 'import json,sys; print(json.dumps(json.load(open("events/expected.json"))[sys.argv[1]][sys.argv[2]], sort_keys=True))' "$fn" "$name")
    out="$workdir/$fn-$name.out"
    ok=false
    for _ in $(seq 1 120); do
      if cargo lambda invoke "$fn" --data-file "$f" --invoke-address 127.0.0.1 --invoke-port "$port" >"$out" 2>"$out.err"; then ok=true; break; fi
      sleep 1
    done
    # What the expectation names: an HTTP function's statusCode, an SQS function's failure count,
    # the health sync's stoppedEarly, the outbox relay's failed count.
    got=$("$VENV/bin/python" - "$out" "$want" <<'PY' 2>/dev/null || echo none
import json, sys
out = json.load(open(sys.argv[1])); want = json.loads(sys.argv[2]); got = {}
if "statusCode" in want: got["statusCode"] = out.get("statusCode")
if "batchItemFailures" in want: got["batchItemFailures"] = len(out.get("batchItemFailures", []))
if "stoppedEarly" in want: got["stoppedEarly"] = out.get("stoppedEarly")
if "failed" in want: got["failed"] = out.get("failed")
print(json.dumps(got, sort_keys=True))
PY
)
    if $ok && [ "$got" = "$want" ]; then
      echo "ok   events/$fn/$name -> $got"
    else
      echo "FAIL events/$fn/$name: want $want, got $got" >&2
      cat "$out" "$out.err" >&2 || true
      tail -20 "$workdir/$fn.watch.log" >&2 || true
      failures=$((failures + 1))
    fi
  done
  kill -- -"$WATCH_PID" 2>/dev/null || true
  wait "$WATCH_PID" 2>/dev/null || true
  WATCH_PID=
  kill "$GATEWAY_PID" 2>/dev/null || true
  wait "$GATEWAY_PID" 2>/dev/null || true
  GATEWAY_PID=
done
[ "$failures" -eq 0 ]
