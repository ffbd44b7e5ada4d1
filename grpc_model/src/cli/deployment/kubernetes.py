"""`grpc-model k8s`: the Kubernetes manifests of the served model, written from its model.yaml and the settings.

What the model needs (memory, CPU, GPUs, how long a call and a load may take) is in model.yaml, so
the manifests are generated from it instead of being edited by hand: after a change to model.yaml,
running the command again is all it takes. The layout is a kustomize base and overlays
(docs/deploy.md); what this module writes for the example model is in `deploy/kubernetes/`.
"""

import math
from dataclasses import dataclass
from typing import Any

from grpc_model.src.metadata import AssetBundle, slug
from grpc_model.src.metadata.units import parse_size
from grpc_model.src.settings import Settings, env_var

USER_ID = 10001  # the image's user (Dockerfile)
METRICS_PORT = 9090  # the metrics endpoint's port when metrics_port is 0 (a pod's ports are fixed)
HTTP_PORT = 8080  # the HTTP port when http_port is 0
PRE_STOP_SECONDS = 5  # for the endpoint's removal to reach kube-proxy and clients before SIGTERM
EXIT_MARGIN_SECONDS = 10  # after the drain: answers leave, workers stop, the process exits
STARTUP_SECONDS = 120  # the least time the startup probe allows for loading; more when timeout.status is longer
CONNECTION_AGE_SECONDS = 60  # clients balancing over the headless Service find new replicas within this
GPU_RESOURCE = "nvidia.com/gpu"
MAX_NAME = 40
Manifest = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """What the manifests are made of: the model, its image and the few numbers chosen from it."""

    bundle: AssetBundle
    settings: Settings
    image: str
    replicas: int = 2

    @property
    def name(self) -> str:
        """The objects' name: a DNS label with room for `-headless` and kustomize's hash suffixes."""
        docker_id = self.bundle.docker.id if self.bundle.docker else ""
        return slug(docker_id or self.bundle.spec.name)[:MAX_NAME].strip("-") or "model"

    @property
    def drain_seconds(self) -> int:
        """The shutdown grace period: at least as long as one call may take (timeout.run), so none is cut."""
        run = self.bundle.spec.timeout.run_seconds or 0.0
        return math.ceil(max(self.settings.shutdown_grace_seconds, run))

    @property
    def termination_grace_seconds(self) -> int:
        return PRE_STOP_SECONDS + self.drain_seconds + EXIT_MARGIN_SECONDS

    @property
    def labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": self.name}

    @property
    def gpus(self) -> int:
        return self.bundle.spec.resources.gpu.count


def default_image(bundle: AssetBundle) -> str:
    """`<registry>/<repo_prefix><id><repo_suffix>:<version>` from docker_metadata.yaml, as the release pushes it."""
    docker = bundle.docker
    if docker is None or not docker.dockerMetadata:
        return f"{slug(bundle.spec.name)}:{bundle.version}"
    first = docker.dockerMetadata[0]
    repository = f"{first.repo_prefix}{docker.id or slug(bundle.spec.name)}{first.repo_suffix}"
    return (
        f"{first.registry.rstrip('/')}/{repository}:{bundle.version}"
        if first.registry
        else f"{repository}:{bundle.version}"
    )


def quantity(size_bytes: int) -> str:
    """Bytes as a Kubernetes quantity, in the largest binary unit that divides them."""
    for unit, factor in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if size_bytes % factor == 0:
            return f"{size_bytes // factor}{unit}"
    return str(size_bytes)


def cpu_quantity(count: float) -> str:
    return str(int(count)) if count == int(count) else f"{round(count * 1000)}m"


def resources(target: Target) -> Manifest:
    """model.yaml's `resources`: memory requested and capped alike, CPU requested (a CPU limit only
    throttles), GPUs as whole devices."""
    spec = target.bundle.spec.resources
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if spec.cpu.count > 0:
        requests["cpu"] = cpu_quantity(spec.cpu.count)
    if spec.memory.size:
        requests["memory"] = limits["memory"] = quantity(parse_size(spec.memory.size))
    if target.gpus > 0:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = target.gpus
    return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


