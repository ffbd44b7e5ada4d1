"""Rows/s of the sklearn runtime against MLServer's (mlserver-sklearn) serving the same joblib file.

`.venv/bin/python -m benchmarks.runtime_sklearn [--duration S] [--concurrency 32] [--venv DIR]`

Each caller sends one-row V2 calls (`input`, FP32 [1, 4], raw contents, asking for `predict` and
`predict_proba`) over gRPC, back to back; both servers run on this machine with the client, and
MLServer runs from a virtual environment of its own that this script makes (it pins protobuf below
7, so it cannot share the project's). MLServer is measured as it ships (no batching) and with its
adaptive batching (`max_batch_size` 32, `max_batch_time` 5 ms), grpc-model with its defaults.
"""

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import yaml

from benchmarks.load import drive
from benchmarks.processes import LOGS, Server, cpu_seconds, free_port, process_tree
from grpc_model.src.auto_generated.v2 import grpc_predict_v2_pb2 as v2
from grpc_model.src.auto_generated.v2.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from grpc_model.src.settings import PROJECT_ROOT

MLSERVER = ("mlserver==1.7.1", "mlserver-sklearn==1.7.1")
ROW = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)


def train(directory: Path) -> Path:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = load_iris(return_X_y=True)
    path = directory / "model.joblib"
    joblib.dump(make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(features, labels), path)
    return path


def mlserver_venv(directory: Path) -> Path:
    """MLServer's own environment, with this environment's scikit-learn (the joblib file needs the same)."""
    import sklearn

    command = directory / "bin" / "mlserver"
    if not command.exists():
        subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True)
        packages = [*MLSERVER, f"scikit-learn=={sklearn.__version__}"]
        subprocess.run([str(directory / "bin" / "pip"), "install", "-q", *packages], check=True)
    return command


def grpc_model_server(model: Path, scratch: Path) -> Server:
    spec = yaml.safe_load((PROJECT_ROOT / "grpc_model/tests/greeter/model.yaml").read_text())
    spec["inputs"] = {"input.csv": {"acceptedMediaTypes": ["text/csv"], "maxSize": "1M"}}
    spec["outputs"] = {"results.json": {"mediaType": "application/json", "maxSize": "1M"}}
    spec["runtime"] = {"kind": "sklearn", "file": model.name, "trusted": True}
    spec["features"]["maxBatchSize"] = 64
    bundle = scratch / "bundle" / spec["version"]
    bundle.mkdir(parents=True)
    (bundle / "model.yaml").write_text(yaml.safe_dump(spec))
    (bundle / model.name).write_bytes(model.read_bytes())
    env = {"GRPC_MODEL_ASSET_BUNDLE_DIR": str(bundle.parent), "GRPC_MODEL_LOAD_MODEL_AT_STARTUP": "true"}
    return Server([sys.executable, "-m", "grpc_model.src.model_server"], env, "runtime-sklearn")


class MLServer:
    """`mlserver start` serving the joblib file with mlserver_sklearn.SKLearnModel."""

    def __init__(self, command: Path, model: Path, scratch: Path, batching: bool) -> None:
        folder = scratch / ("mlserver-batching" if batching else "mlserver") / "iris"
        folder.mkdir(parents=True)
        (folder / model.name).write_bytes(model.read_bytes())
        settings: dict[str, object] = {
            "name": "iris",
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": f"./{model.name}"},
        }
        if batching:
            settings |= {"max_batch_size": 32, "max_batch_time": 0.005}
        (folder / "model-settings.json").write_text(json.dumps(settings))
        self.port = free_port()
        server = {"host": "127.0.0.1", "grpc_port": self.port, "http_port": free_port(), "metrics_port": free_port()}
        (folder.parent / "settings.json").write_text(json.dumps({**server, "parallel_workers": 0}))
        LOGS.mkdir(parents=True, exist_ok=True)
        with open(LOGS / f"{folder.parent.name}.log", "wb") as log:
            self.process = subprocess.Popen(
                [str(command), "start", str(folder.parent)], stdout=log, stderr=subprocess.STDOUT
            )
        self.target = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def request(model: str) -> v2.ModelInferRequest:
    message = v2.ModelInferRequest(model_name=model)
    message.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    message.raw_input_contents.append(ROW.tobytes())
    message.outputs.add(name="predict")
    message.outputs.add(name="predict_proba")
    return message


async def measure(target: str, model: str, pid: int, concurrency: int, seconds: float) -> dict[str, float]:
    """Rows/s, latency and the server's CPU per row (its process tree's, in the measured window: a figure
    that the other jobs on a shared machine disturb less than rows/s)."""
    used: list[float] = []

    @contextlib.asynccontextmanager
    async def window() -> AsyncIterator[None]:
        before = cpu_seconds(process_tree(pid))
        yield
        used.append(cpu_seconds(process_tree(pid)) - before)

    async with grpc.aio.insecure_channel(target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        message = request(model)
        deadline = time.monotonic() + 120
        while True:  # ready: the first answer (MLServer loads in the background)
            try:
                await stub.ModelInfer(message, timeout=5)
                break
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

        async def call() -> bool:
            answer = await stub.ModelInfer(message, timeout=30)
            return len(answer.raw_output_contents) == 2

        load = await drive(call, concurrency, seconds, warmup_seconds=2.0, window=window)
    return {
        "rows/s": round(load.calls / load.seconds),
        "p50 ms": load.quantile_ms(0.5),
        "p99 ms": load.quantile_ms(0.99),
        "CPU us/row": round(used[0] / load.calls * 1e6),
        "errors": load.errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "grpc-model-mlserver-sklearn")
    arguments = parser.parse_args()
    command = mlserver_venv(arguments.venv)
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        model = train(scratch)
        server = grpc_model_server(model, scratch)
        try:
            results["grpc-model (sklearn runtime)"] = asyncio.run(
                measure(server.target, "hello-world", server.process.pid, arguments.concurrency, arguments.duration)
            )
        finally:
            server.stop()
        for batching in (False, True):
            other = MLServer(command, model, scratch, batching)
            try:
                name = "MLServer 1.7.1 (mlserver-sklearn)" + (", adaptive batching" if batching else "")
                load = measure(other.target, "iris", other.process.pid, arguments.concurrency, arguments.duration)
                results[name] = asyncio.run(load)
            finally:
                other.stop()
    print(f"c={arguments.concurrency}, one-row FP32 calls over gRPC, {arguments.duration:g} s each")
    print("| server | rows/s | p50 ms | p99 ms | server CPU µs/row | errors |\n|---|---|---|---|---|---|")
    for name, row in results.items():
        print(
            f"| {name} | {row['rows/s']:.0f} | {row['p50 ms']} | {row['p99 ms']} | {row['CPU us/row']:.0f} "
            f"| {row['errors']:.0f} |"
        )


if __name__ == "__main__":
    main()
