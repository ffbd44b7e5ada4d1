"""`grpc-model k8s`: the Kubernetes manifests of the served model (or of a repository server's models), written
from model.yaml and the settings.

What the model needs (memory, CPU, GPUs, how long a call and a load may take) is in model.yaml, so
the manifests are generated from it instead of being edited by hand: after a change to model.yaml,
running the command again is all it takes. The layout is a kustomize base and overlays
(docs/deploy.md); what this module writes for the example model is in `deploy/kubernetes/`. A repository
server's pod holds every model it may load at once, so its numbers are sums over their model.yaml files.
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from grpc_model.src.metadata import AssetBundle, slug
from grpc_model.src.metadata.units import parse_size
from grpc_model.src.settings import Settings, env_var

USER_ID = 10001  # the image's user (Dockerfile)
METRICS_PORT = 9090  # the metrics endpoint's port when metrics_port is 0 (a pod's ports are fixed)
HTTP_PORT = 8080  # the HTTP port when http_port is 0
HEALTH_PORT = 8086  # a repository server's health port when health_port is 0: its probes never queue behind calls
REPOSITORY_MOUNT = "/models"  # where a repository server's image holds the models (repository.py's Dockerfile)
PRE_STOP_SECONDS = 5  # for the endpoint's removal to reach kube-proxy and clients before SIGTERM
EXIT_MARGIN_SECONDS = 10  # after the drain: answers leave, workers stop, the process exits
STARTUP_SECONDS = 120  # the least time the startup probe allows for loading; more when timeout.status is longer
CONNECTION_AGE_SECONDS = 60  # clients balancing over the headless Service find new replicas within this
GPU_RESOURCE = "nvidia.com/gpu"
MAX_NAME = 40
Manifest = dict[str, Any]


@dataclass(frozen=True)
class Repository:
    """A repository server's part of the manifests: the directory's name (the objects' name) and its budget."""

    name: str
    source: str  # the directory as given, for the files' headers
    max_loaded_models: int = 0  # 0: every model loaded at once


@dataclass(frozen=True)
class Target:
    """What the manifests are made of: the served model (or each model of a repository, its newest version), the
    image and the few numbers chosen from their model.yaml files."""

    bundles: tuple[AssetBundle, ...]
    settings: Settings
    image: str
    replicas: int = 2
    repository: Repository | None = None

    @property
    def name(self) -> str:
        """The objects' name: a DNS label with room for `-headless` and kustomize's hash suffixes."""
        if self.repository is not None:
            return slug(self.repository.name)[:MAX_NAME].strip("-") or "models"
        bundle = self.bundles[0]
        docker_id = bundle.docker.id if bundle.docker else ""
        return slug(docker_id or bundle.spec.name)[:MAX_NAME].strip("-") or "model"

    @property
    def version(self) -> str | None:
        """The one model version the pods serve; none for a repository, whose versions come and go."""
        return None if self.repository is not None else self.bundles[0].version

    def loaded_sum(self, values: Iterable[float]) -> float:
        """The most the loaded models can add up to: every model's value, or with a budget of N loaded models the
        N largest (whichever N a server loads, they need no more)."""
        budget = self.repository.max_loaded_models if self.repository is not None else 0
        ordered = sorted(values, reverse=True)
        return sum(ordered[:budget] if budget else ordered)

    @property
    def drain_seconds(self) -> int:
        """The shutdown grace period: at least as long as one call may take (timeout.run), so none is cut."""
        run = max(bundle.spec.timeout.run_seconds or 0.0 for bundle in self.bundles)
        return math.ceil(max(self.settings.shutdown_grace_seconds, run))

    @property
    def startup_seconds(self) -> int:
        """The startup probe's budget: the loads at start (timeout.status each, one after another), twice over."""
        loads = self.loaded_sum(bundle.spec.timeout.status_seconds or 0.0 for bundle in self.bundles)
        return math.ceil(max(STARTUP_SECONDS, 2 * loads))

    @property
    def max_batch_size(self) -> int:
        return max(bundle.spec.features.maxBatchSize for bundle in self.bundles)

    @property
    def termination_grace_seconds(self) -> int:
        return PRE_STOP_SECONDS + self.drain_seconds + EXIT_MARGIN_SECONDS

    @property
    def labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": self.name}

    @property
    def gpus(self) -> int:
        return round(self.loaded_sum(bundle.spec.resources.gpu.count for bundle in self.bundles))

    @property
    def cpus(self) -> float:
        return self.loaded_sum(bundle.spec.resources.cpu.count for bundle in self.bundles)

    @property
    def memory_bytes(self) -> int | None:
        """The memory the loaded models declare; None when one declares none (then no sum is an upper bound)."""
        sizes = [bundle.spec.resources.memory.size for bundle in self.bundles]
        if not all(sizes):
            return None
        return round(self.loaded_sum(parse_size(size) for size in sizes))


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
    """model.yaml's `resources` (summed over a repository's models, or the budget's largest): memory requested and
    capped alike, CPU requested (a CPU limit only throttles), GPUs as whole devices."""
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if target.cpus > 0:
        requests["cpu"] = cpu_quantity(target.cpus)
    if target.memory_bytes:
        requests["memory"] = limits["memory"] = quantity(target.memory_bytes)
    if target.gpus > 0:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = target.gpus
    return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


def container_ports(target: Target) -> dict[str, int]:
    """The ports the server listens on, by name: gRPC; metrics unless off; the plaintext health port when
    `health_port` is set (the probes' port: kubelet's gRPC probes speak no TLS), and always for a repository
    server, whose gRPC port may be busy loading and serving many models; HTTP only when `http` is `on`."""
    settings = target.settings
    ports = {"grpc": settings.port}
    if settings.metrics:
        ports["metrics"] = settings.metrics_port or METRICS_PORT
    if settings.health_port or target.repository is not None:
        ports["health"] = settings.health_port or HEALTH_PORT
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
    if target.repository is not None:
        env[env_var("repository")] = REPOSITORY_MOUNT
        if target.settings.default_model:  # where calls that name no model go (several models: none without it)
            env[env_var("default_model")] = target.settings.default_model
        if target.repository.max_loaded_models:
            env[env_var("max_loaded_models")] = str(target.repository.max_loaded_models)
    return env


def container(target: Target) -> Manifest:
    ports = container_ports(target)
    port = ports.get("health", ports["grpc"])  # the probes'
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
            "failureThreshold": math.ceil(target.startup_seconds / 2),
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
    labels = {**target.labels, **({"app.kubernetes.io/version": target.version} if target.version else {})}
    pod_metadata: Manifest = {"labels": dict(labels)}  # a copy: one object twice would be a YAML alias
    if target.repository is not None:
        pod_metadata["annotations"] = {MODELS_ANNOTATION: models_annotation(target)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": target.name, "labels": labels},
        "spec": {
            "replicas": target.replicas,
            "selector": {"matchLabels": target.labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": pod_metadata, "spec": pod_spec},
        },
    }


MODELS_ANNOTATION = "grpc-model/models"


def models_annotation(target: Target) -> str:
    """A repository pod's models, each a health service of its own name (SERVING while one of its versions can
    take work): `name:version` for each, the version its newest, the one its resources were counted from."""
    return ",".join(f"{slug(bundle.spec.name)}:{bundle.version}" for bundle in target.bundles)


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
