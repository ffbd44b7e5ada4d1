#!/usr/bin/env bash
# End-to-end test of the served model, runnable from any directory.
#
# Where a Docker engine answers (`docker info`), builds the image, runs the container
# with the port published on 127.0.0.1 and tests it; otherwise starts the server as a
# local process. Either way: waits for health SERVING (bounded), runs the reference
# client over every test case at batch sizes 1 and 8, sends Shutdown and checks the
# server exited 0. Exits non-zero on any failure and always removes what it started.
#
# Environment: PSC_MODEL_PORT (host port, default 45000), PYTHON (default .venv/bin/python),
# STARTUP_SECONDS (default 120), INTEGRATION_MODE=docker|local to force a path.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

port=${PSC_MODEL_PORT:-45000}
startup_seconds=${STARTUP_SECONDS:-120}
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
run_id="grpc-model-it-$$"
server_pid=""
container=""
image=""

client() { "$python" -m grpc_model.src.model_client --host 127.0.0.1 --port "$port" "$@"; }
log() { echo "[integration] $*"; }

cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ -n "$container" ]; then docker rm -f "$container" >/dev/null 2>&1 || true; fi
  if [ -n "$image" ]; then docker rmi -f "$image" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

if [ "$(client --health --timeout 2)" != "UNREACHABLE" ]; then
  log "error: something already answers on 127.0.0.1:$port; stop it or set PSC_MODEL_PORT" >&2
  exit 1
fi

mode=${INTEGRATION_MODE:-}
if [ -z "$mode" ]; then
  if command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; then mode=docker; else mode=local; fi
fi

if [ "$mode" = docker ]; then
  image="$run_id:test"
  container="$run_id"
  log "building image $image"
  docker build --quiet --tag "$image" . >/dev/null
  log "starting container $container on 127.0.0.1:$port"
  docker run --detach --name "$container" --publish "127.0.0.1:$port:45000" "$image" >/dev/null
else
  log "no Docker engine: starting the server as a local process on 127.0.0.1:$port"
  "$python" -m grpc_model.src.model_server --host 127.0.0.1 --port "$port" --load-model-at-startup &
  server_pid=$!
fi

log "waiting up to ${startup_seconds}s for health SERVING"
health=$(client --health --wait "$startup_seconds" --timeout 2) || {
  log "error: the server did not become SERVING (last answer: $health)" >&2
  [ -n "$container" ] && docker logs "$container" >&2
  exit 1
}

for batch_size in 1 8; do
  log "test cases at batch size $batch_size"
  client --batch-size "$batch_size"
done

log "sending Shutdown"
client --shutdown
if [ -n "$container" ]; then
  exit_code=$(timeout 60 docker wait "$container")
else
  exit_code=0
  wait "$server_pid" || exit_code=$?
  server_pid=""
fi
if [ "$exit_code" != 0 ]; then
  log "error: the server exited with $exit_code after Shutdown, expected 0" >&2
  exit 1
fi
log "passed ($mode)"
