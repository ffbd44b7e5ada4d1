"""The server's one settings object.

Precedence, highest first: command-line flag, environment variable, default. Every
field's environment variable is `GRPC_MODEL_<FIELD NAME IN CAPITALS>`, except the port,
which also answers to `PSC_MODEL_PORT`, the name the platform sets.
"""

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

import grpc_model
from grpc_model.src.metadata.units import MAX_DURATION_SECONDS, Range

ENV_PREFIX = "GRPC_MODEL_"
PROJECT_ROOT = Path(grpc_model.__file__).resolve().parent.parent
MIB = 1024 * 1024
INT32_MAX = 2**31 - 1  # gRPC's message size limits are C ints
MAX_CONNECTION_AGE_SECONDS = (2**31 - 1) // 1000  # gRPC takes it in ms, as a C int
MAX_PARALLEL = 1024  # model threads or worker processes: each is an OS thread or process, started at once
MAX_BATCH_WAIT_MS = 60_000
MAX_QUEUED_ITEMS = 10_000_000
MAX_RAY_ONGOING_REQUESTS = 100_000
MAX_INFLIGHT_BYTES = 1024**5  # 1 PiB
Port = Annotated[int, Range(0, 65535, "(a TCP port number; 0 picks a free one)")]


def project_dir() -> Path:
    """The model project the commands act on: the one holding `model_lib/` and `asset_bundle/`.

    The working directory when it is a project (or when the framework runs from its installed package, which
    has no project beside it); else the template repository around the framework's code, so that its commands
    work from any directory as they always did.
    """
    here = Path.cwd()
    if (here / "asset_bundle").is_dir() or (here / "model_lib").is_dir() or not (PROJECT_ROOT / "model_lib").is_dir():
        return here
    return PROJECT_ROOT


