"""Prometheus metrics: recorded in the server process, for the server and all its worker processes.

Why not prometheus_client's multiprocess mode: every item and every batch already passes through
the server process (workers send their results back over a pipe, and now their model time with
them), so one registry there sees the work of every worker, and a scrape needs no files on disk.

Why plain counters instead of prometheus_client's metric objects: the hot path records on the
event loop thread only (calls, items, queue waits, and batch timings, which the model threads and
worker pipes hand back to the loop with their results), so a list increment needs no lock. That
costs a fraction of a microsecond against about two for a locked prometheus_client histogram,
which matters at thousands of calls per second. The collector turns them into metric families
when Prometheus scrapes. Rare events from other threads (worker restarts) take a lock.

`Recorder` is the no-op the engine calls when metrics are off; `Metrics` records.
"""

import asyncio
import bisect
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from http import HTTPStatus
from typing import Protocol, cast

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

PATH = "/metrics"
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Seconds a model load takes: from a model file read at once to minutes of weights and workers."""
OUTCOMES = ("ok", "failed", "invalid", "refused")
HEAD_LIMIT = 8192  # bytes of a scrape's request line and headers
TEXT = "text/plain; charset=utf-8"
AUTHORIZATION = b"authorization"
Refusal = Callable[[Sequence[bytes]], str | None]
"""Why a request's `authorization` header values are refused, or None (security.auth.TokenCheck.refusal)."""


class _HasResult(Protocol):
    @property
    def success(self) -> bool: ...


class Recorder:
    """What the engine and the front ends call; records nothing (metrics off).

    Every method but `worker_restarted` is called on the server's event loop thread.
    """

    def call(self, method: str, code: str, seconds: float) -> None:
        """A gRPC call ended with status `code` after `seconds`."""

    def items_arrived(self, count: int) -> None:
        """A call brought `count` items to the data plane."""

    def items_answered(self, results: Sequence[_HasResult], invalid: int) -> None:
        """Each item of a call got its result; `invalid` of the failures were refused by validation."""

    def items_refused(self, count: int) -> None:
        """A call's items got no result of their own: the call was refused, cancelled or failed as a whole."""

    def waited(self, seconds: Iterable[float]) -> None:
        """Queued items were handed to a model slot after waiting `seconds` each."""

    def batch(self, size: int, seconds: float) -> None:
        """One model call of `size` items took `seconds` (measured where it ran, in a worker process too)."""

    def worker_restarted(self) -> None:
        """A replacement worker process is being started (from any thread)."""

    def model_loaded(self, seconds: float) -> None:
        """The model finished loading after `seconds`."""


NO_METRICS = Recorder()


class _Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # the first bound >= value: Prometheus' `le`
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        counts = list(self.counts)  # one snapshot, taken under the GIL
        cumulative = list(itertools.accumulate(counts))
        return [(_go_float(b), float(c)) for b, c in zip(self.bounds, cumulative, strict=False)] + [
            ("+Inf", float(cumulative[-1]))
        ]


