"""The Ray Serve test's work, run inside a private network and PID namespace (ray_cluster.in_namespace).

`python -m grpc_model.tests.ray_driver RESULT.json`: starts a Ray head and a second node (one
CPU each, so the two replicas of one CPU each must use both nodes), serves the framework's test
model (the greeter) with `grpc-model ray-serve`, drives Ray's gRPC proxy with the reference
client, with `grpc-model test --server` and with grpclib (a second, pure-Python gRPC stack),
stops everything and writes what it saw as JSON for test_ray_serve.py to judge.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
from grpclib.client import Channel, UnaryUnaryMethod

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.client import ModelClient, check_test_case
from grpc_model.src.metadata import TestCase, load_bundle, load_test_cases
from grpc_model.src.settings import ENV_PREFIX, PROJECT_ROOT, env_var
from grpc_model.tests.conftest import TESTS, write_greeter_bundle
from grpc_model.tests.ray_cluster import LocalRay, wait_for

PORT = 45000  # the namespace is private: no other server can hold it
SERVICE = pb.DESCRIPTOR.services_by_name["ModzyModel"].full_name
MAX_QUEUED = 4  # per replica: a call of more items is refused as a whole
# The command's log line once the app runs: logger name and message, which no traceback's source lines show.
SERVING = b"grpc_model.ray_serve: serving "
READY_SECONDS = 600  # two replicas' cold start on a loaded 2-core machine: 20-60 s


def main(result_path: Path) -> None:
    # The framework's own test model, so this passes whatever the author's model is.
    bundle = load_bundle(write_greeter_bundle(result_path.parent / "greeter"))
    cases = load_test_cases(bundle)
    result: dict[str, Any] = {"version": bundle.version, "cases": [case.name for case in cases]}
    log = result_path.with_suffix(".log")
    with LocalRay(nodes=2, cpus=1) as cluster, open(log, "wb") as output:
        env = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}  # LocalRay's too
        env.update({env_var("model_class"): f"{TESTS}:Greeter", env_var("asset_bundle_dir"): str(bundle.path.parent)})
        command = [sys.executable, "-m", "grpc_model", "ray-serve", "--port", str(PORT), "--ray-replicas", "2",
                   "--max-queued-items", str(MAX_QUEUED)]  # fmt: skip
        server = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env={**env, "RAY_ADDRESS": cluster.address}, stdout=output, stderr=output
        )
        try:
            wait_for(lambda: server.poll() is not None or SERVING in log.read_bytes(), "the app", READY_SECONDS)
            if server.poll() is None:
                result.update(drive(cases, env))
        except TimeoutError:
            print(f"Ray Serve's controller said:\n{cluster.serve_warnings()}", file=sys.stderr)
            raise
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                result["exit_code"] = server.wait(timeout=180)
            except subprocess.TimeoutExpired:
                server.kill()
                result["exit_code"] = "killed after 180 s"
    result["log_tail"] = log.read_text(errors="replace")[-4000:]
    result_path.write_text(json.dumps(result))


def drive(cases: list[TestCase], env: dict[str, str]) -> dict[str, Any]:
    target = f"127.0.0.1:{PORT}"
    seen: dict[str, Any] = {}
    with ModelClient(target, timeout=60) as client:
        # The app is up once `serve.run` returns; each proxy learns of it a moment later.
        wait_for(lambda: answers_status(client), "Ray's proxy to route Status", READY_SECONDS)
        status = client.status()
        seen["status"] = [status.status_code, status.message, status.model_info.model_version]
        seen["reference"] = {case.name: check_test_case(client, case, batch_size=3) for case in cases}
        mixed = client.run([cases[0].inputs, {"undeclared.bin": b"x"}])
        seen["mixed"] = [[item.success, item.output.get("error", b"").decode()] for item in mixed.outputs]
        seen["shutdown"] = [client.shutdown().status_code, client.status().status_code]
        try:
            client.run([cases[0].inputs] * (MAX_QUEUED + 1))
            seen["overfull"] = "OK"
        except grpc.RpcError as error:
            seen["overfull"] = [error.code().name, error.details()]
    cli = subprocess.run(
        [sys.executable, "-m", "grpc_model", "test", "--server", target],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    seen["cli"] = [cli.returncode, cli.stdout[-3000:] + cli.stderr[-1000:]]
    seen["grpclib"] = asyncio.run(grpclib_cases(cases))
    return seen


def answers_status(client: ModelClient) -> bool:
    try:
        return client.status().status_code == 200
    except grpc.RpcError:
        return False


async def grpclib_cases(cases: list[TestCase]) -> dict[str, Any]:
    """Status and every case through grpclib, which shares no code with grpcio's C core."""
    channel = Channel("127.0.0.1", PORT)
    try:
        status = UnaryUnaryMethod(channel, f"/{SERVICE}/Status", pb.StatusRequest, pb.StatusResponse)
        run = UnaryUnaryMethod(channel, f"/{SERVICE}/Run", pb.RunRequest, pb.RunResponse)
        answer = await status(pb.StatusRequest(), timeout=60)
        problems = {}
        for case in cases:
            request = pb.RunRequest(
                inputs=[pb.InputItem(input=case.inputs)], detect_drift=case.detect_drift, explain=case.explain
            )
            response = await run(request, timeout=60)
            item = response.outputs[0]
            problems[case.name] = case.differences(item.output) if item.success else [repr(item.output)]
        return {"status": answer.status_code, "problems": problems}
    finally:
        channel.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