def _default_asset_bundle_dir() -> Path:
    """`./asset_bundle` when the server runs from a project directory, else the template's."""
    local = Path("asset_bundle")
    return local if local.is_dir() else project_dir() / "asset_bundle"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _token_when_needed(self) -> "Settings":
        if self.shutdown == "token" and not self.shutdown_token:
            raise ValueError("shutdown is 'token' but shutdown_token is empty; set GRPC_MODEL_SHUTDOWN_TOKEN")
        return self

    @model_validator(mode="after")
    def _ray_replica_bounds(self) -> "Settings":
        if 0 < self.ray_max_replicas < self.ray_replicas:
            raise ValueError(
                f"ray_max_replicas ({self.ray_max_replicas}) is below ray_replicas ({self.ray_replicas}); "
                "set it to 0 for a fixed number of replicas, or to at least ray_replicas to autoscale"
            )
        return self

    @model_validator(mode="after")
    def _tls_files_together(self) -> "Settings":
        if bool(self.tls_cert) != bool(self.tls_key):
            given, missing = ("tls_cert", "tls_key") if self.tls_cert else ("tls_key", "tls_cert")
            raise ValueError(f"{given} is set but {missing} is empty; TLS needs both (set {env_var(missing)})")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("tls_client_ca is set but tls_cert is empty; mutual TLS needs the server's TLS too")
        if self.health_port and self.health_port == self.port:
            raise ValueError(f"health_port {self.health_port} is the gRPC port; give the health port its own")
        return self

    @field_validator("shutdown_token", "auth_token")
    @classmethod
    def _sendable_token(cls, value: str) -> str:
        if problem := token_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_case_format(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    host: str = Field(default="[::]", description="Address to listen on; `[::]` is every interface.")
    port: Port = Field(
        default=45000,
        validation_alias=AliasChoices("PSC_MODEL_PORT", f"{ENV_PREFIX}PORT"),
        description="TCP port to listen on (0 picks a free one). Also read from `PSC_MODEL_PORT`.",
    )
    http: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Serve HTTP (the browser page, the multipart endpoint, REST routes, OpenAPI) on `http_port`: "
        "`auto` when the optional `http` extra is installed, `on` always (start-up fails when the "
        "group is missing), `off` never.",
    )
    http_port: Port = Field(default=8080, description="TCP port of the HTTP server, on `host` (0 picks a free one).")
    model_class: str = Field(
        default="model_lib.src.model",
        description="The model wrapper to serve: `package.module:ClassName`, or `package.module` for the one "
        "wrapper class that module defines.",
    )
    model_version: str = Field(
        default="",
        description="The asset bundle version to serve, `x.y.z`; empty serves the newest `<asset_bundle_dir>/x.y.z/`.",
    )
    asset_bundle_dir: Path = Field(
        default_factory=_default_asset_bundle_dir,
        description="Directory holding one `<version>/` bundle per model version.",
    )
    repository: str = Field(
        default="",
        description="Serve every model of this directory, one model per folder (its `model_lib/` or a runtime, "
        "and its `asset_bundle/`), each with its own engine; empty serves the one model of `model_class` and "
        "`asset_bundle_dir`. See docs/repository.md.",
    )
    default_model: str = Field(
        default="",
        description="With `repository`: the model that ModzyModel calls without `x-model-name` metadata go to; "
        "empty: the repository's only model, and calls must name one when it holds several.",
    )
    load_model_at_startup: bool = Field(
        default=False,
        description="Load the model when the server starts instead of on the first Status call.",
    )
    max_receive_message_bytes: Annotated[int, Range(0, INT32_MAX, "bytes")] = Field(
        default=0,
        description="Largest request message accepted, in bytes, after decompression; 0 follows model.yaml: "
        "the inputs' maxSize summed, times features.maxBatchSize, plus protobuf overhead.",
    )
    max_send_message_bytes: Annotated[int, Range(1, INT32_MAX, "bytes")] = Field(
        default=250 * MIB, description="Largest response message sent, in bytes."
    )
    undeclared_inputs: Literal["reject", "ignore"] = Field(
        default="reject",
        description="An input file that model.yaml does not declare fails its item (`reject`) or is dropped "
        "before the model sees the item (`ignore`).",
    )
    model_threads: Annotated[int, Range(1, MAX_PARALLEL, "threads")] = Field(
        default=1,
        description="Model calls that may run at once in this process; above 1 needs `thread_safe = True` "
        "on the wrapper.",
    )
    workers: Annotated[int, Range(0, MAX_PARALLEL, "processes")] = Field(
        default=0,
        description="Worker processes, each running its own copy of the model (for models that hold the GIL); "
        "0 runs the model in the server process. Implies loading the model at start-up.",
    )
    adaptive_batching: bool = Field(
        default=True,
        description="Combine items of concurrent Run calls into batch calls of up to `features.maxBatchSize`.",
    )
    batch_wait_ms: Annotated[float, Range(0, MAX_BATCH_WAIT_MS, "milliseconds")] = Field(
        default=5.0,
        description="Longest time a partial batch waits for more items while other batches run, in ms.",
    )
    max_queued_items: Annotated[int, Range(1, MAX_QUEUED_ITEMS, "items")] = Field(
        default=10_000,
        description="Items that may wait for the model; calls beyond it get RESOURCE_EXHAUSTED.",
    )
    shutdown_grace_seconds: Annotated[float, Range(0, MAX_DURATION_SECONDS, "seconds")] = Field(
        default=10.0, description="How long in-flight calls may finish after Shutdown or SIGTERM."
    )
    max_connection_age_seconds: Annotated[float, Range(0, MAX_CONNECTION_AGE_SECONDS, "seconds")] = Field(
        default=0,
        description="Close each client connection after this long (calls in flight finish first), so that "
        "clients balancing over DNS, such as a Kubernetes headless Service, resolve again and find new "
        "replicas; 0 keeps connections open.",
    )
    shutdown: Literal["allowed", "disabled", "token"] = Field(
        default="allowed",
        description="Who may stop the server with the Shutdown call: anyone (`allowed`, as the original "
        "template), nobody (`disabled`), or callers that send `shutdown_token` in the `shutdown-token` metadata.",
    )
    shutdown_token: str = Field(
        default="", description="The token Shutdown calls must carry when `shutdown` is `token`."
    )
    tracing: Literal["off", "otlp", "console"] = Field(
        default="off",
        description="OpenTelemetry tracing: `off`; `otlp` exports over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT "
        "(default http://localhost:4318); `console` prints one JSON line per span on stdout. Needs the `tracing` "
        "extra; the standard OTEL_* variables apply.",
    )
    ray_replicas: Annotated[int, Range(1, MAX_PARALLEL, "replicas")] = Field(
        default=1,
        description="Ray Serve only (`grpc-model ray-serve`): replicas of the model; the least when "
        "`ray_max_replicas` is larger.",
    )
    ray_max_replicas: Annotated[int, Range(0, MAX_PARALLEL, "replicas")] = Field(
        default=0,
        description="Ray Serve only: 0 keeps `ray_replicas` replicas; larger lets Ray Serve autoscale between "
        "`ray_replicas` and this many.",
    )
    ray_max_ongoing_requests: Annotated[int, Range(1, MAX_RAY_ONGOING_REQUESTS, "calls")] = Field(
        default=64,
        description="Ray Serve only: Run calls one replica takes at once (its batcher combines them); more wait "
        "in Ray's router.",
    )
    ray_target_ongoing_requests: Annotated[float, Range(0, MAX_RAY_ONGOING_REQUESTS, "calls", low_excluded=True)] = (
        Field(
            default=16,
            description="Ray Serve only, when autoscaling: calls in flight per replica that Ray Serve scales towards.",
        )
    )
    max_inflight_request_bytes: Annotated[int, Range(0, MAX_INFLIGHT_BYTES, "bytes")] = Field(
        default=0,
        description="Bytes of requests that Run calls may hold at once (checking, queued, in the model); a call "
        "past it gets RESOURCE_EXHAUSTED. 0: a quarter of the memory limit (the cgroup's, else the machine's), "
        "and at least the largest request.",
    )
    tls_cert: str = Field(
        default="",
        description="PEM file of the server's certificate chain: the gRPC port speaks TLS. Needs `tls_key`.",
    )
    tls_key: str = Field(default="", description="PEM file of the private key of `tls_cert`.")
    tls_client_ca: str = Field(
        default="",
        description="PEM file of the CA certificates that sign client certificates: clients must present one "
        "(mutual TLS). Needs `tls_cert`.",
    )
    auth_token: str = Field(
        default="",
        description="A bearer token that calls must send as `authorization: Bearer <token>` metadata; "
        "the health service stays open.",
    )
    auth_tokens_file: str = Field(
        default="",
        description="A file of accepted bearer tokens, one a line (blank lines and `#` comments skipped); "
        "adds to `auth_token`.",
    )
    health_port: Port = Field(
        default=0,
        description="A second, plaintext port serving only the gRPC health service, for probes that cannot "
        "speak TLS or send tokens (Kubernetes' grpc probe); 0: none.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="Python logging level: DEBUG, INFO, WARNING, ERROR or CRITICAL, in any case."
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log lines as text, or as one JSON object per line (time, level, logger, message, request_id, "
        "exc_info).",
    )
    metrics: bool = Field(
        default=True, description="Serve Prometheus metrics over HTTP on `metrics_port`; `--no-metrics` turns them off."
    )
    metrics_port: Port = Field(
        default=9090,
        description="TCP port of the Prometheus metrics endpoint (path /metrics), on the same host as gRPC; "
        "0 picks a free one.",
    )

    # Hostile clients on the HTTP and metrics ports (docs/operations.md, "Connections")
    http_max_connections: Annotated[int, Range(0, 1_000_000, "connections")] = Field(
        default=0,
        description="Open connections that the HTTP port, and the metrics port, may each hold (connections); "
        "more are closed at once. 0: an eighth of the open-file limit (128 with 1024).",
    )
    http_idle_timeout_seconds: Annotated[float, Range(0, 86_400, "seconds", low_excluded=True)] = Field(
        default=15.0,
        description="An HTTP connection with no request in progress is closed after this many seconds.",
    )
    http_read_timeout_seconds: Annotated[float, Range(0, 86_400, "seconds", low_excluded=True)] = Field(
        default=30.0,
        description="In seconds, on the HTTP and metrics ports: how long a TLS handshake or a request's head may "
        "take, how long a request body may pause, and how long a client may leave an answer unread; the connection "
        "is closed after it.",
    )
    metrics_auth: Literal["auto", "open"] = Field(
        default="auto",
        description="Protection of the metrics port: `auto` has the gRPC port's (TLS or mutual TLS from the same "
        "files, and the same bearer tokens); `open` serves metrics in plaintext to anyone who can reach the port.",
    )


SECRET_FIELDS = frozenset({"auth_token", "shutdown_token"})


def describe_settings_error(error: ValidationError) -> str:
    """One line per problem, the setting and pydantic's message; the value only for settings that are not
    secrets (pydantic's own text repeats every input, tokens included, for a check across settings)."""
    lines = []
    for problem in error.errors(include_url=False):
        name = ".".join(str(part) for part in problem["loc"])
        given = f" (got {problem['input']!r})" if name and name not in SECRET_FIELDS else ""
        message = problem["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's own message
        lines.append(f"  {name or 'settings'}: {message}{given}")
    return "\n".join(lines)


def token_problem(token: str) -> str | None:
    """Why no client could send `token`, or None; names a position, never a character of the secret.

    gRPC metadata values are printable ASCII: a server token outside it would refuse every call."""
    for position, character in enumerate(token, 1):
        if not " " <= character <= "~":
            return f"must be printable ASCII, as gRPC metadata is; character {position} is not"
    return None


def env_var(field: str) -> str:
    """The environment variable that sets `field`."""
    return f"{ENV_PREFIX}{field.upper()}"


def flag(field: str) -> str:
    """The command-line flag that sets `field`."""
    return "--" + field.replace("_", "-")


def settings_from_args(
    argv: Sequence[str] | None = None, prog: str = "python -m grpc_model.src.model_server"
) -> Settings:
    """Builds the settings from command-line flags over environment variables over defaults."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve a model over the ModzyModel gRPC protocol.",
        epilog=f"example: {prog} --port 45000 --workers 2",
    )
    for name, field in Settings.model_fields.items():
        help_text = f"{field.description} Environment: {env_var(name)}."
        if field.annotation is bool:
            parser.add_argument(flag(name), dest=name, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(flag(name), dest=name, metavar=name.upper(), help=help_text)
    given: dict[str, Any] = {name: value for name, value in vars(parser.parse_args(argv)).items() if value is not None}
    return Settings(**given)