def _go_float(bound: float) -> str:
    """A bucket bound as prometheus_client writes its own (`1.0`, `0.005`), for tools that compare `le` labels."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


class Metrics(Recorder):
    """The server's metrics; `registry` is what the HTTP endpoint serves."""

    def __init__(self, model_name: str, model_version: str) -> None:
        self.model_name = model_name
        self.model_version = model_version
        self._calls: dict[tuple[str, str], int] = {}
        self._call_seconds: dict[str, _Histogram] = {}
        self._items = dict.fromkeys(OUTCOMES, 0)
        self._in_flight = 0
        self._queue_wait = _Histogram(SECONDS_BUCKETS)
        self._batch_seconds = _Histogram(SECONDS_BUCKETS)
        self._batch_size = _Histogram(SIZE_BUCKETS)
        self._restarts = 0
        self._restarts_lock = threading.Lock()
        self._load_seconds: float | None = None
        self._load_durations = _Histogram(LOAD_BUCKETS)
        self._gauges: dict[str, Callable[[], float]] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))

    def watch(self, queued: Callable[[], float], loaded: Callable[[], float], available: Callable[[], float]) -> None:
        """Gauges read when Prometheus scrapes, so the hot path pays nothing for them."""
        self._gauges = {"queued": queued, "loaded": loaded, "available": available}

    def call(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        self._calls[key] = self._calls.get(key, 0) + 1
        histogram = self._call_seconds.get(method)
        if histogram is None:
            histogram = self._call_seconds[method] = _Histogram(SECONDS_BUCKETS)
        histogram.observe(seconds)

    def items_arrived(self, count: int) -> None:
        self._in_flight += count

    def items_answered(self, results: Sequence[_HasResult], invalid: int) -> None:
        ok = sum(result.success for result in results)
        self._items["ok"] += ok
        self._items["invalid"] += invalid
        self._items["failed"] += len(results) - ok - invalid
        self._in_flight -= len(results)

    def items_refused(self, count: int) -> None:
        self._items["refused"] += count
        self._in_flight -= count

    def waited(self, seconds: Iterable[float]) -> None:
        for value in seconds:
            self._queue_wait.observe(value)

    def batch(self, size: int, seconds: float) -> None:
        self._batch_size.observe(size)
        self._batch_seconds.observe(seconds)

    def worker_restarted(self) -> None:
        with self._restarts_lock:
            self._restarts += 1

    def model_loaded(self, seconds: float) -> None:
        self._load_seconds = seconds
        self._load_durations.observe(seconds)

    def families(self) -> Iterator[Metric]:
        """Every metric as Prometheus reads it; see docs/operations.md for what each means."""
        info = InfoMetricFamily("grpc_model_model", "The served model, from model.yaml.", labels=("name", "version"))
        info.add_metric([self.model_name, self.model_version], {})
        yield info
        calls = CounterMetricFamily(
            "grpc_model_calls", "gRPC calls (ModzyModel and V2), by method and status code.", labels=("method", "code")
        )
        for (method, code), count in list(self._calls.items()):
            calls.add_metric([method, code], count)
        yield calls
        latency = HistogramMetricFamily(
            "grpc_model_call_seconds", "Whole-call latency in the server, by method.", labels=("method",)
        )
        for method, histogram in list(self._call_seconds.items()):
            latency.add_metric([method], histogram.buckets(), histogram.total)
        yield latency
        items = CounterMetricFamily("grpc_model_items", "Items of every front end, by outcome.", labels=("outcome",))
        for outcome, count in list(self._items.items()):
            items.add_metric([outcome], count)
        yield items
        yield _histogram("grpc_model_queue_wait_seconds", "Time an item waited for a model slot.", self._queue_wait)
        yield _histogram("grpc_model_batch_seconds", "Model time per batch call.", self._batch_seconds)
        yield _histogram("grpc_model_batch_size", "Items per batch call of the model.", self._batch_size)
        yield GaugeMetricFamily("grpc_model_in_flight_items", "Items of calls in progress.", value=self._in_flight)
        gauges = {name: float(read()) for name, read in self._gauges.items()}
        yield GaugeMetricFamily(
            "grpc_model_queued_items", "Items waiting for a model slot.", value=gauges.get("queued", 0.0)
        )
        yield GaugeMetricFamily(
            "grpc_model_model_loaded", "1 once the model has loaded.", value=gauges.get("loaded", 0.0)
        )
        yield GaugeMetricFamily(
            "grpc_model_model_available", "1 while the model can take work.", value=gauges.get("available", 0)
        )
        yield CounterMetricFamily(
            "grpc_model_worker_restarts", "Replacement worker processes started.", value=self._restarts
        )
        load = GaugeMetricFamily("grpc_model_model_load_seconds", "How long the last model load took.")
        if self._load_seconds is not None:
            load.add_metric([], self._load_seconds)
        yield load
        yield _histogram(
            "grpc_model_model_load_duration_seconds",
            "How long each model load took (a repository's loads on demand included).",
            self._load_durations,
        )


def _histogram(name: str, documentation: str, histogram: _Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, buckets=histogram.buckets(), sum_value=histogram.total)


class _Collector:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self.metrics.families()


class Scrape(asyncio.Protocol):
    """One scrape per connection, on the event loop: the head of a GET within `read_seconds`, the answer, close.

    On the loop, a scrape reads the counters on the thread that writes them. With `refusal` (the gRPC port's
    token check), a request without an accepted `Authorization: Bearer` header gets 401, whatever its path.
    """

    def __init__(self, registry: CollectorRegistry, refusal: Refusal | None, read_seconds: float) -> None:
        self._registry = registry
        self._refusal = refusal
        self._read_seconds = read_seconds
        self._head = bytearray()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._timer = asyncio.get_running_loop().call_later(self._read_seconds, self._transport.close)

    def data_received(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end >= 0:
            self._send(*self._answer(bytes(self._head[:end])))
        elif len(self._head) > HEAD_LIMIT:
            self._send(431, f"the request head is over {HEAD_LIMIT} bytes\n".encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _answer(self, head: bytes) -> tuple[int, bytes, str, tuple[str, ...]]:
        lines = head.split(b"\r\n")
        request = lines[0].split(b" ")
        if len(request) != 3 or not request[2].startswith(b"HTTP/1."):
            return 400, b"expected an HTTP/1.x request line\n", TEXT, ()
        method, target, _ = request
        fields = [line.partition(b":") for line in lines[1:]]
        if self._refusal is not None:
            why = self._refusal([value.strip() for name, _, value in fields if name.strip().lower() == AUTHORIZATION])
            if why is not None:
                return 401, f"{why}\n".encode(), TEXT, ("WWW-Authenticate: Bearer",)
        if target.partition(b"?")[0] != PATH.encode():
            return 404, f"metrics are at {PATH}\n".encode(), TEXT, ()
        if method != b"GET":
            return 405, b"metrics answer GET\n", TEXT, ("Allow: GET",)
        accept = b",".join(value.strip() for name, _, value in fields if name.strip().lower() == b"accept")
        encode, content_type = choose_encoder(accept.decode("latin-1"))
        return 200, encode(self._registry), content_type, ()

    def _send(self, status: int, body: bytes, content_type: str = TEXT, headers: tuple[str, ...] = ()) -> None:
        assert self._transport is not None
        head = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Connection: close",  # one scrape per connection: nothing to keep alive or time out between scrapes
            *headers,
        ]
        self._transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        self._transport.close()
