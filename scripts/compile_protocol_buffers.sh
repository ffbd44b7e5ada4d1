#!/usr/bin/env bash
# Regenerates grpc_model/src/auto_generated/model2_template/ from protos/model2_template/model.proto
# (ModzyModel) and grpc_model/src/auto_generated/v2/ from protos/v2/grpc_predict_v2.proto (the Open
# Inference Protocol, vendored: see protos/v2/NOTICE.md).
#
# Usage: scripts/compile_protocol_buffers.sh [OUTPUT_ROOT]
#   OUTPUT_ROOT defaults to the repository root; the test suite passes a temporary
#   directory to check that the committed code still matches the proto.
#
# The proto is mapped onto its package path (-I<package path>=protos/...) so the
# generated imports are absolute (`from grpc_model.src.auto_generated...`) and work
# from the installed package without sys.path edits.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root}
bin=${VENV_BIN:-$root/.venv/bin}

generate() {  # generate PACKAGE_DIR PROTO_DIR PROTO_FILE
  local package_dir=$1 proto_dir=$2 proto=$3
  mkdir -p "$out/$package_dir"
  # Typed stubs (.pyi) for messages and for the service come from mypy-protobuf's plugins.
  "$bin/python" -m grpc_tools.protoc \
    -I"$package_dir=$proto_dir" \
    --plugin=protoc-gen-mypy="$bin/protoc-gen-mypy" --plugin=protoc-gen-mypy_grpc="$bin/protoc-gen-mypy_grpc" \
    --python_out="$out" --grpc_python_out="$out" --mypy_out="$out" --mypy_grpc_out="$out" \
    "$package_dir/$proto"
  touch "$out/$package_dir/__init__.py"
  echo "generated $package_dir/ under $out"
}

cd "$root"
generate grpc_model/src/auto_generated/model2_template protos/model2_template model.proto
generate grpc_model/src/auto_generated/v2 protos/v2 grpc_predict_v2.proto
