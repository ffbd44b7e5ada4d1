# shellcheck shell=bash
# Sourced by scripts/container_engine.sh and scripts/integration_test.sh.

# Where scripts/container_engine.sh starts podman's Docker-compatible service.
# shellcheck disable=SC2034  # read by the scripts that source this file
PODMAN_SOCKET=/run/podman/podman.sock

# `bounded SECONDS COMMAND...` runs COMMAND under `timeout` where there is one (not on
# macOS); a command that ignores SIGTERM gets SIGKILL 10 s later.
bounded() {
  if command -v timeout >/dev/null 2>&1; then timeout -k 10 "$@"; else "${@:2}"; fi
}

# `docker_answers [SECONDS]`: a docker client is installed and its engine answers in time.
docker_answers() { command -v docker >/dev/null 2>&1 && bounded "${1:-20}" docker info >/dev/null 2>&1; }
