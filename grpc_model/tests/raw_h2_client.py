"""A gRPC call written by hand on HTTP/2 (h2), for metadata no gRPC library sends: raw bytes such as UTF-8."""

import socket
import struct

import h2.config
import h2.connection
import h2.events

from grpc_model.tests.conftest import PATIENCE_SECONDS


def raw_unary_call(port: int, path: str, request: bytes, metadata: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """The grpc-status and the response message of one plaintext unary call to 127.0.0.1:`port`."""
    config = h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False, normalize_outbound_headers=False
    )
    connection = h2.connection.H2Connection(config)
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", b"127.0.0.1"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        *metadata,
    ]
    answer: dict[bytes, bytes] = {}
    body = b""
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_SECONDS) as sock:
        connection.initiate_connection()
        connection.send_headers(1, headers)
        connection.send_data(1, b"\0" + struct.pack(">I", len(request)) + request, end_stream=True)
        sock.sendall(connection.data_to_send())
        ended = False
        while not ended and (data := sock.recv(65536)):
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    answer.update(dict(event.headers))
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                ended = ended or isinstance(event, h2.events.StreamEnded | h2.events.StreamReset)
            sock.sendall(connection.data_to_send())
    return int(answer.get(b"grpc-status", b"-1")), body[5:]
