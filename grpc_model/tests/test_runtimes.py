"""Runtimes: a model file trained here is served with no Python written for it, over V2 and ModzyModel.

tritonclient sends FP32 tensors over gRPC and HTTP and gets the library's own outputs back; the same
rows as a CSV over ModzyModel give the same numbers; bad files, columns, values and tensors each get an
error that names what is wrong, and the other items and calls go on.
"""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from grpc_model.src.auto_generated.v2 import grpc_predict_v2_pb2 as v2_pb
from grpc_model.src.auto_generated.v2.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from grpc_model.src.metadata import BundleError, load_bundle
from grpc_model.src.runtime import EngineOptions, ModelLoadError, ModelRuntime, WrapperImportError, WrapperSource
from grpc_model.src.runtimes import wrapper_source
from grpc_model.src.settings import PROJECT_ROOT
from grpc_model.tests.conftest import PATIENCE_SECONDS, TEST_VERSION, ServerFactory, ServerThread
from grpc_model.tests.http_client import HTTP, HttpClient
from grpc_model.tests.runtime_models import Outputs, iris, trained_bundle, write_runtime_bundle
from grpc_model.tests.v2_cases import run_client_job

TOLERANCE = 1e-6
MODEL = "hello-world"  # the greeter's name, which the runtime bundles keep
ROWS = iris()[0][::15]  # 10 rows, every class


