#!/usr/bin/env bash
# Schema-driven tests of docs/openapi.yaml: Schemathesis generates requests from the document
# (valid ones and mutated invalid ones, a fixed seed, tests/schemathesis/schemathesis.toml) and
# sends them to the real numbers API and signup callback routers (tests/integration's
# api-under-test, over a private stack on moto: needs MOTO_ENDPOINT, see scripts/moto.sh).
# Fails unless a valid request is only ever refused for the state it meets (404, 409), an
# invalid one is always 400 with the error envelope, nothing is a 5xx, and every response
# matches its schema. How long a response takes is not checked (moto's speed is not the API's);
# a request unanswered after 30 s fails as a hang. Meta's webhook (`/webhooks/meta`, signed by Meta) and the hosted signup
# page's routes (`/signup*`, authorised by a signed signup-link state no generator can forge) are
# not generated here; tests/integration/tests/suite/openapi_contract.rs and signup_page.rs cover
# them.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
: "${MOTO_ENDPOINT:?MOTO_ENDPOINT is not set: source scripts/moto.sh first}"

cargo build --quiet -p muchaw-tests --bin api-under-test
server="${CARGO_TARGET_DIR:-target}/debug/api-under-test"
work=$(mktemp -d)
"$server" >"$work/ready.json" 2>"$work/server.log" &
server_pid=$!
stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap stop_server EXIT

for _ in $(seq 1 300); do
  [ -s "$work/ready.json" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    cat "$work/server.log" >&2
    echo "schema-tests: api-under-test did not start" >&2
    exit 1
  fi
  sleep 0.1
done
read -r url key < <("$VENV/bin/python" -c \
  'import json, sys; r = json.load(open(sys.argv[1])); print(r["url"], r["key"])' "$work/ready.json")

# Every check runs ([checks] in the config) but the response-time one: no `--checks all` here,
# which would add `max_response_time` at 10 s and time moto instead of the API.
status=0
"$VENV/bin/st" --config-file tests/schemathesis/schemathesis.toml --no-color run docs/openapi.yaml \
  --url "$url" \
  --header "Authorization: Bearer $key" \
  --exclude-path-regex '^/(webhooks/meta|signup(/|$))' \
  "$@" || status=$?
if [ "$status" -ne 0 ]; then
  echo "schema-tests: failed; api-under-test's log:" >&2
  tail -n 50 "$work/server.log" >&2
fi
exit "$status"
