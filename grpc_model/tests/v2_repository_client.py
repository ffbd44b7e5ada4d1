"""Runs tritonclient's model-repository calls, in a process of its own (see v2_tritonclient.py for why).

Reads a job from stdin, JSON: {"protocol": "grpc"|"http", "url": "127.0.0.1:PORT", "headers": {...},
"calls": [{"call": "index"}, {"call": "load", "model": NAME}, {"call": "unload", "model": NAME},
{"call": "ready", "model": NAME, "version": VERSION}]}; writes, for each call, {"index": [{name, version, state,
reason}, ...]}, {"ready": bool}, {} (load, unload) or {"error": message, "status": code}, as a JSON list on stdout.
"""

import json
import sys
from typing import Any


def run(job: dict[str, Any]) -> list[dict[str, Any]]:
    if job["protocol"] == "grpc":
        import tritonclient.grpc as client_module
    else:
        import tritonclient.http as client_module
    from tritonclient.utils import InferenceServerException

    client = client_module.InferenceServerClient(url=job["url"])
    headers = job.get("headers") or None
    answers: list[dict[str, Any]] = []
    for call in job["calls"]:
        try:
            answers.append(_call(client, call, headers, job["protocol"]))
        except InferenceServerException as error:
            answers.append({"error": error.message(), "status": error.status()})
    client.close()
    return answers


def _call(client: Any, call: dict[str, Any], headers: dict[str, str] | None, protocol: str) -> dict[str, Any]:
    if call["call"] == "index":
        index = client.get_model_repository_index(headers=headers, **({"as_json": True} if protocol == "grpc" else {}))
        models = index.get("models", []) if protocol == "grpc" else index
        fields = ("name", "version", "state", "reason")
        return {"index": [{field: model.get(field, "") for field in fields} for model in models]}
    if call["call"] == "load":
        client.load_model(call["model"], headers=headers)
        return {}
    if call["call"] == "unload":
        client.unload_model(call["model"], headers=headers)
        return {}
    return {"ready": client.is_model_ready(call["model"], call.get("version", ""), headers=headers)}


if __name__ == "__main__":
    json.dump(run(json.load(sys.stdin)), sys.stdout)
