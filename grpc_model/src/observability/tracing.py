"""OpenTelemetry tracing: optional, and off unless the `tracing` setting says `otlp` or `console`.

Off, `tracer` is None, every helper returns at once (None, or one shared null context) and nothing
imports OpenTelemetry: the framework runs without the `tracing` extra and pays nothing per
call. On, the gRPC aio server instrumentation gives each call a span (continuing a client's
`traceparent`), and the data plane adds children for validation and queue wait. A batch call is
one span for all the callers it serves: its parent is the first caller's span and it links to
every caller's, so each caller's trace finds the batch and the batch names all its callers.

Worker processes set up their own provider with the same exporter (`start_worker`); the batch
span's context reaches them as W3C headers beside the batch, and their span for it is its child.
The framework keeps its own provider rather than the global one, so configuring it twice (tests)
or in a forked worker never meets OpenTelemetry's set-once global.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from opentelemetry.context import Context as Context
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span as Span
    from opentelemetry.trace import SpanContext, Tracer

Mode = Literal["off", "otlp", "console"]
SERVICE_NAME = "grpc-model"  # unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES names one
INSTALL = "pip install 'grpc-model[tracing]' (docs/package.md; in the template: scripts/dev.sh install --add tracing)"
VALIDATE = "grpc_model.validate"
QUEUE = "grpc_model.queue"
BATCH = "grpc_model.batch"
WORKER_BATCH = "grpc_model.worker.batch"

tracer: Tracer | None = None
"""The framework's tracer while tracing is on; None while off, which is what every call site checks."""
_provider: TracerProvider | None = None
_worker_mode: Mode = "off"  # what worker processes started from here set up
_NOTHING = contextlib.nullcontext()


class TracingUnavailableError(Exception):
    """Tracing was asked for, but the `tracing` extra is not installed."""


class _Answer(Protocol):
    @property
    def success(self) -> bool: ...


def configure(mode: Mode) -> None:
    """Sets tracing up in this process as the setting says: off, OTLP over HTTP, or one JSON line per span on stdout.

    The OTLP exporter reads the standard variables (OTEL_EXPORTER_OTLP_ENDPOINT, ..._HEADERS, ...), the
    batch processor OTEL_BSP_*, the resource OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    """
    if mode == "off":
        shutdown()
        return
    try:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        exporter = _exporter(mode)
        import opentelemetry.instrumentation.grpc  # noqa: F401  (checked now: the server needs it later)
    except ImportError as error:
        raise TracingUnavailableError(
            f"tracing is '{mode}', but OpenTelemetry is not installed ({error}): it is the optional `tracing` "
            f"extra; install it with {INSTALL}, or set tracing to off"
        ) from None
    install(BatchSpanProcessor(exporter), worker_mode=mode)


def _exporter(mode: Mode) -> SpanExporter:
    if mode == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    return ConsoleSpanExporter(formatter=lambda span: span.to_json(indent=None) + "\n")


def install(processor: SpanProcessor, worker_mode: Mode = "off") -> None:
    """Turns tracing on with `processor` (tests pass an in-memory exporter's); workers set up `worker_mode`."""
    global tracer, _provider, _worker_mode
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    shutdown()
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    _provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    _provider.add_span_processor(processor)
    tracer = _provider.get_tracer("grpc_model")
    _worker_mode = worker_mode


def shutdown() -> None:
    """Exports what is still buffered and turns tracing off."""
    global tracer, _provider, _worker_mode
    provider, tracer, _provider, _worker_mode = _provider, None, None, "off"
    if provider is not None:
        provider.shutdown()


def server_interceptors() -> Sequence[Any] | None:
    """The gRPC aio server instrumentation (health checks left out), or None while off."""
    if _provider is None:
        return None
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    interceptor: Any = aio_server_interceptor  # the package has no type hints
    return [interceptor(tracer_provider=_provider, filter_=filters.negate(filters.health_check()))]


