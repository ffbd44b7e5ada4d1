"""A request's nested messages are counted from its bytes before protobuf parses them (security/wire.py).

Parsing a map of 300,000 entries held the event loop for seconds: such a request is refused unparsed.
"""

import grpc
import pytest

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.auto_generated.v2 import grpc_predict_v2_pb2 as v2
from grpc_model.src.security import wire
from grpc_model.tests.conftest import PATIENCE_SECONDS, ServerThread


def entries(count: int) -> pb.RunRequest:
    """One item whose `input` map holds `count` tiny entries: about 13 bytes each."""
    return pb.RunRequest(inputs=[pb.InputItem(input={f"{index:07d}": b"" for index in range(count)})])


def test_a_map_of_many_entries_is_refused_by_its_count() -> None:
    raw = entries(wire.MAX_MESSAGES + 1).SerializeToString()
    assert len(raw) > wire.SCAN_FROM_BYTES

    with pytest.raises(wire.TooManyMessagesError, match=rf"more than {wire.MAX_MESSAGES} nested messages"):
        wire.check_message_count(raw, pb.RunRequest)


def test_fields_padding_a_message_are_refused_by_the_work_they_cost() -> None:
    """A field repeated 500,000 times (each a byte or two, parsed in C at once) would make the count itself slow."""
    raw = pb.RunRequest(explain=True).SerializeToString() * 500_000

    with pytest.raises(wire.TooManyMessagesError, match=rf"more than {wire.MAX_FIELDS_READ} fields"):
        wire.check_message_count(raw, pb.RunRequest)


@pytest.mark.parametrize(
    "request_bytes",
    [
        pb.RunRequest(inputs=[pb.InputItem(input={"input.txt": b"x" * 5_000_000})] * 3).SerializeToString(),
        entries(wire.MAX_MESSAGES - 1_000).SerializeToString(),  # many, but under the bound (items count too)
        v2.ModelInferRequest(raw_input_contents=[b"y" * 1_000] * 5_000).SerializeToString(),  # bytes, not messages
        b"\x0a\xff\xff\xff\xff\x0f" + b"\x00" * wire.SCAN_FROM_BYTES,  # malformed: left to the parser
    ],
    ids=["large-files", "under-the-bound", "raw-contents", "malformed"],
)
def test_requests_within_the_bounds_go_on_to_the_parser(request_bytes: bytes) -> None:
    wire.check_message_count(request_bytes, pb.RunRequest)
    wire.check_message_count(request_bytes, v2.ModelInferRequest)


def test_the_server_refuses_such_a_request_unparsed_and_goes_on(greeter_server: ServerThread) -> None:
    greeter_server.client.status()
    raw_run: grpc.UnaryUnaryMultiCallable[bytes, bytes] = greeter_server.client.channel.unary_unary("/ModzyModel/Run")

    with pytest.raises(grpc.RpcError) as raised:
        raw_run(entries(300_000).SerializeToString(), timeout=PATIENCE_SECONDS)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"more than {wire.MAX_MESSAGES} nested messages" in str(raised.value.details())
    assert greeter_server.client.run([{"input.txt": b"Hi Al"}]).outputs[0].success
