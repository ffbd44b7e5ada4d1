"""A small synchronous client for the ModzyModel protocol, used by the reference CLI and the tests."""

import ipaddress
import json
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, overload

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.auto_generated.model2_template.model_pb2_grpc import ModzyModelStub
from grpc_model.src.metadata import TestCase
from grpc_model.src.routing import MODEL_NAME_METADATA, MODEL_VERSION_METADATA
from grpc_model.src.security.channel import ClientSecurity
from grpc_model.src.settings import MIB

# gRPC's own balancing and retries: calls go round robin over every address of the target, and a call
# that a replica refused (UNAVAILABLE: draining, gone, no worker up) or dropped unstarted as it stopped
# (CANCELLED: gRPC cancels calls it had received but not yet handed to the server) is sent again, to
# another replica, by gRPC itself. Status and Run only: running a model again changes nothing.
SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": "ModzyModel", "method": "Status"}, {"service": "ModzyModel", "method": "Run"}],
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.05s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
            },
        }
    ],
}


class TargetError(ValueError):
    """Servers that make no gRPC target: a bad HOST:PORT, or names that resolve to no common address family."""


def server_list(values: str | Sequence[str]) -> list[str]:
    """The servers of `--server a:1,b:2 --server c:3` (repeated, comma-separated, or both), blanks dropped."""
    texts = [values] if isinstance(values, str) else values
    return [server.strip() for text in texts for server in text.split(",") if server.strip()]


def channel_target(servers: str | Sequence[str]) -> str:
    """One gRPC target for one server, a target with a scheme (`dns:///name:port`), or several HOST:PORTs.

    Several servers become one `ipv4:` or `ipv6:` target listing every address, which round robin
    balances; host names among them are resolved once, here (a `dns:///` target follows DNS instead).
    """
    listed = server_list(servers)
    if not listed:
        raise TargetError("no server given")
    if len(listed) == 1:
        return listed[0]
    if any(":/" in server or server.startswith(("ipv4:", "ipv6:", "unix:")) for server in listed):
        raise TargetError(f"a target with a scheme (dns:///, ipv4:, unix:) stands alone; got {listed}")
    resolved = [_addresses(server) for server in listed]
    for family, scheme in ((socket.AF_INET, "ipv4"), (socket.AF_INET6, "ipv6")):
        if all(family in addresses for addresses in resolved):
            return f"{scheme}:" + ",".join(dict.fromkeys(a for addresses in resolved for a in addresses[family]))
    raise TargetError(f"the servers {listed} have no address family (IPv4 or IPv6) in common")


def _addresses(server: str) -> dict[int, list[str]]:
    """HOST:PORT's addresses by family, as gRPC's ipv4:/ipv6: targets write them."""
    host, sep, port = server.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise TargetError(f"{server!r} is not HOST:PORT")
    host = host.removeprefix("[").removesuffix("]")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        try:
            found = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise TargetError(f"{server}: cannot resolve {host!r}: {error.strerror}") from None
        hosts = [(family, str(address[0])) for family, _, _, _, address in found]
    else:
        hosts = [(socket.AF_INET if literal.version == 4 else socket.AF_INET6, str(literal))]
    result: dict[int, list[str]] = {}
    for family, address in hosts:
        if family in (socket.AF_INET, socket.AF_INET6):
            result.setdefault(family, []).append(
                f"[{address}]:{port}" if family == socket.AF_INET6 else f"{address}:{port}"
            )
    return result


