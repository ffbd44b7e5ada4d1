"""The wire contract: the proto's names and numbers, and generated code that matches it."""

import filecmp
import json
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.auto_generated.v2 import grpc_predict_v2_pb2 as v2_pb
from grpc_model.src.settings import PROJECT_ROOT

GENERATED = [Path("grpc_model/src/auto_generated/model2_template"), Path("grpc_model/src/auto_generated/v2")]
S, B, I32, F, MSG = (
    FieldDescriptor.TYPE_STRING,
    FieldDescriptor.TYPE_BYTES,
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_FLOAT,
    FieldDescriptor.TYPE_MESSAGE,
)
BOOL = FieldDescriptor.TYPE_BOOL

# message -> [(field name, number, type, repeated)], exactly as existing clients expect them.
CONTRACT = {
    "StatusRequest": [],
    "ShutdownRequest": [],
    "ModelInfo": [
        ("model_name", 1, S, False), ("model_version", 2, S, False), ("model_author", 3, S, False),
        ("model_type", 4, S, False), ("source", 5, S, False),
    ],
    "ModelDescription": [(n, i, S, False) for i, n in enumerate(["summary", "details", "technical", "performance"], 1)],
    "ModelInput": [
        ("filename", 1, S, False), ("accepted_media_types", 2, S, True), ("max_size", 3, S, False),
        ("description", 4, S, False),
    ],
    "ModelOutput": [(n, i, S, False) for i, n in enumerate(["filename", "media_type", "max_size", "description"], 1)],
    "ModelResources": [("required_ram", 1, S, False), ("num_cpus", 2, F, False), ("num_gpus", 3, I32, False)],
    "ModelTimeout": [("status", 1, S, False), ("run", 2, S, False)],
    "ModelFeatures": [
        ("adversarial_defense", 1, BOOL, False), ("batch_size", 2, I32, False), ("retrainable", 3, BOOL, False),
        ("results_format", 4, S, False), ("drift_format", 5, S, False), ("explanation_format", 6, S, False),
    ],
    "StatusResponse": [
        ("status_code", 1, I32, False), ("status", 2, S, False), ("message", 3, S, False),
        ("model_info", 4, MSG, False), ("description", 5, MSG, False),
        ("inputs", 6, MSG, True), ("outputs", 7, MSG, True),
        ("resources", 8, MSG, False), ("timeout", 9, MSG, False), ("features", 10, MSG, False),
    ],
    "InputItem": [("input", 1, MSG, True)],
    "RunRequest": [("inputs", 1, MSG, True), ("detect_drift", 2, BOOL, False), ("explain", 3, BOOL, False)],
    "OutputItem": [("output", 1, MSG, True), ("success", 2, BOOL, False)],
    "RunResponse": [
        ("status_code", 1, I32, False), ("status", 2, S, False), ("message", 3, S, False), ("outputs", 4, MSG, True),
    ],
    "ShutdownResponse": [("status_code", 1, I32, False), ("status", 2, S, False), ("message", 3, S, False)],
}  # fmt: skip


@pytest.mark.parametrize("message", sorted(CONTRACT))
def test_message_fields_match_the_contract(message: str) -> None:
    descriptor = pb.DESCRIPTOR.message_types_by_name[message]
    fields = [(f.name, f.number, f.type, f.is_repeated) for f in descriptor.fields]
    assert fields == CONTRACT[message]
    assert descriptor.full_name == message  # no package


@pytest.mark.parametrize(("message", "field"), [("InputItem", "input"), ("OutputItem", "output")])
def test_file_maps_are_string_to_bytes(message: str, field: str) -> None:
    entry = pb.DESCRIPTOR.message_types_by_name[message].fields_by_name[field].message_type
    assert entry is not None
    assert entry.GetOptions().map_entry
    assert [(f.name, f.type) for f in entry.fields] == [("key", S), ("value", B)]


def test_service_methods_and_full_names() -> None:
    service = pb.DESCRIPTOR.services_by_name["ModzyModel"]
    assert pb.DESCRIPTOR.package == ""
    assert service.full_name == "ModzyModel"
    methods = {m.name: (m.input_type.name, m.output_type.name) for m in service.methods}
    assert methods == {
        "Status": ("StatusRequest", "StatusResponse"),
        "Run": ("RunRequest", "RunResponse"),
        "Shutdown": ("ShutdownRequest", "ShutdownResponse"),
    }


