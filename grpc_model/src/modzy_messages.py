"""The ModzyModel protocol's answers, built from model.yaml and the data plane's results.

Shared by every front end that speaks the protocol (the grpc.aio servicer, the Ray Serve
deployment), so both answer alike; front ends never import each other.
"""

from collections.abc import Sequence

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.grpc_methods import length_delimited
from grpc_model.src.metadata import ModelSpec
from grpc_model.src.runtime import ItemResult, ModelRuntime

RUN_OUTPUTS = pb.RunResponse.OUTPUTS_FIELD_NUMBER
OUTPUT_FILES = pb.OutputItem.OUTPUT_FIELD_NUMBER  # a map: each entry's key is field 1, its value field 2
SUCCEEDED = pb.OutputItem(success=True).SerializeToString()
WIRE_FROM_BYTES = 1024 * 1024


def loaded_status(runtime: ModelRuntime) -> pb.StatusResponse:
    """Status of a loaded model: 200, or 503 while it cannot take work (every worker or model thread lost)."""
    condition = runtime.condition
    if not runtime.available:
        message = f"The model is loaded but cannot take work: {condition}"
        return pb.StatusResponse(status_code=503, status="Service Unavailable", message=message)
    message = f"Model is loaded; {condition}." if condition else "Model is loaded."
    return pb.StatusResponse(status_code=200, status="OK", message=message)


def run_response(results: Sequence[ItemResult]) -> pb.RunResponse:
    """The answer to a Run call whose items all got a result (each a success or its own error)."""
    response = _run_head(results)
    add = response.outputs.add
    for result in results:
        # Filled in place: building OutputItems first would copy every output file once more. Entry by entry:
        # the map's update() is the Mapping mixin's Python, slower for the one or two files of an item.
        output = add(success=result.success).output
        for name, content in result.output.items():
            output[name] = content
    return response


def run_answer(results: Sequence[ItemResult]) -> bytes:
    """`run_response` serialised. Past WIRE_FROM_BYTES of output files it is built on the wire, each file
    copied once, into the answer: a message would hold a copy of its own, and serialising it takes two more.
    Smaller answers are quicker to build as a message."""
    if sum(len(content) for result in results for content in result.output.values()) < WIRE_FROM_BYTES:
        return run_response(results).SerializeToString()
    parts = [_run_head(results).SerializeToString()]
    for result in results:
        item = [
            part
            for name, content in result.output.items()
            for part in length_delimited(
                OUTPUT_FILES, [*length_delimited(1, [name.encode()]), *length_delimited(2, [content])]
            )
        ]
        parts += length_delimited(RUN_OUTPUTS, [*item, SUCCEEDED] if result.success else item)
    return b"".join(parts)


def _run_head(results: Sequence[ItemResult]) -> pb.RunResponse:
    """A Run answer without its outputs."""
    succeeded = sum(result.success for result in results)
    message = f"Inference executed: {succeeded} of {len(results)} items succeeded."
    return pb.RunResponse(status_code=200, status="OK", message=message)


def status_metadata(spec: ModelSpec) -> pb.StatusResponse:
    """The model.yaml part of every StatusResponse, built once."""
    features = spec.features
    return pb.StatusResponse(
        model_info=pb.ModelInfo(
            model_name=spec.name,
            model_version=spec.version,
            model_author=spec.author,
            model_type=spec.type,
            source=spec.source,
        ),
        description=pb.ModelDescription(
            summary=spec.description.summary,
            details=spec.description.details,
            technical=spec.description.technical,
            performance=spec.description.performance,
        ),
        inputs=[
            pb.ModelInput(
                filename=name,
                accepted_media_types=file.acceptedMediaTypes,
                max_size=file.maxSize,
                description=file.description,
            )
            for name, file in spec.inputs.items()
        ],
        outputs=[
            pb.ModelOutput(
                filename=name, media_type=file.mediaType, max_size=file.maxSize, description=file.description
            )
            for name, file in spec.outputs.items()
        ],
        resources=pb.ModelResources(
            required_ram=spec.resources.memory.size,
            num_cpus=spec.resources.cpu.count,
            num_gpus=spec.resources.gpu.count,
        ),
        timeout=pb.ModelTimeout(status=spec.timeout.status, run=spec.timeout.run),
        features=pb.ModelFeatures(
            adversarial_defense=features.adversarialDefense,
            batch_size=features.maxBatchSize,
            retrainable=features.retrainable,
            results_format=features.resultsFormat or "",
            drift_format=features.driftFormat or "",
            explanation_format=features.explanationFormat or "",
        ),
    )