def channel_options(max_message_bytes: int = 250 * MIB) -> list[tuple[str, object]]:
    """Every client channel's options: message sizes, round robin with retries, quick reconnects."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        ("grpc.enable_retries", 1),
        # Notice a server that is still starting soon after it listens (the default backoff is 1 s).
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


PLAINTEXT = ClientSecurity()


class RouteError(ValueError):
    """A model name or version that cannot travel as a gRPC metadata value; `key` is its metadata key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class ModelRoute:
    """Which model of a repository server a ModzyModel call is for, sent as call metadata (routing.py).

    No name is the server's default model; no version (or an empty one) its newest loaded version.
    Checked here because gRPC carries only printable ASCII in a text metadata value: anything else would
    fail deep inside gRPC instead of naming the option.
    """

    name: str | None = None
    version: str | None = None

    def __post_init__(self) -> None:
        for key, value in ((MODEL_NAME_METADATA, self.name), (MODEL_VERSION_METADATA, self.version)):
            if value is None:
                continue
            if key == MODEL_NAME_METADATA and not value:
                raise RouteError(key, f"the model name ({key}) is empty; leave it out for the default model")
            if value != value.strip() or not all(" " <= char <= "~" for char in value):
                raise RouteError(key, f"{key} {value!r}: only printable ASCII without surrounding spaces can be sent")

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata: nothing at all for the default model and its newest version."""
        pairs = ((MODEL_NAME_METADATA, self.name), (MODEL_VERSION_METADATA, self.version))
        return tuple((key, value) for key, value in pairs if value)

    def __str__(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.metadata) or "the default model"


DEFAULT_MODEL = ModelRoute()


@overload
def open_channel(
    target: str, security: ClientSecurity = ..., options: Sequence[tuple[str, Any]] = ..., *, aio: Literal[False] = ...
) -> grpc.Channel: ...
@overload
def open_channel(
    target: str, security: ClientSecurity = ..., options: Sequence[tuple[str, Any]] = ..., *, aio: Literal[True]
) -> grpc.aio.Channel: ...
def open_channel(
    target: str, security: ClientSecurity = PLAINTEXT, options: Sequence[tuple[str, Any]] = (), *, aio: bool = False
) -> grpc.Channel | grpc.aio.Channel:
    """The one place a client opens a channel: plaintext, or TLS, mutual TLS and a token as `security` says.

    Raises ClientSecurityError for security options that do not fit together or unreadable files.
    """
    credentials = security.channel_credentials()
    all_options = [*options, *security.channel_options()]
    grpc_api: Any = grpc.aio if aio else grpc
    if credentials is None:
        return grpc_api.insecure_channel(target, options=all_options)  # type: ignore[no-any-return]
    return grpc_api.secure_channel(target, credentials, options=all_options)  # type: ignore[no-any-return]


class ModelClient:
    """Calls one server, or several (a list, `a:1,b:2`, or `dns:///name:port`) round robin; Status and Run go to
    the model `route` names (a repository server's default model unless it names one)."""

    def __init__(
        self,
        target: str | Sequence[str],
        timeout: float | None = 60.0,
        max_message_bytes: int = 250 * MIB,
        security: ClientSecurity = PLAINTEXT,
        route: ModelRoute = DEFAULT_MODEL,
    ) -> None:
        self.timeout = timeout
        self.route = route
        self.channel = open_channel(channel_target(target), security, options=channel_options(max_message_bytes))
        self.stub = ModzyModelStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    def status(self) -> pb.StatusResponse:
        """The routed model's Status (the first Status also loads a model that loads on demand)."""
        return self.stub.Status(pb.StatusRequest(), timeout=self.timeout, metadata=self.route.metadata)

    def run(
        self, items: Sequence[Mapping[str, bytes]], detect_drift: bool = False, explain: bool = False
    ) -> pb.RunResponse:
        request = pb.RunRequest(
            inputs=[pb.InputItem(input=item) for item in items], detect_drift=detect_drift, explain=explain
        )
        return self.stub.Run(request, timeout=self.timeout, metadata=self.route.metadata)

    def shutdown(self, token: str | None = None) -> pb.ShutdownResponse:
        """Asks the server to stop; `token` goes in the `shutdown-token` metadata when the server requires one."""
        metadata = (("shutdown-token", token),) if token else None
        return self.stub.Shutdown(pb.ShutdownRequest(), timeout=self.timeout, metadata=metadata)

    def health(self, service: str = "") -> str:
        """The health service's answer for `service` ("" is the whole server), e.g. "SERVING"."""
        response = self.health_stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    def wait_for_health(self, wanted: str, seconds: float, service: str = "") -> str:
        """Polls health (of `service`: a model's name on a server of several) until it reports `wanted` or
        `seconds` pass; returns the last answer.

        "UNREACHABLE" stands for a server that did not answer at all.
        """
        deadline = time.monotonic() + seconds
        while True:
            try:
                answer = self.health(service)
            except grpc.RpcError:
                answer = "UNREACHABLE"
            if answer == wanted or time.monotonic() >= deadline:
                return answer
            time.sleep(0.1)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "ModelClient":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def check_test_case(client: ModelClient, case: TestCase, batch_size: int = 1) -> list[str]:
    """Sends the case's inputs `batch_size` times in one Run call, with its flags; returns every problem found."""
    response = client.run([case.inputs] * batch_size, case.detect_drift, case.explain)
    if len(response.outputs) != batch_size:
        return [f"expected {batch_size} output items, got {len(response.outputs)}"]
    problems = []
    for index, item in enumerate(response.outputs):
        where = f"item {index + 1}/{batch_size}"
        if not item.success:
            problems.append(f"{where} failed: {item.output.get('error', b'').decode(errors='replace')}")
        else:
            problems += [f"{where}: {problem}" for problem in case.differences(item.output)]
    return problems


class InputError(ValueError):
    """A NAME=PATH input argument that names no input of the model, or no readable file."""


def read_inputs(pairs: Sequence[str], input_names: Sequence[str]) -> dict[str, bytes]:
    """One item from `NAME=PATH` arguments, checked against the model's declared inputs."""
    item = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep:
            raise InputError(f"--input {pair!r} must look like NAME=PATH")
        if name not in input_names:
            raise InputError(f"the model has no input {name!r}; its inputs are {list(input_names)}")
        try:
            item[name] = Path(path).read_bytes()
        except OSError as error:
            raise InputError(f"--input {name}: cannot read {path}: {error.strerror}") from None
    return item


def render(content: bytes) -> str:
    """An output file for a terminal: JSON on one line, text as is, binary as its size."""
    try:
        return json.dumps(json.loads(content), ensure_ascii=False)
    except ValueError:
        pass
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(content)} bytes>"