def container_ports(target: Target) -> dict[str, int]:
    """The ports the server listens on, by name: gRPC; metrics unless off; the plaintext health port when
    `health_port` is set (the probes' port: kubelet's gRPC probes speak no TLS); HTTP only when `http` is `on`."""
    settings = target.settings
    ports = {"grpc": settings.port}
    if settings.metrics:
        ports["metrics"] = settings.metrics_port or METRICS_PORT
    if settings.health_port:
        ports["health"] = settings.health_port
    if settings.http == "on":
        ports["http"] = settings.http_port or HTTP_PORT
    return ports


def settings_env(target: Target) -> dict[str, str]:
    """The server's settings in the cluster: loaded before it is ready, no remote Shutdown, a drain that
    covers a whole call, connections renewed so that clients see replicas come and go, and exactly the
    ports that the manifests declare (HTTP off unless `on`, even in an image with the `http` group)."""
    ports = container_ports(target)
    env = {
        env_var("port"): str(target.settings.port),
        env_var("load_model_at_startup"): "true",
        env_var("shutdown"): "disabled",
        env_var("shutdown_grace_seconds"): str(target.drain_seconds),
        env_var("max_connection_age_seconds"): str(CONNECTION_AGE_SECONDS),
        env_var("log_level"): target.settings.log_level,
        env_var("http"): "on" if "http" in ports else "off",
    }
    names = {"metrics": "metrics_port", "health": "health_port", "http": "http_port"}
    env.update({env_var(names[name]): str(port) for name, port in ports.items() if name in names})
    if "metrics" not in ports:
        env[env_var("metrics")] = "false"
    return env


def container(target: Target) -> Manifest:
    ports = container_ports(target)
    port = ports.get("health", ports["grpc"])  # the probes'
    startup_seconds = max(STARTUP_SECONDS, 2 * (target.bundle.spec.timeout.status_seconds or 0.0))
    return {
        "name": "model",
        "image": target.image,
        "ports": [{"name": name, "containerPort": number, "protocol": "TCP"} for name, number in ports.items()],
        "envFrom": [{"configMapRef": {"name": f"{target.name}-settings"}}],
        "resources": resources(target),
        # The standard gRPC health service, whole-server ("") status: SERVING once the model is loaded and
        # can take work, NOT_SERVING while no worker can or once the drain begins.
        "startupProbe": {
            "grpc": {"port": port},
            "periodSeconds": 2,
            "failureThreshold": math.ceil(startup_seconds / 2),
        },
        "readinessProbe": {"grpc": {"port": port}, "periodSeconds": 2, "failureThreshold": 1, "timeoutSeconds": 2},
        "livenessProbe": {"grpc": {"port": port}, "periodSeconds": 10, "failureThreshold": 6, "timeoutSeconds": 5},
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_SECONDS)]}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def deployment(target: Target) -> Manifest:
    pod_spec: Manifest = {
        "terminationGracePeriodSeconds": target.termination_grace_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container(target)],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
    }
    if target.gpus > 0:
        pod_spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": target.name,
            "labels": {**target.labels, "app.kubernetes.io/version": target.bundle.version},
        },
        "spec": {
            "replicas": target.replicas,
            "selector": {"matchLabels": target.labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": {**target.labels, "app.kubernetes.io/version": target.bundle.version}},
                "spec": pod_spec,
            },
        },
    }


def service(target: Target, headless: bool) -> Manifest:
    ports = [{"name": "grpc", "port": target.settings.port, "targetPort": "grpc", "appProtocol": "kubernetes.io/h2c"}]
    spec: Manifest = {"selector": target.labels, "ports": ports}
    if headless:  # one DNS record per ready pod: clients balance calls round robin over them
        spec["clusterIP"] = "None"
    else:
        served = container_ports(target)
        ports += [
            {"name": name, "port": served[name], "targetPort": name, "appProtocol": "http"}
            for name in ("metrics", "http")
            if name in served
        ]
    name = f"{target.name}-headless" if headless else target.name
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": target.labels}, "spec": spec}


def disruption_budget(target: Target) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": target.name, "labels": target.labels},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": target.labels}},
    }