def span(name: str, items: int) -> AbstractContextManager[Any]:
    """A child span of the current one, over `items` items, for the `with` block."""
    if tracer is None:
        return _NOTHING
    return tracer.start_as_current_span(name, attributes={"grpc_model.items": items})


class CallTrace:
    """One call's part in the batcher: the caller's span, which batch spans link to, and its queue wait span."""

    __slots__ = ("caller", "waiting")

    def __init__(self, caller: SpanContext, waiting: Span) -> None:
        self.caller = caller
        self.waiting: Span | None = waiting

    def dequeued(self) -> None:
        """The call has no item in the queue any more (all went to batches, or nobody waits): the wait ends."""
        if self.waiting is not None:
            self.waiting.end()
            self.waiting = None


def queued(items: int) -> CallTrace | None:
    """Starts the queue wait of a call whose `items` items were just queued; None while off."""
    if tracer is None:
        return None
    from opentelemetry.trace import get_current_span

    caller = get_current_span().get_span_context()
    return CallTrace(caller, tracer.start_span(QUEUE, attributes={"grpc_model.items": items}))


def start_batch(calls: Iterable[CallTrace | None], items: int) -> Span | None:
    """The span of one batch call: a child of its first caller's span, linked to every caller's."""
    if tracer is None:
        return None
    from opentelemetry.context import Context
    from opentelemetry.trace import Link, NonRecordingSpan, set_span_in_context

    by_id = {(call.caller.trace_id, call.caller.span_id): call.caller for call in calls if call is not None}
    callers = [caller for caller in by_id.values() if caller.is_valid]
    parent = set_span_in_context(NonRecordingSpan(callers[0])) if callers else Context()
    attributes = {"grpc_model.items": items, "grpc_model.callers": len(callers)}
    return tracer.start_span(BATCH, context=parent, links=[Link(caller) for caller in callers], attributes=attributes)


def current(batch: Span | None) -> AbstractContextManager[Any]:
    """Makes `batch` the current span for the block (so `capture` finds it) without ending it."""
    if batch is None:
        return _NOTHING
    from opentelemetry.trace import use_span

    return use_span(batch, end_on_exit=False)


def end_batch(batch: Span | None, results: Sequence[_Answer] = (), error: str | None = None) -> None:
    """Ends a batch span with how many of its items failed, or the error that failed them all."""
    if batch is None:
        return
    from opentelemetry.trace import StatusCode

    batch.set_attribute("grpc_model.failed_items", sum(not result.success for result in results))
    if error is not None:
        batch.set_status(StatusCode.ERROR, error)
    batch.end()


def capture() -> Context | None:
    """The current trace context, kept with a batch handed to another thread; None while off."""
    if tracer is None:
        return None
    from opentelemetry.context import get_current

    return get_current()


def carrier(context: Context | None) -> dict[str, str] | None:
    """A captured context as W3C trace headers, to send to a worker process with its batch."""
    if context is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    headers: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(headers, context)
    return headers or None


def worker_mode() -> Mode:
    """What a worker process started now should set up (`start_worker`): off unless this process exports."""
    return _worker_mode


def start_worker(mode: Mode) -> None:
    """In a worker process: its own provider and exporter, or none.

    A forked worker's inherited provider is dropped, not shut down: what it still buffered is the
    server's to export, and its export thread belongs to the server.
    """
    global tracer, _provider, _worker_mode
    tracer, _provider, _worker_mode = None, None, "off"
    configure(mode)


def worker_span(headers: dict[str, str] | None, items: int) -> AbstractContextManager[Any]:
    """The worker's span for a batch: a child of the server's batch span, whose context `headers` carry."""
    if tracer is None or headers is None:
        return _NOTHING
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract(headers)
    attributes = {"grpc_model.items": items, "process.pid": os.getpid()}
    return tracer.start_as_current_span(WORKER_BATCH, context=parent, attributes=attributes)
