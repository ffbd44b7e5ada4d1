# shellcheck shell=bash
# Sourced by the scripts that call engines and networks: `bounded SECONDS COMMAND...` runs
# COMMAND under `timeout` where there is one (not on macOS); a command that ignores SIGTERM
# gets SIGKILL 10 s later.
bounded() {
  if command -v timeout >/dev/null 2>&1; then timeout -k 10 "$@"; else "${@:2}"; fi
}
