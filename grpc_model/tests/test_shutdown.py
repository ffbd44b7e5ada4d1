"""Calls still running when the shutdown grace period ends are told that the server shut down."""

import threading

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.client import ModelClient
from grpc_model.tests.conftest import ServerFactory
from grpc_model.tests.wrappers import Slow


def test_items_unfinished_after_the_grace_period_say_the_server_shut_down(serve_wrapper: ServerFactory) -> None:
    Slow.started.clear()
    Slow.release.clear()
    server = serve_wrapper("Slow", shutdown_grace_seconds=1)
    server.client.status()
    try:
        with ModelClient(f"127.0.0.1:{server.running.port}") as client:  # server.stop closes server.client
            running = client.stub.Run.future(pb.RunRequest(inputs=[pb.InputItem(input={"a": b"1"})] * 2))
            assert Slow.started.wait(timeout=10)  # the first item runs, the second waits behind it

            stopping = threading.Thread(target=server.stop)
            stopping.start()
            response = running.result(timeout=10)  # not grpc's UNAVAILABLE "Cancelling all calls"
    finally:
        Slow.release.set()
    stopping.join(timeout=30)

    assert response.status_code == 200
    assert [item.output["error"] for item in response.outputs] == [
        b"the server shut down before the model finished this item",
        b"the server shut down before this item ran",
    ]