def numeric_calls(protocol: str, url: str, calls: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """The answers of grpc_model/tests/v2_numeric_client.py (tritonclient, in a process of its own)."""
    job = {"protocol": protocol, "url": url, "model": MODEL, "calls": [{"inputs": inputs} for inputs in calls]}
    answer: dict[str, Any] = run_client_job("grpc_model.tests.v2_numeric_client", job)
    return answer


def fp32(name: str, rows: Any, datatype: str = "FP32") -> dict[str, Any]:
    array = np.asarray(rows)
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": array.reshape(-1).tolist()}


def csv_of(rows: Any, order: list[int]) -> bytes:
    """The rows as a CSV whose columns come in `order`; each value the exact float the FP32 tensor holds."""
    lines = [",".join(f"x{index}" for index in order)]
    lines += [",".join(repr(float(row[index])) for index in order) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def assert_close(got: Any, expected: Any) -> None:
    np.testing.assert_allclose(
        np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64), atol=TOLERANCE
    )


def source_of(root: Path) -> WrapperSource:
    source = wrapper_source(load_bundle(root))
    assert source is not None
    return source


@pytest.fixture(params=["sklearn", "xgboost", "lightgbm", "onnx"])
def served(request: pytest.FixtureRequest, serve: ServerFactory, tmp_path: Path) -> tuple[str, ServerThread, Outputs]:
    """A server of a model of each kind, trained now; its model_class names nothing that exists."""
    kind: str = request.param
    root, expected = trained_bundle(tmp_path, kind, ROWS)
    server = serve(asset_bundle_dir=root, model_class="no_such_package.model", **HTTP)
    return kind, server, expected


def test_a_trained_model_answers_tritonclient_and_modzy_clients_with_its_own_numbers(
    served: tuple[str, ServerThread, Outputs],
) -> None:
    kind, server, expected = served
    input_name = "X" if kind == "onnx" else "input"  # ONNX: the graph's own name (skl2onnx's)
    halves = [[fp32(input_name, ROWS[:4])], [fp32(input_name, ROWS[4:])]]
    for protocol, url in (("grpc", f"127.0.0.1:{server.running.port}"), ("http", HttpClient(server).url)):
        answer = numeric_calls(protocol, url, halves)
        assert [tensor["name"] for tensor in answer["metadata"]["outputs"]] == list(expected)
        for name, values in expected.items():
            got = [value for call in answer["answers"] for value in call["outputs"][name]["data"]]
            assert_close(got, values.reshape(-1))
            assert answer["answers"][0]["outputs"][name]["shape"] == [4, *values.shape[1:]]

    response = server.client.run([{"input.csv": csv_of(ROWS, [2, 0, 3, 1])}])  # columns in any order
    assert response.outputs[0].success, response.outputs[0].output
    rows = json.loads(response.outputs[0].output["results.json"])["data"]["result"]
    if kind == "onnx":
        for name, values in expected.items():
            assert_close([row[name] for row in rows], values)
    else:
        assert [row["prediction"] for row in rows] == expected["predict"].tolist()
        assert_close([list(row["probabilities"].values()) for row in rows], expected["predict_proba"])
        assert list(rows[0]["probabilities"]) == ["0", "1", "2"]  # the class labels


def test_bad_rows_and_tensors_fail_alone_with_what_is_wrong(serve: ServerFactory, tmp_path: Path) -> None:
    root, expected = trained_bundle(tmp_path, "sklearn", ROWS[:2])
    server = serve(asset_bundle_dir=root, **HTTP)
    good = csv_of(ROWS[:2], [0, 1, 2, 3])
    items = [
        good,
        b"x0,x1,x2,x3,colour\n1,2,3,4,5\n",
        b"x0,x1,x3\n1,2,4\n",
        b"x0,x1,x2,x3\n1,2,3,4\n5,six,7,8\n",
        json.dumps([{"x0": 1, "x1": 2, "x2": 3, "x3": 4}, [1, 2, 3, 4]]).encode(),
        json.dumps([[1, 2, 3]]).encode(),
    ]
    assert server.client.status().status_code == 200  # a Modzy client loads the model with Status
    outputs = server.client.run([{"input.csv": item} for item in items]).outputs
    assert [output.success for output in outputs] == [True, False, False, False, True, False], outputs
    errors = [output.output["error"].decode() for output in outputs[1:4]] + [outputs[5].output["error"].decode()]
    assert "not features of this model: 'colour'" in errors[0]
    assert "missing 'x2'" in errors[1]
    assert "row 2, column 'x1': 'six' is not a number" in errors[2]
    assert "row 1 has 3 values; the model takes 4" in errors[3]
    result = json.loads(outputs[0].output["results.json"])["data"]["result"]
    assert [row["prediction"] for row in result] == expected["predict"].tolist()

    calls = [[fp32("input", [[1.0, 2.0, 3.0]])], [fp32("input", [[1, 2, 3, 4]], "INT8")], [fp32("input", ROWS[:2])]]
    for protocol, url in (("grpc", f"127.0.0.1:{server.running.port}"), ("http", HttpClient(server).url)):
        answers = numeric_calls(protocol, url, calls)["answers"]
        assert "input 'input' has shape [1, 3]; the model takes [N, 4] (4 values per row)" in answers[0]["error"]
        assert "has datatype 'INT8'; the model takes FP64 (or FP32, INT32, INT64)" in answers[1]["error"]
        assert answers[2]["outputs"]["predict"]["data"] == expected["predict"].tolist()
    assert ("INVALID_ARGUMENT" in answers[0]["error"]) is False  # HTTP: a 400
    assert "[400]" in answers[0]["error"]


def test_a_pickle_is_refused_unless_model_yaml_trusts_it(tmp_path: Path) -> None:
    (tmp_path / TEST_VERSION).mkdir()
    (tmp_path / TEST_VERSION / "model.joblib").write_bytes(b"any pickle")
    write_runtime_bundle(tmp_path, "sklearn", "model.joblib", trusted=False)
    with pytest.raises(BundleError, match=r"runtime\.trusted: true"):
        load_bundle(tmp_path)


@pytest.mark.parametrize(
    ("kind", "file"),
    [("sklearn", "model.joblib"), ("xgboost", "model.json"), ("lightgbm", "model.txt"), ("onnx", "m.onnx")],
)
def test_a_model_file_that_does_not_load_fails_the_load_with_the_reason(tmp_path: Path, kind: str, file: str) -> None:
    library = {"sklearn": "sklearn", "onnx": "onnxruntime"}.get(kind, kind)
    pytest.importorskip(library, reason=f"the {kind} runtime's library (group {kind})")
    (tmp_path / TEST_VERSION).mkdir()
    (tmp_path / TEST_VERSION / file).write_bytes(b"not a model")
    runtime = ModelRuntime(source_of(write_runtime_bundle(tmp_path, kind, file)), EngineOptions())
    with pytest.raises(ModelLoadError, match="failed to load: ") as failure:
        asyncio.run(runtime.load())
    assert not runtime.is_loaded
    assert len(str(failure.value)) > len("failed to load: ") + 20, "the library's reason"


def test_a_missing_library_names_the_extra_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / TEST_VERSION).mkdir()
    (tmp_path / TEST_VERSION / "model.json").write_bytes(b"{}")
    bundle = load_bundle(write_runtime_bundle(tmp_path, "xgboost", "model.json"))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(WrapperImportError, match=r"optional extra `xgboost`.*grpc-model\[xgboost\]"):
        wrapper_source(bundle)


def test_rows_of_many_calls_are_one_library_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = trained_bundle(tmp_path, "sklearn", ROWS)
    model = source_of(root).load()
    seen: list[int] = []
    predict = model.instance.predict

    def counted(inputs: dict[str, Any]) -> Any:
        seen.append(len(inputs["input"]))
        return predict(inputs)

    monkeypatch.setattr(model.instance, "predict", counted)
    rows = [{"input": np.asarray(row, dtype="<f8").tobytes()} for row in ROWS[:3]]
    assert model.batch is not None
    outputs = model.batch([*rows, {"input.csv": csv_of(ROWS[3:], [0, 1, 2, 3])}], False, False)
    assert seen == [10]
    assert len(outputs) == 4
    assert list(outputs[0]) == ["predict", "predict_proba"]
    assert len(json.loads(outputs[3]["results.json"])["data"]["result"]) == 7


