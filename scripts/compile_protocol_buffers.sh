#!/usr/bin/env bash
# Regenerates grpc_model/src/auto_generated/model2_template/ from protos/model2_template/model.proto.
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
package_dir=grpc_model/src/auto_generated/model2_template

mkdir -p "$out/$package_dir"
cd "$root"
# Typed stubs (.pyi) for messages and for the service come from mypy-protobuf's plugins.
"$bin/python" -m grpc_tools.protoc \
  -I"$package_dir=protos/model2_template" \
  --plugin=protoc-gen-mypy="$bin/protoc-gen-mypy" --plugin=protoc-gen-mypy_grpc="$bin/protoc-gen-mypy_grpc" \
  --python_out="$out" --grpc_python_out="$out" --mypy_out="$out" --mypy_grpc_out="$out" \
  "$package_dir/model.proto"
touch "$out/$package_dir/__init__.py"
echo "generated $package_dir/ under $out"
