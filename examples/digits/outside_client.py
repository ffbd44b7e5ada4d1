"""A client of the digits server that shares no code with the framework, as another team would write it.

    .venv/bin/python examples/digits/outside_client.py HOST:PORT IMAGE... [--explain] [--detect-drift]

Compiles protos/model2_template/model.proto with grpcio-tools into a temporary directory,
sends each image as one item of one Run call, and prints one JSON line per image:
`{"image": PATH, "success": true, "results.json": {...}}` (or `"error"`). Needs grpcio and
grpcio-tools only.
"""

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc

PROTO = Path(__file__).resolve().parents[2] / "protos" / "model2_template" / "model.proto"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="the server, HOST:PORT")
    parser.add_argument("images", nargs="+", type=Path, help="PNG or JPEG files")
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--detect-drift", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO.parent}", f"--python_out={out}",
                        f"--grpc_python_out={out}", PROTO.name], check=True)  # fmt: skip
        sys.path.insert(0, out)
        pb = importlib.import_module("model_pb2")
        pb_grpc = importlib.import_module("model_pb2_grpc")
    failed = 0
    with grpc.insecure_channel(args.target) as channel:
        stub = pb_grpc.ModzyModelStub(channel)
        for image in args.images:
            request = pb.RunRequest(
                inputs=[pb.InputItem(input={"image.png": image.read_bytes()})],
                explain=args.explain,
                detect_drift=args.detect_drift,
            )
            (item,) = stub.Run(request, timeout=30).outputs
            line = {"image": str(image), "success": item.success}
            line.update(
                {
                    name: json.loads(content) if item.success else content.decode()
                    for name, content in item.output.items()
                }
            )
            print(json.dumps(line))
            failed += not item.success
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
