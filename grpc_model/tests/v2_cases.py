"""Functional test cases through tritonclient (gRPC or HTTP), compared as the framework's own check compares them."""

import base64
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from grpc_model.src.metadata import TestCase
from grpc_model.src.settings import PROJECT_ROOT
from grpc_model.tests.conftest import PATIENCE_SECONDS


def run_client_job(module: str, job: Mapping[str, Any]) -> Any:
    """What a tritonclient script (`module`) prints for `job`: it runs in a process of its own."""
    finished = subprocess.run(
        [sys.executable, "-m", module],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=PATIENCE_SECONDS * 2,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stdout)


def tritonclient_calls(protocol: str, url: str, model: str, calls: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The answers of grpc_model/tests/v2_tritonclient.py to `calls`."""
    job = {"protocol": protocol, "url": url, "model": model, "calls": list(calls)}
    answers: list[dict[str, Any]] = run_client_job("grpc_model.tests.v2_tritonclient", job)
    return answers


def case_call(case: TestCase, batch_size: int) -> dict[str, object]:
    """The case's inputs `batch_size` times in one call, with its flags as request parameters."""
    encoded = {name: [base64.b64encode(content).decode()] * batch_size for name, content in case.inputs.items()}
    return {"inputs": encoded, "parameters": {"detect_drift": case.detect_drift, "explain": case.explain}}


def case_problems(
    protocol: str, url: str, model: str, cases: Sequence[TestCase], batch_size: int = 1
) -> dict[str, list[str]]:
    """Every case's problems (empty when its every item has the expected outputs), by case name."""
    answers = tritonclient_calls(protocol, url, model, [case_call(case, batch_size) for case in cases])
    problems: dict[str, list[str]] = {}
    for case, answer in zip(cases, answers, strict=True):
        outputs = answer.get("outputs")
        if not isinstance(outputs, dict):
            problems[case.name] = [f"the call failed: {answer.get('error')}"]
            continue
        items = [
            {name: base64.b64decode(elements[index]) for name, elements in outputs.items()}
            for index in range(batch_size)
        ]
        problems[case.name] = [
            f"item {index}: {problem}" for index, item in enumerate(items) for problem in case.differences(item)
        ]
    return problems
