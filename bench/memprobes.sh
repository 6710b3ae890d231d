#!/usr/bin/env bash
# Client memory per idle connection for every library, N clients each, against a fresh
# bench/py_server.py per mode. Usage: bench/memprobes.sh [N] [MODES...]   (prints JSON lines)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
N=${1:-5000}; shift || true
MODES=${*:-"siokit websockets websockets-deflate aiohttp picows sio-async locust"}
PORT=${PORT:-18090}
for mode in $MODES; do
  out=$(mktemp)
  $PY bench/py_server.py --port "$PORT" --ping-interval 60 --ping-timeout 60 >"$out" 2>&1 &
  srv=$!
  for _ in $(seq 100); do grep -q READY "$out" && break; sleep 0.1; done
  timeout 300 $PY bench/memprobe.py --mode "$mode" -n "$N" --bind 127.0.0.2 --url "http://127.0.0.1:$PORT" \
    2>/dev/null | tail -1 || echo "{\"mode\": \"$mode\", \"error\": \"probe failed\"}"
  kill "$srv"; wait "$srv" 2>/dev/null || true
  rm -f "$out"
  sleep 2
done
