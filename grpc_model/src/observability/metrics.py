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

import bisect
import itertools
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.utils import floatToGoString

PATH = "/metrics"
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
OUTCOMES = ("ok", "failed", "invalid", "refused")


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


def _histogram(name: str, documentation: str, histogram: _Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, buckets=histogram.buckets(), sum_value=histogram.total)


class _Collector:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self.metrics.families()


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class MetricsServer:
    """The /metrics endpoint on its own port, served by a thread of the server process."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        address = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        server_class = type("_Server", (ThreadingWSGIServer,), {"address_family": family})
        app = make_wsgi_app(registry)

        def only_metrics(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") != PATH:
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [f"metrics are at {PATH}\n".encode()]
            served: Iterable[bytes] = app(environ, start_response)
            return served

        self._httpd: WSGIServer = make_server(address, port, only_metrics, server_class, handler_class=_Quiet)
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
