"""The floor for Python gRPC: bare grpc.aio servicers with the same model cost.

`python -m benchmarks.bare_server PROFILE` serves on 127.0.0.1 (port 0 unless --port)
and prints `serving on PORT`. No framework: canned responses, the profile's cost paid
inline (asyncio.sleep for the sleeping profiles, so it is never the bottleneck). Beside
ModzyModel it answers V2 `ModelInfer` with the same echo (`BareV2Servicer`), the floor
for the V2 front end.
"""

import argparse
import asyncio
from typing import Any

import grpc

from benchmarks.models import COST_SECONDS, OK, burn_cpu
from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.auto_generated.model2_template.model_pb2_grpc import (
    ModzyModelServicer,
    add_ModzyModelServicer_to_server,
)
from grpc_model.src.auto_generated.v2 import grpc_predict_v2_pb2 as v2
from grpc_model.src.auto_generated.v2.grpc_predict_v2_pb2_grpc import (
    GRPCInferenceServiceServicer,
    add_GRPCInferenceServiceServicer_to_server,
)

MESSAGE_LIMIT = 300 * 1024 * 1024


class BareServicer(ModzyModelServicer):
    def __init__(self, profile: str) -> None:
        self.profile = profile
        self.canned = pb.OutputItem(output=OK, success=True)
        self.stopped = asyncio.Event()

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:  # type: ignore[type-arg]
        return pb.StatusResponse(status_code=200, status="OK")

    async def Run(self, request: pb.RunRequest, context: grpc.aio.ServicerContext) -> pb.RunResponse:  # type: ignore[type-arg]
        count = len(request.inputs)
        if self.profile in ("echo", "large"):
            outputs = [
                pb.OutputItem(output={"output.bin": item.input["input.bin"]}, success=True) for item in request.inputs
            ]
            return pb.RunResponse(status_code=200, status="OK", outputs=outputs)
        if self.profile == "sleep-item":
            await asyncio.sleep(COST_SECONDS * count)
        elif self.profile == "sleep-batch":
            await asyncio.sleep(COST_SECONDS)
        elif self.profile == "cpu":
            for _ in range(count):
                burn_cpu()
        return pb.RunResponse(status_code=200, status="OK", outputs=[self.canned] * count)

    async def Shutdown(self, request: pb.ShutdownRequest, context: grpc.aio.ServicerContext) -> pb.ShutdownResponse:  # type: ignore[type-arg]
        asyncio.get_running_loop().call_later(0.1, self.stopped.set)
        return pb.ShutdownResponse(status_code=200, status="OK")


class BareV2Servicer(GRPCInferenceServiceServicer):
    """V2 echo: each input tensor back as an output tensor of the same elements (`input.bin` -> `output.bin`)."""

    async def ModelInfer(
        self, request: v2.ModelInferRequest, context: "grpc.aio.ServicerContext[Any, Any]"
    ) -> v2.ModelInferResponse:
        response = v2.ModelInferResponse(model_name=request.model_name, model_version=request.model_version)
        for tensor in request.inputs:
            output = response.outputs.add(name="output.bin", datatype="BYTES", shape=tensor.shape)
            output.contents.bytes_contents.extend(tensor.contents.bytes_contents)
        return response


async def serve(profile: str, port: int) -> None:
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", MESSAGE_LIMIT), ("grpc.max_send_message_length", MESSAGE_LIMIT)]
    )
    servicer = BareServicer(profile)
    add_ModzyModelServicer_to_server(servicer, server)
    add_GRPCInferenceServiceServicer_to_server(BareV2Servicer(), server)  # type: ignore[abstract]  # the rest: UNIMPLEMENTED
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"serving on {bound}", flush=True)
    await servicer.stopped.wait()
    await server.stop(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", choices=["echo", "sleep-item", "sleep-batch", "cpu", "large"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.profile, args.port))