def test_java_options() -> None:
    options = pb.DESCRIPTOR.GetOptions()
    assert options.java_package == "com.modzy.model.grpc"
    assert options.java_multiple_files


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts/compile_protocol_buffers.sh"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for generated in GENERATED:
        names = sorted(p.name for p in (tmp_path / generated).iterdir())
        assert names == sorted(p.name for p in (PROJECT_ROOT / generated).iterdir() if p.is_file())
        _, mismatch, errors = filecmp.cmpfiles(tmp_path / generated, PROJECT_ROOT / generated, names, shallow=False)
        assert (mismatch, errors) == ([], []), "run scripts/compile_protocol_buffers.sh and commit the result"


def test_v2_service_as_v2_clients_call_it() -> None:
    """The Open Inference Protocol's names, which tritonclient and the KServe SDK put on the wire."""
    service = v2_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert {m.name: m.input_type.full_name for m in service.methods} == {
        "ServerLive": "inference.ServerLiveRequest",
        "ServerReady": "inference.ServerReadyRequest",
        "ModelReady": "inference.ModelReadyRequest",
        "ServerMetadata": "inference.ServerMetadataRequest",
        "ModelMetadata": "inference.ModelMetadataRequest",
        "ModelInfer": "inference.ModelInferRequest",
        "RepositoryIndex": "inference.RepositoryIndexRequest",
        "RepositoryModelLoad": "inference.RepositoryModelLoadRequest",
        "RepositoryModelUnload": "inference.RepositoryModelUnloadRequest",
    }
    request = v2_pb.ModelInferRequest.DESCRIPTOR
    assert [(f.name, f.number) for f in request.fields] == [
        ("model_name", 1), ("model_version", 2), ("id", 3), ("parameters", 4), ("inputs", 5), ("outputs", 6),
        ("raw_input_contents", 7),
    ]  # fmt: skip
    assert v2_pb.InferTensorContents.DESCRIPTOR.fields_by_name["bytes_contents"].number == 8


REPOSITORY_MESSAGES = (
    "ModelRepositoryParameter",
    "RepositoryIndexRequest",
    "RepositoryIndexResponse",
    "RepositoryModelLoadRequest",
    "RepositoryModelLoadResponse",
    "RepositoryModelUnloadRequest",
    "RepositoryModelUnloadResponse",
)
DESCRIBE = """
import json, sys
from importlib import import_module

def fields(message):
    own = [[f.name, f.number, f.type, f.is_repeated, f.message_type and f.message_type.name] for f in message.fields]
    return {"fields": own, "nested": {n.name: fields(n) for n in message.nested_types}}

module = import_module(sys.argv[1])
names = sys.argv[2:]
service = module.DESCRIPTOR.services_by_name["GRPCInferenceService"]
methods = {m.name: [m.input_type.name, m.output_type.name] for m in service.methods if "Repository" in m.name}
messages = {n: fields(module.DESCRIPTOR.message_types_by_name[n]) for n in names}
print(json.dumps({"messages": messages, "methods": methods}))
"""


def _described(module: str) -> object:
    """The repository extension's messages and calls as `module` defines them, read in a process of its own:
    tritonclient's generated code and the server's define the same `inference.*` names in one protobuf pool."""
    finished = subprocess.run(
        [sys.executable, "-c", DESCRIBE, module, *REPOSITORY_MESSAGES],
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_ROOT,
    )
    return json.loads(finished.stdout)


def test_the_repository_extension_is_tritons_field_for_field() -> None:
    """tritonclient's load_model, unload_model and get_model_repository_index put Triton's messages on the wire."""
    ours = _described("grpc_model.src.auto_generated.v2.grpc_predict_v2_pb2")
    assert ours == _described("tritonclient.grpc.service_pb2")
    assert ours["methods"] == {  # type: ignore[index]
        "RepositoryIndex": ["RepositoryIndexRequest", "RepositoryIndexResponse"],
        "RepositoryModelLoad": ["RepositoryModelLoadRequest", "RepositoryModelLoadResponse"],
        "RepositoryModelUnload": ["RepositoryModelUnloadRequest", "RepositoryModelUnloadResponse"],
    }
