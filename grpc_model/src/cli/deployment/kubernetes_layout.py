"""The overlays (autoscaling, monitoring, KServe) and the kustomize layout `grpc-model k8s` writes.

base/              Deployment, Service, headless Service, PodDisruptionBudget, settings ConfigMap
overlays/hpa/      base + a HorizontalPodAutoscaler on CPU (any cluster)
overlays/keda/     base + a KEDA ScaledObject on queue depth and CPU + a ServiceMonitor
overlays/kserve/   a KServe InferenceService: the same container as a custom predictor
image/Dockerfile   a repository server's only: its image, the models in /models (no kserve overlay: an
                   InferenceService is one model, and KServe's answer for many is ModelMesh)
"""

from pathlib import Path
from typing import Any

import yaml

from grpc_model.src.cli.deployment import kubernetes_repository
from grpc_model.src.cli.deployment.kubernetes import (
    Manifest,
    Target,
    deployment,
    disruption_budget,
    resources,
    service,
    settings_env,
)

MIN_REPLICAS, MAX_REPLICAS = 2, 10
CPU_UTILIZATION = 70  # percent of the CPU request
QUEUED_BATCHES_PER_REPLICA = 4  # KEDA's target: this many full batches waiting per replica
PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"  # prometheus-operator's default Service
# Replicas belong to the autoscaler once one is applied; `kubectl apply` would reset them otherwise.
WITHOUT_REPLICAS = '[{"op": "remove", "path": "/spec/replicas"}]'


def hpa(target: Target) -> Manifest:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": target.name, "labels": target.labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target.name},
            "minReplicas": MIN_REPLICAS,
            "maxReplicas": MAX_REPLICAS,
            "metrics": [_cpu_metric()],
        },
    }


def _cpu_metric() -> Manifest:
    return {
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": CPU_UTILIZATION}},
    }


def scaled_object(target: Target) -> Manifest:
    """Queue depth (`grpc_model_queued_items`, scraped through the ServiceMonitor) per replica, and CPU."""
    per_replica = QUEUED_BATCHES_PER_REPLICA * target.max_batch_size
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": target.name, "labels": target.labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target.name},
            "minReplicaCount": MIN_REPLICAS,
            "maxReplicaCount": MAX_REPLICAS,
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": PROMETHEUS,
                        "query": f'sum(grpc_model_queued_items{{service="{target.name}"}})',
                        "threshold": str(per_replica),
                    },
                },
                {"type": "cpu", "metricType": "Utilization", "metadata": {"value": str(CPU_UTILIZATION)}},
            ],
        },
    }


def service_monitor(target: Target) -> Manifest:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": target.name, "labels": target.labels},
        "spec": {
            "selector": {"matchLabels": target.labels},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
        },
    }


def inference_service(target: Target) -> Manifest:
    """KServe runs the same image as a custom predictor; RawDeployment mode needs no Knative, and the port
    name `h2c` tells KServe the container speaks HTTP/2 without TLS (gRPC)."""
    env = [{"name": name, "value": value} for name, value in settings_env(target).items()]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": target.name,
            "labels": target.labels,
            "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"},
        },
        "spec": {
            "predictor": {
                "minReplicas": MIN_REPLICAS,
                "maxReplicas": MAX_REPLICAS,
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": target.image,
                        "ports": [{"name": "h2c", "containerPort": target.settings.port, "protocol": "TCP"}],
                        "env": env,
                        "resources": resources(target),
                    }
                ],
            }
        },
    }


def kustomization(resources: list[str], **extra: Any) -> Manifest:
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": resources, **extra}


def _replicas_patch(target: Target) -> list[Manifest]:
    return [{"target": {"kind": "Deployment", "name": target.name}, "patch": WITHOUT_REPLICAS}]


def manifests(target: Target) -> dict[str, Manifest | str]:
    """Every file, by its path under the output directory: a manifest, or text (the settings file)."""
    settings = "".join(f"{name}={value}\n" for name, value in settings_env(target).items())
    files: dict[str, Manifest | str] = {
        "base/kustomization.yaml": kustomization(
            ["deployment.yaml", "service.yaml", "service-headless.yaml", "pdb.yaml"],
            configMapGenerator=[{"name": f"{target.name}-settings", "envs": ["settings.env"]}],
        ),
        "base/settings.env": settings,
        "base/deployment.yaml": deployment(target),
        "base/service.yaml": service(target, headless=False),
        "base/service-headless.yaml": service(target, headless=True),
        "base/pdb.yaml": disruption_budget(target),
        "overlays/hpa/kustomization.yaml": kustomization(["../../base", "hpa.yaml"], patches=_replicas_patch(target)),
        "overlays/hpa/hpa.yaml": hpa(target),
        "overlays/keda/kustomization.yaml": kustomization(
            ["../../base", "scaledobject.yaml", "servicemonitor.yaml"], patches=_replicas_patch(target)
        ),
        "overlays/keda/scaledobject.yaml": scaled_object(target),
        "overlays/keda/servicemonitor.yaml": service_monitor(target),
    }
    if target.repository is not None:
        return {**files, kubernetes_repository.DOCKERFILE: kubernetes_repository.dockerfile(target)}
    return {
        **files,
        "overlays/kserve/kustomization.yaml": kustomization(["inferenceservice.yaml"]),
        "overlays/kserve/inferenceservice.yaml": inference_service(target),
    }


def render(target: Target) -> dict[str, str]:
    """The files' text, each headed by where it comes from."""
    if target.repository is not None:
        header = (
            f"# Written by `grpc-model k8s --repository {target.repository.source}` from its models' model.yaml "
            f"({kubernetes_repository.describe(target.bundles)}); run it again after changing one.\n"
        )
    else:
        bundle = target.bundles[0]
        source = f"{bundle.path.parent.name}/{bundle.path.name}/model.yaml"
        header = f"# Written by `grpc-model k8s` from {source} ({bundle.spec.name}); run it again after changing it.\n"
    return {
        path: header + (content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        for path, content in manifests(target).items()
    }


def stale_files(directory: Path, files: dict[str, str]) -> list[str]:
    """The files under `directory` that differ from `files` (or are missing)."""
    return [
        path
        for path, text in files.items()
        if not (directory / path).is_file() or (directory / path).read_text() != text
    ]


def write(directory: Path, files: dict[str, str]) -> list[Path]:
    written = []
    for path, text in files.items():
        destination = directory / path
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(text)
        written.append(destination)
    return written
