#!/usr/bin/env bash
# End-to-end test of the served model, runnable from any directory.
#
# Where a Docker engine answers (`docker info`, or else the podman service that
# scripts/container_engine.sh starts), tests the image users ship: builds the Dockerfile,
# checks the image (non-root user, only the served bundle version, no tests or build
# tools; reports its size), runs the container with the port published on 127.0.0.1 and
# tests it; a second container checks that `docker stop` (SIGTERM) drains and exits 0 quickly.
# Otherwise starts the server as a local process. Either way: waits for health SERVING
# (bounded), runs the reference client over every test case at batch sizes 1 and 8, sends
# Shutdown and checks the server exited 0. Exits non-zero on any failure and always removes
# what it started and the image it built (the build cache stays).
#
# Environment: PROJECT_DIR (the model project; default the repository of this scripts/ link),
# PSC_MODEL_PORT (host port, default 45000), PYTHON (default .venv/bin/python),
# STARTUP_SECONDS (default 120), INTEGRATION_MODE=docker|local to force a path,
# IMAGE_BUILD_ARGS ("NAME=value ...", each a docker build --build-arg; examples/digits/run.sh sets it).
# No engine here? `eval "$(scripts/container_engine.sh)"` provides one on Debian as root.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The model project: PROJECT_DIR (grpc-model test --image sets it, the script ships in the framework's package),
# else the template repository this script's scripts/ link sits in.
root=$(cd "${PROJECT_DIR:-$here/..}" && pwd)
cd "$root"
# shellcheck source=scripts/engine_helpers.sh
source "$here/engine_helpers.sh"

port=${PSC_MODEL_PORT:-45000}
startup_seconds=${STARTUP_SECONDS:-120}
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
run_id="grpc-model-it-$$"
server_pid=""
containers=()
image=""
build_log=""

now() { "$python" -c 'import time; print(time.time())'; }
client() { "$python" -m grpc_model.src.model_client --host 127.0.0.1 --port "$port" "$@"; }
log() { echo "[integration] $*"; }
fail() {
  if [ -n "${container:-}" ]; then docker logs --tail 30 "$container" >&2 2>&1 || true; fi
  echo "[integration] error: $*" >&2
  exit 1
}

cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  for name in ${containers[@]+"${containers[@]}"}; do docker rm -f "$name" >/dev/null 2>&1 || true; done
  if [ -n "$image" ]; then remove_image; fi
  if [ -n "$build_log" ]; then rm -f "$build_log"; fi
}
trap cleanup EXIT

