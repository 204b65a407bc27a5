#!/usr/bin/env bash
# Sourced: starts moto server on a free loopback port, exports MOTO_ENDPOINT, stops it on exit.
VENV=${VENV:-.venv}
MOTO_PORT=${MOTO_PORT:-$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
"$VENV/bin/python" "$(dirname "${BASH_SOURCE[0]}")/moto_server.py" -H 127.0.0.1 -p "$MOTO_PORT" >"${MOTO_LOG:-/dev/null}" 2>&1 &
MOTO_PID=$!
export MOTO_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
stop_moto() { kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; }
trap stop_moto EXIT
for _ in $(seq 1 100); do
  if "$VENV/bin/python" - "$MOTO_PORT" <<'PY' 2>/dev/null; then break; fi
import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.2).close()
PY
  sleep 0.1
done
echo "moto server: $MOTO_ENDPOINT (pid $MOTO_PID)" >&2
