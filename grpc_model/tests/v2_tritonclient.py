"""Runs items through tritonclient, in a process of its own; the V2 tests start it.

tritonclient's generated code defines the `inference.*` messages in the default protobuf pool, as the
server's does: one process cannot import both, so the client runs here, apart from the server.

Reads a job from stdin, JSON: {"protocol": "grpc"|"http", "url": "127.0.0.1:PORT", "model": NAME,
"calls": [{"inputs": {file: [base64 element, ...]}, "parameters": {...}, "outputs": [tensor, ...],
"read": [tensor, ...]}]} ("outputs", the outputs to ask for, defaults to none named: all; "read" to the
model's outputs); writes, for each call, {"outputs": {tensor: [base64 element,
...]}} or {"error": message}, as a JSON list on stdout.
"""

import base64
import json
import sys
from typing import Any

import numpy as np


def run(job: dict[str, Any]) -> list[dict[str, Any]]:
    if job["protocol"] == "grpc":
        import tritonclient.grpc as client_module
    else:
        import tritonclient.http as client_module
    from tritonclient.utils import InferenceServerException

    client = client_module.InferenceServerClient(url=job["url"])
    metadata = client.get_model_metadata(job["model"])
    outputs = [output.name if job["protocol"] == "grpc" else output["name"] for output in _outputs(metadata)]
    answers: list[dict[str, Any]] = []
    for call in job["calls"]:
        inputs = []
        for name, elements in call["inputs"].items():
            array = np.array([base64.b64decode(element) for element in elements], dtype=np.object_)
            tensor = client_module.InferInput(name, list(array.shape), "BYTES")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        try:
            requested = [client_module.InferRequestedOutput(name) for name in call.get("outputs", [])]
            result = client.infer(
                job["model"], inputs, parameters=call.get("parameters") or None, outputs=requested or None
            )
        except InferenceServerException as error:
            answers.append({"error": str(error)})
            continue
        arrays = {name: result.as_numpy(name) for name in call.get("read", outputs)}
        answers.append(
            {
                "outputs": {
                    name: [base64.b64encode(bytes(element)).decode() for element in array.reshape(-1)]
                    for name, array in arrays.items()
                    if array is not None
                }
            }
        )
    client.close()
    return answers


def _outputs(metadata: Any) -> list[Any]:
    return list(metadata.outputs if hasattr(metadata, "outputs") else metadata["outputs"])


if __name__ == "__main__":
    json.dump(run(json.load(sys.stdin)), sys.stdout)