# Removes the image but not the untagged layers under it: they are the build cache of its last stage, which makes the
# next build quick. Docker keeps them with --no-prune; podman's Docker API ignores that flag and removes them, so
# where the engine is a podman service, podman's own client removes the image.
remove_image() {
  if [[ ${DOCKER_HOST:-} == unix://* ]] && command -v podman >/dev/null 2>&1 &&
    podman --url "$DOCKER_HOST" rmi --force --no-prune "$image" >/dev/null 2>&1; then
    return
  fi
  docker rmi --force --no-prune "$image" >/dev/null 2>&1 || true
}

# Runs a container of the image; `docker rm -f` removes it on exit.
start_container() {
  local name=$1
  shift
  containers+=("$name")
  docker run --detach --name "$name" "$@" "$image" >/dev/null
}

# `docker stop` without -t makes some engines (podman's Docker API) kill at once.
stop_container() { bounded 60 docker stop -t 30 "$1" >/dev/null; }

container_exit_code() { bounded 60 docker wait "$1"; }

# In the container, as its user, in its working directory.
in_container() { docker exec "$container" sh -c "$1"; }

build_image() {
  image="$run_id:test"
  build_log=$(mktemp)
  log "building image $image"
  local started=$SECONDS build_args=() arg
  for arg in ${IMAGE_BUILD_ARGS:-}; do build_args+=(--build-arg "$arg"); done
  docker build --tag "$image" ${build_args[@]+"${build_args[@]}"} . >"$build_log" 2>&1 || {
    tail -n 40 "$build_log" >&2
    fail "docker build failed"
  }
  docker image inspect "$image" >/dev/null 2>&1 ||
    fail "the build left no image $image in the engine (a buildx builder without --load?)"
  log "built in $((SECONDS - started)) s; $(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}')"
  log "build cache: $(docker image inspect --format '{{.Parent}}' "$image")"
}

# What the shipped image must be, checked in its first container; every rule it breaks is named at once.
check_image() {
  local uid bundles version tests tools broken=()
  uid=$(in_container 'id -u')
  [ "$uid" != 0 ] || broken+=("the container runs as root; the Dockerfile needs a USER")
  version=$("$python" -m grpc_model version)
  bundles=$(in_container 'ls asset_bundle' | tr '\n' ' ')
  [ "$bundles" = "$version " ] || broken+=("the image holds asset bundles '$bundles', expected only $version")
  tests=$(in_container 'find . -type d -name tests')
  [ -z "$tests" ] || broken+=("the image holds tests: $tests")
  # shellcheck disable=SC2016  # $tool expands in the container's shell
  tools=$(in_container 'for tool in poetry gcc cc make; do command -v "$tool"; done; true')
  [ -z "$tools" ] || broken+=("the image holds build tools: $tools")
  [ ${#broken[@]} = 0 ] || fail "the image breaks ${#broken[@]} of its rules:$(printf '\n  - %s' "${broken[@]}")"
  log "image checks passed: user $uid, bundle $version only, no tests or build tools"
}

# The image's HEALTHCHECK command, run once in the container (engines without a scheduler
# for healthchecks, such as podman without systemd, never run it themselves).
check_healthcheck() {
  local healthcheck command
  healthcheck=$(docker inspect --format '{{json .Config.Healthcheck}}' "$container")
  command=$("$python" -c '
import json, shlex, sys
test = (json.loads(sys.argv[1]) or {}).get("Test") or []
if test[:1] == ["CMD-SHELL"]:
    print(test[1])
elif test[:1] == ["CMD"]:
    print(shlex.join(test[1:]))
' "$healthcheck")
  [ -n "$command" ] || fail "the image has no HEALTHCHECK"
  in_container "$command" >/dev/null || fail "the HEALTHCHECK command failed: $command"
  log "HEALTHCHECK command passed"
}

# `docker stop` sends SIGTERM; the server must drain and exit 0 well within the stop timeout.
check_sigterm() {
  local name="$run_id-sigterm" started exit_code elapsed
  start_container "$name"
  docker exec "$name" python -m grpc_model.src.model_client --health --wait "$startup_seconds" >/dev/null ||
    fail "the second container did not become SERVING"
  started=$(now)
  stop_container "$name"
  elapsed=$(awk -v start="$started" -v end="$(now)" 'BEGIN { printf "%.1f", end - start }')
  exit_code=$(container_exit_code "$name")
  [ "$exit_code" = 0 ] || fail "the container exited with $exit_code on docker stop (SIGTERM), expected 0;" \
    "the server must be PID 1 (exec-form CMD [\"python\", ...], not a shell-form CMD) to get the signal"
  awk -v elapsed="$elapsed" 'BEGIN { exit !(elapsed < 10) }' ||
    fail "docker stop took $elapsed s; the server should drain and exit in well under 10 s"
  log "docker stop (SIGTERM): exit 0 in $elapsed s"
}

if [ "$(client --health --timeout 2)" != "UNREACHABLE" ]; then
  fail "something already answers on 127.0.0.1:$port; stop it or set PSC_MODEL_PORT"
fi

# The podman service that scripts/container_engine.sh starts, when the caller's shell
# does not point at it.
if [ "${INTEGRATION_MODE:-}" != local ] && [ -z "${DOCKER_HOST:-}" ] && [ -S "$PODMAN_SOCKET" ] &&
  ! docker_answers &&
  DOCKER_HOST=unix://$PODMAN_SOCKET docker_answers; then
  export DOCKER_HOST=unix://$PODMAN_SOCKET DOCKER_BUILDKIT=0
fi

mode=${INTEGRATION_MODE:-}
if [ -z "$mode" ]; then
  if docker_answers; then mode=docker; else mode=local; fi
fi

container=""
if [ "$mode" = docker ]; then
  build_image
  container="$run_id"
  log "starting container $container on 127.0.0.1:$port"
  start_container "$container" --publish "127.0.0.1:$port:45000"
else
  log "no Docker engine answers: testing a local process, NOT the image" \
    "(scripts/container_engine.sh sets up podman on Debian/Ubuntu as root)"
  log "starting the server as a local process on 127.0.0.1:$port"
  "$python" -m grpc_model.src.model_server --host 127.0.0.1 --port "$port" --metrics-port 0 --load-model-at-startup &
  server_pid=$!
fi

server_is_running() {
  if [ -n "$container" ]; then
    [ "$(bounded 30 docker inspect --format '{{.State.Running}}' "$container")" = true ]
  else
    kill -0 "$server_pid" 2>/dev/null
  fi
}

log "waiting up to ${startup_seconds}s for health SERVING"
deadline=$((SECONDS + startup_seconds))
until health=$(client --health --wait 1 --timeout 2); do
  server_is_running || fail "the server exited before it served; its log is above"
  [ $SECONDS -lt $deadline ] || fail "the server did not become SERVING within ${startup_seconds}s (last answer: $health)"
done

if [ -n "$container" ]; then
  check_image
  check_healthcheck
fi

for batch_size in 1 8; do
  log "test cases at batch size $batch_size"
  client --batch-size "$batch_size"
done

log "sending Shutdown"
client --shutdown
if [ -n "$container" ]; then
  exit_code=$(container_exit_code "$container")
else
  exit_code=0
  wait "$server_pid" || exit_code=$?
  server_pid=""
fi
[ "$exit_code" = 0 ] || fail "the server exited with $exit_code after Shutdown, expected 0"

if [ -n "$container" ]; then check_sigterm; fi
log "passed ($mode)"
