"""Building the registry: the single model of the settings, or every model of a repository directory, each
version its own endpoint with its own metrics, labelled with its model and version."""

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from grpc_model.src.inference import Inference, build_inference
from grpc_model.src.metadata import AssetBundle, BundleError, load_bundle, slug
from grpc_model.src.observability.metrics import NO_METRICS, Metrics, Recorder
from grpc_model.src.repository.layout import ModelFolder, find_models
from grpc_model.src.repository.registry import ModelRegistry
from grpc_model.src.security.limits import InflightBudget, request_size_limit
from grpc_model.src.settings import Settings

CALL_FAMILIES = frozenset({"grpc_model_calls", "grpc_model_call_seconds"})
"""Recorded per gRPC method before a call is routed, so they are the server's, not a model's."""
DEFAULT_RECEIVE_BYTES = 4 * 1024 * 1024
"""gRPC's own default: the port takes at least this, so a call to a model that cannot be read is answered."""


def single_registry(
    settings: Settings, bundle: AssetBundle, metrics: Recorder, budget: InflightBudget
) -> ModelRegistry:
    """The single-model server's registry: the settings' model and bundle, which is the default model."""
    inference = build_inference(settings, bundle, metrics, budget)
    watch(inference)
    folder = ModelFolder(slug(bundle.spec.name), bundle.path.parent, (bundle.version,))
    return ModelRegistry.single(folder, inference)


def repository_registry(
    settings: Settings, directory: Path, folders: Sequence[ModelFolder], budget: InflightBudget
) -> ModelRegistry:
    """Every version of every model found under `directory`, each its own endpoint (built, not loaded yet)."""

    def build(folder: ModelFolder, version: str) -> Inference:
        bundle = load_bundle(folder.asset_bundle_dir, version)
        metrics = Metrics(folder.name, version) if settings.metrics else NO_METRICS
        limit = settings.max_receive_message_bytes or request_size_limit(bundle.spec)
        inference = build_inference(settings, bundle, metrics, budget, project=folder.path, max_request_bytes=limit)
        watch(inference)
        return inference

    default = settings.default_model or (folders[0].name if len(folders) == 1 else None)
    registry = ModelRegistry(build, lambda: find_models(directory), default, settings.shutdown_grace_seconds)
    registry.build_all()
    return registry


def largest_request(settings: Settings, folders: Sequence[ModelFolder]) -> int:
    """What the port takes: max_receive_message_bytes, else the largest request of any version found (each
    model's endpoint then holds its calls to its own model.yaml's limit)."""
    if settings.max_receive_message_bytes:
        return settings.max_receive_message_bytes
    limits = [DEFAULT_RECEIVE_BYTES]
    for folder in folders:
        for version in folder.versions:
            try:
                limits.append(request_size_limit(load_bundle(folder.asset_bundle_dir, version).spec))
            except BundleError:  # the version is reported by the index, and its calls are refused
                continue
    return max(limits)


def watch(inference: Inference) -> None:
    """The endpoint's gauges (queued items, loaded, available), read when Prometheus scrapes."""
    runtime = inference.runtime
    if isinstance(inference.metrics, Metrics):
        inference.metrics.watch(
            queued=lambda: runtime.queued_items, loaded=lambda: runtime.is_loaded, available=lambda: runtime.available
        )


def repository_metrics(calls: Metrics, endpoints: Callable[[], Iterable[Inference]]) -> CollectorRegistry:
    """One scrape for the whole server: its calls by method, and every other metric once per model version, with
    `model` and `version` labels."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_Fleet(calls, endpoints))
    return registry


class _Fleet:
    def __init__(self, calls: Metrics, endpoints: Callable[[], Iterable[Inference]]) -> None:
        self.calls = calls
        self.endpoints = endpoints

    def collect(self) -> Iterator[Metric]:
        yield from (family for family in self.calls.families() if family.name in CALL_FAMILIES)
        merged: dict[str, Metric] = {}
        for inference in self.endpoints():
            metrics = inference.metrics
            if not isinstance(metrics, Metrics):
                continue
            labels = {"model": metrics.model_name, "version": metrics.model_version}
            for family in metrics.families():
                if family.name in CALL_FAMILIES:
                    continue
                target = merged.get(family.name)
                if target is None:
                    target = merged[family.name] = Metric(family.name, family.documentation, family.type)
                target.samples += [sample._replace(labels={**labels, **sample.labels}) for sample in family.samples]
        yield from merged.values()