def test_the_image_learns_the_extra_to_install_from_model_yaml(tmp_path: Path, greeter_bundle: Path) -> None:
    """The Dockerfile installs what `python -m grpc_model.src.runtimes` names: the runtime's extra, or none."""
    (tmp_path / TEST_VERSION).mkdir()
    (tmp_path / TEST_VERSION / "model.txt").write_text("tree\n")
    write_runtime_bundle(tmp_path, "lightgbm", "model.txt")
    extras = {}
    for name, root in (("runtime", tmp_path), ("wrapper", greeter_bundle)):
        printed = subprocess.run(
            [sys.executable, "-m", "grpc_model.src.runtimes"],
            env={**os.environ, "GRPC_MODEL_ASSET_BUNDLE_DIR": str(root)},
            capture_output=True,
            text=True,
            cwd=PROJECT_ROOT,
            check=True,
        )
        extras[name] = printed.stdout.strip()
    assert extras == {"runtime": "lightgbm", "wrapper": ""}


def test_worker_processes_load_the_runtime_from_its_model_yaml(serve: ServerFactory, tmp_path: Path) -> None:
    """A spawned worker gets the runtime's configuration with the class (it has no wrapper of its own to import)."""
    root, expected = trained_bundle(tmp_path, "lightgbm", ROWS)
    server = serve(asset_bundle_dir=root, workers=1, model_class="no_such_package.model")
    assert server.client.status().status_code == 200
    output = server.client.run([{"input.csv": csv_of(ROWS, [3, 2, 1, 0])}]).outputs[0]
    assert output.success, output.output
    rows = json.loads(output.output["results.json"])["data"]["result"]
    assert [row["prediction"] for row in rows] == expected["predict"].tolist()


def test_a_runtime_file_missing_from_the_bundle_is_a_bundle_error(tmp_path: Path) -> None:
    (tmp_path / TEST_VERSION).mkdir()
    write_runtime_bundle(tmp_path, "onnx", "model.onnx")
    with pytest.raises(BundleError, match=r"runtime\.file: model\.onnx is not a file in"):
        load_bundle(tmp_path)
    write_runtime_bundle(tmp_path, "onnx", "../model.onnx")
    with pytest.raises(BundleError, match=r"runtime\.file: Value error, must be a path relative to this bundle"):
        load_bundle(tmp_path)


def test_json_data_and_typed_contents_carry_numbers_too(serve: ServerFactory, tmp_path: Path) -> None:
    """What clients other than tritonclient send: REST JSON `data` (nested), gRPC `fp64_contents`/`int64_contents`."""
    root, expected = trained_bundle(tmp_path, "sklearn", ROWS[:2])
    server = serve(asset_bundle_dir=root, **HTTP)
    document = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": ROWS[:2].tolist()}]}
    status, answer = HttpClient(server).json("POST", f"/v2/models/{MODEL}/infer", document)
    assert status == 200, answer
    outputs = {output["name"]: output for output in answer["outputs"]}
    assert outputs["predict"] == {
        "name": "predict",
        "datatype": "INT64",
        "shape": [2],
        "data": expected["predict"].tolist(),
    }
    assert_close(outputs["predict_proba"]["data"], expected["predict_proba"].reshape(-1))

    message = v2_pb.ModelInferRequest(model_name=MODEL)
    message.inputs.add(name="input", datatype="FP64", shape=[2, 4]).contents.fp64_contents.extend(
        ROWS[:2].astype(np.float64).reshape(-1).tolist()
    )
    reply = GRPCInferenceServiceStub(server.client.channel).ModelInfer(message, timeout=PATIENCE_SECONDS)
    typed = {output.name: output for output in reply.outputs}
    assert list(typed["predict"].contents.int64_contents) == expected["predict"].tolist()
    assert_close(typed["predict_proba"].contents.fp64_contents, expected["predict_proba"].reshape(-1))
    assert list(typed["predict_proba"].shape) == [2, 3]


def test_onnx_threads_come_from_the_cpus_and_a_gpu_only_where_onnxruntime_has_cuda(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx runtime's library (group onnx)")
    root, _ = trained_bundle(tmp_path, "onnx", ROWS[:1])
    spec = yaml.safe_load((root / TEST_VERSION / "model.yaml").read_text())
    spec["resources"] = {"cpu": {"count": 2.5}, "gpu": {"count": 1}}
    (root / TEST_VERSION / "model.yaml").write_text(yaml.safe_dump(spec))
    session = source_of(root).load().instance.session
    assert session.get_session_options().intra_op_num_threads == 2
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert session.get_providers()[0] == "CUDAExecutionProvider"
    else:
        assert session.get_providers() == ["CPUExecutionProvider"]
        assert "asks for a GPU but onnxruntime has no CUDAExecutionProvider" in caplog.text
