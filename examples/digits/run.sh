#!/usr/bin/env bash
# The digits example's `grpc-model`: any grpc-model command, for the example's package and bundle.
#
#   examples/digits/run.sh serve                          serve it on port 45000
#   examples/digits/run.sh test                           its 13 test cases through the wrapper, in-process
#   examples/digits/run.sh test --server localhost:45000  ...against a running server
#   examples/digits/run.sh test --image                   ...in its image (the Dockerfile with build arguments)
#
# Installs the project with the example's optional groups added to those installed (scripts/dev.sh install), then
# runs .venv/bin/grpc-model with the settings that name the example: nothing in grpc_model/
# knows about it. From any directory.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
bash scripts/dev.sh install --add examples,examples-train # keeps the groups other commands installed
export PYTHONPATH="$root/examples/digits${PYTHONPATH:+:$PYTHONPATH}"  # its package, digits_model, as a user's repo has it
export GRPC_MODEL_MODEL_CLASS=digits_model.model GRPC_MODEL_ASSET_BUNDLE_DIR="$root/examples/digits/asset_bundle"
# For `test --image`: scripts/integration_test.sh passes these to `docker build` as --build-arg.
export IMAGE_BUILD_ARGS="MODEL_DIR=examples/digits POETRY_GROUPS=examples MODEL_CLASS=digits_model.model"
exec .venv/bin/grpc-model "$@"
