"""Sends numeric tensors with tritonclient, in a process of its own (see v2_tritonclient.py for why).

Reads a job from stdin, JSON: {"protocol": "grpc"|"http", "url": ..., "model": NAME, "calls": [{"inputs":
[{"name", "datatype", "shape", "data": [row-major numbers]}]}]}; writes {"metadata": {"inputs": [...],
"outputs": [...]}, "answers": [{"outputs": {name: {"datatype", "shape", "data"}}} or {"error": message}]}.
"""

import json
import sys
from typing import Any

import numpy as np


def run(job: dict[str, Any]) -> dict[str, Any]:
    if job["protocol"] == "grpc":
        import tritonclient.grpc as client_module
    else:
        import tritonclient.http as client_module
    from tritonclient.utils import InferenceServerException, triton_to_np_dtype

    client = client_module.InferenceServerClient(url=job["url"])
    as_json = {"as_json": True} if job["protocol"] == "grpc" else {}
    metadata = client.get_model_metadata(job["model"], **as_json)
    outputs = [output["name"] for output in metadata["outputs"]]
    answers: list[dict[str, Any]] = []
    for call in job["calls"]:
        inputs = []
        for spec in call["inputs"]:
            array = np.array(spec["data"], dtype=triton_to_np_dtype(spec["datatype"])).reshape(spec["shape"])
            tensor = client_module.InferInput(spec["name"], list(array.shape), spec["datatype"])
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        try:
            result = client.infer(job["model"], inputs)
        except InferenceServerException as error:
            answers.append({"error": str(error)})
            continue
        arrays = {name: result.as_numpy(name) for name in outputs}
        answers.append(
            {
                "outputs": {
                    name: {"shape": list(array.shape), "dtype": str(array.dtype), "data": _plain(array)}
                    for name, array in arrays.items()
                }
            }
        )
    client.close()
    return {"metadata": metadata, "answers": answers}


def _plain(array: Any) -> Any:
    if array.dtype == np.object_:
        return [bytes(element).decode() for element in array.reshape(-1)]
    return array.reshape(-1).tolist()


if __name__ == "__main__":
    json.dump(run(json.load(sys.stdin)), sys.stdout)
