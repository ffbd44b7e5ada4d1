#!/usr/bin/env bash
# The bootstrapper: installs what a command needs (into .tools/ and .venv/), then runs it.
#
#   scripts/dev.sh install [--with G]     only install (G: optional groups and extras, e.g. examples,http;
#                                         later commands keep them; --with "" goes back to none;
#                                         --add G keeps the groups installed so far and adds G)
#   scripts/dev.sh test [PYTEST ARGS]     lock check, lint, format, types, shellcheck, every test (in parallel;
#                                         `-n 0`: in one process);
#                                         the integration test runs the image in a container
#                                         (INTEGRATION_MODE=local: a local process instead)
#   scripts/dev.sh bench [--duration S]   the benchmark (scripts/bench.py); writes docs/bench/
#   scripts/dev.sh bench --peers          against MLServer, LitServe, BentoML; writes docs/bench/peers/
#   scripts/dev.sh COMMAND [ARGS]         any `grpc-model` command, e.g. `serve` (port 45000)
#
# Needs bash and Python 3.11+ (`python3`, or set PYTHON). Poetry is installed, pinned,
# into .tools/; the project and its locked dependencies into .venv/.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

POETRY_VERSION=2.5.1
python=${PYTHON:-python3}
export POETRY_VIRTUALENVS_IN_PROJECT=true POETRY_NO_INTERACTION=1

install() {
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: Python 3.11 or newer is needed as '$python' (set PYTHON=/path/to/python3.11)" >&2
    exit 1
  fi
  if [ ! -x .tools/bin/poetry ] || ! .tools/bin/poetry --version 2>/dev/null | grep -q " $POETRY_VERSION)"; then
    echo "installing poetry $POETRY_VERSION into .tools/"
    "$python" -m venv .tools
    .tools/bin/python -m pip install --quiet "poetry==$POETRY_VERSION"
  fi
  # Beside it, the plugin that makes `poetry add <package>` choose a release the project's Python can install
  # (scripts/poetry_plugin/); built with the poetry-core poetry brought, so offline once poetry is there.
  local plugin=scripts/poetry_plugin/grpc_model_poetry_plugin.py
  if ! cmp -s "$plugin" .tools/lib/python3*/site-packages/grpc_model_poetry_plugin.py; then
    .tools/bin/python -m pip install --quiet --no-build-isolation --no-deps ./scripts/poetry_plugin
  fi
  .tools/bin/poetry check --lock --quiet || {
    echo "error: poetry.lock is out of date with pyproject.toml: run '.tools/bin/poetry lock'" >&2
    exit 1
  }
  .tools/bin/poetry env use --quiet "$(command -v "$python")"
  # Optional groups: those named with --with, else those the last --with chose (kept in .venv/), so that
  # `scripts/dev.sh serve` after `scripts/dev.sh test` does not uninstall what the tests need.
  local groups_file=.venv/.optional-groups groups=""
  if [ -f "$groups_file" ]; then groups=$(cat "$groups_file"); fi
  if [ "${1:-}" = --with ]; then
    groups=${2:-}
    shift 2
  elif [ "${1:-}" = --add ]; then # the kept groups and these: never uninstalls what another command installed
    groups=$(printf '%s,%s' "$groups" "${2:-}" | tr , '\n' | awk 'NF && !seen[$0]++' | paste -sd, -)
    shift 2
  fi
  # A name is a dependency group (examples, bench, ...) or one of the package's extras (http, sklearn, ...:
  # pyproject.toml's [project.optional-dependencies]): poetry installs the one with --with, the other with --extras.
  local name known with="" extras=""
  known=" $(package_extras) "
  for name in ${groups//,/ }; do
    if [[ $known == *" $name "* ]]; then extras+="${extras:+ }$name"; else with+="${with:+,}$name"; fi
  done
  .tools/bin/poetry sync --quiet ${with:+--with "$with"} ${extras:+--extras "$extras"} "$@"
  if [ -n "$groups" ]; then echo "$groups" >"$groups_file"; else rm -f "$groups_file"; fi
}

# The package's extras, space-separated, from pyproject.toml.
package_extras() {
  "$python" -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]))'
}

# The page test drives Debian's headless Chromium (grpc_model/tests/test_page.py); as root with apt, install it
# when missing, else the test is skipped and says why.
install_browser() {
  [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && return
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "warning: no /usr/bin/chromium and chromedriver (apt-get install chromium chromium-driver, as root);" \
      "the page test is skipped" >&2
    return
  fi
  echo "installing chromium and chromium-driver (apt) for the page test"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } ||
    echo "warning: apt could not install chromium; the page test is skipped" >&2
}

# Where a container engine answers or can be set up (scripts/container_engine.sh), the
# integration test must use it; elsewhere it runs the server as a local process. When that
# started podman's service, `engine_started` is set and the test command stops it at the end.
engine_started=""
use_container_engine() {
  [ "${INTEGRATION_MODE:-}" = local ] && return
  local status=0 engine_env
  engine_env=$(bash scripts/container_engine.sh) || status=$?
  case $status in
    0)
      eval "$engine_env"
      export INTEGRATION_MODE=docker
      ;;
    3)
      [ "${INTEGRATION_MODE:-}" != docker ] || exit 3
      echo "warning: no container engine; the integration test runs the server as a local process" >&2
      ;;
    *) exit "$status" ;;
  esac
}

command=${1:-}
[ $# -gt 0 ] && shift
case "$command" in
  install)
    install "$@"
    ;;
  test)
    install --add examples,examples-train,http,tracing,ray,sklearn,xgboost,lightgbm,onnx # the tests of the digits example, HTTP, tracing, Ray Serve and the runtimes
    install_browser
    use_container_engine
    # The suite starts hundreds of Python processes (servers, CLI commands, Ray's workers, the test projects'
    # environments). Where PYTHONDONTWRITEBYTECODE is set, each compiles every module it imports (Ray,
    # scikit-learn, grpc...) from source again; unset, the first writes the bytecode (into .venv/ and
    # __pycache__/, which git ignores) and the rest read it.
    unset PYTHONDONTWRITEBYTECODE
    # mypy's cache beside poetry's, outside the checkout: a fresh clone on this machine reuses what an earlier
    # run checked (mypy trusts a cached module only if its file's hash is unchanged, whatever its path).
    export MYPY_CACHE_DIR=${MYPY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/grpc-model/mypy}
    echo "== ruff check" && .venv/bin/ruff check .
    echo "== ruff format --check" && .venv/bin/ruff format --check .
    echo "== mypy" && .venv/bin/mypy
    echo "== shellcheck" && .venv/bin/shellcheck -x scripts/*.sh examples/*/run.sh .ci/run
    echo "== pytest"
    status=0
    # One worker process per CPU (pytest-xdist), a module's tests on one worker (docs/testing.md#in-parallel).
    # Arguments come last, so `scripts/dev.sh test -n 0` runs the suite in this one process.
    .venv/bin/pytest -n auto --dist loadfile --no-loadscope-reorder "$@" || status=$?
    if [ -n "$engine_started" ]; then bash scripts/container_engine.sh --stop; fi
    exit "$status"
    ;;
  bench)
    install --add bench,examples # the plot; the digits example's profile
    exec .venv/bin/python scripts/bench.py "$@"
    ;;
  "" | -h | --help)
    sed -n '2,14p' "$0" >&2
    exit 2
    ;;
  *)
    install
    exec .venv/bin/grpc-model "$command" "$@"
    ;;
esac
