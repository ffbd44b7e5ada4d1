"""`grpc-model k8s --repository DIR`: a repository server's manifests, valid offline (the same checks as
test_kubernetes.py's: strict Kubernetes schemas, `kubectl kustomize`), their resources summed over the models or
capped by the budget, probes on the health port, and the image's Dockerfile putting the models where the settings
say.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from grpc_model.src.cli import app
from grpc_model.src.cli.deployment.kubernetes import MODELS_ANNOTATION
from grpc_model.src.cli.deployment.kubernetes_layout import render, write
from grpc_model.src.cli.deployment.kubernetes_repository import repository_target
from grpc_model.src.repository.layout import find_models
from grpc_model.src.settings import ENV_PREFIX, Settings, env_var
from grpc_model.tests.conftest import GREETER, TEST_VERSION
from grpc_model.tests.test_kubernetes import Manifest, build, files_of, one, validate

KUSTOMIZATIONS = ["base", "overlays/hpa", "overlays/keda"]
IMAGE = "example.org/fleet:1"
# folder: (model.yaml name, memory, CPUs, GPUs, timeout.run, timeout.status); "tabular" is a runtime model.
MODELS = {
    "greeter": ("Hello World", "512M", 1.0, 0, "20s", "30s"),
    "big": ("Big Model", "2G", 2.0, 1, "90s", "100s"),
    "tabular": ("Small Table", "256M", 0.5, 0, "5s", "10s"),
}


def write_repository(root: Path, models: Mapping[str, tuple[str, str | None, float, int, str, str]]) -> Path:
    """One folder per model, as `serve --repository` reads them: a wrapper package, or a runtime in model.yaml."""
    for folder, (name, memory, cpus, gpus, run, status) in models.items():
        spec = yaml.safe_load((GREETER / "model.yaml").read_text())
        spec["name"] = name
        spec["resources"] = {
            "cpu": {"count": cpus},
            "gpu": {"count": gpus},
            **({"memory": {"size": memory}} if memory else {}),
        }
        spec["timeout"] = {"run": run, "status": status}
        bundle = root / folder / "asset_bundle" / TEST_VERSION
        bundle.mkdir(parents=True)
        if folder == "tabular":
            (bundle / "model.onnx").write_bytes(b"")
            spec["inputs"] = {"input.csv": {"acceptedMediaTypes": ["text/csv"], "maxSize": "1M"}}
            spec["runtime"] = {"kind": "onnx", "file": "model.onnx"}
        else:
            (root / folder / "model_lib").mkdir()
        (bundle / "model.yaml").write_text(yaml.safe_dump(spec))
    return root


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("fleet"), MODELS)


def manifests_of(repository: Path, out: Path, budget: int = 0, settings: Settings | None = None) -> Path:
    write(out, render(repository_target(repository, settings or Settings(), IMAGE, 2, budget)))
    return out


@pytest.fixture(scope="module")
def manifests(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return manifests_of(repository, tmp_path_factory.mktemp("k8s"), budget=2)


def container_of(objects: list[Manifest]) -> Manifest:
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_object_of_every_overlay_validates(manifests: Path, kustomization: str) -> None:
    for manifest in files_of(manifests, kustomization):
        validate(manifest)
    for manifest in build(manifests, kustomization):
        validate(manifest)


def test_the_overlays_build_and_there_is_no_kserve_one(manifests: Path) -> None:
    base = ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "Service"]
    assert sorted(o["kind"] for o in build(manifests, "base")) == base
    assert sorted(o["kind"] for o in build(manifests, "overlays/keda")) == sorted(
        [*base, "ScaledObject", "ServiceMonitor"]
    )
    assert not (manifests / "overlays/kserve").exists()  # an InferenceService is one model


@pytest.mark.parametrize(
    ("budget", "requests"),
    [
        (0, {"cpu": "3500m", "memory": "2816Mi", "nvidia.com/gpu": 1}),  # every model: 0.5 + 1 + 2 CPUs
        (2, {"cpu": "3", "memory": "2560Mi", "nvidia.com/gpu": 1}),  # the two largest of each: 2G + 512M
        (1, {"cpu": "2", "memory": "2Gi", "nvidia.com/gpu": 1}),
        (5, {"cpu": "3500m", "memory": "2816Mi", "nvidia.com/gpu": 1}),  # a budget above the models: all of them
    ],
)
def test_resources_are_the_models_sum_or_the_budgets_largest(
    repository: Path, tmp_path: Path, budget: int, requests: dict[str, Any]
) -> None:
    objects = build(manifests_of(repository, tmp_path, budget), "base")
    assert container_of(objects)["resources"] == {
        "requests": requests,
        "limits": {"memory": requests["memory"], "nvidia.com/gpu": 1},
    }
    env = one(objects, "ConfigMap")["data"]
    assert env.get(env_var("max_loaded_models")) == (str(budget) if budget else None)  # the server keeps to it


def test_a_model_without_a_memory_size_leaves_memory_unbounded(tmp_path: Path) -> None:
    models = {**MODELS, "greeter": ("Hello World", None, 1.0, 0, "20s", "30s")}
    files = render(repository_target(write_repository(tmp_path / "r", models), Settings(), IMAGE, 2, 0))
    (container,) = yaml.safe_load(files["base/deployment.yaml"])["spec"]["template"]["spec"]["containers"]
    assert "memory" not in str(container["resources"])  # a sum missing one model would be a limit too low


def test_probes_watch_the_health_port_and_each_model_is_noted(repository: Path, manifests: Path) -> None:
    objects = build(manifests, "overlays/keda")
    container = container_of(objects)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = one(objects, "ConfigMap")["data"]
    assert ports["health"] == int(env[env_var("health_port")]) == 8086
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": ports["health"]}  # the whole server's status
    pod = one(objects, "Deployment")["spec"]["template"]
    noted = dict(entry.split(":") for entry in pod["metadata"]["annotations"][MODELS_ANNOTATION].split(","))
    assert noted == {folder.name: folder.versions[-1] for folder in find_models(repository)}
    assert "app.kubernetes.io/version" not in pod["metadata"]["labels"]  # versions come and go in one pod
    assert env[env_var("repository")] == "/models"
    assert env[env_var("shutdown_grace_seconds")] == "90"  # the longest timeout.run among the models
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 2 * (100 + 30)  # the budget's two slowest loads


def test_the_settings_are_a_repository_servers(repository: Path) -> None:
    files = render(repository_target(repository, Settings(default_model="big-model"), IMAGE, 2, 0))
    lines = [line.split("=", 1) for line in files["base/settings.env"].splitlines() if not line.startswith("#")]
    env: dict[str, Any] = {name.removeprefix(ENV_PREFIX).lower(): value for name, value in lines}
    served = Settings(**env)
    assert (served.repository, served.default_model, served.health_port) == ("/models", "big-model", 8086)
    assert served.load_model_at_startup  # every model loaded before the pod is ready


def test_the_image_holds_the_models_where_the_settings_look(manifests: Path) -> None:
    dockerfile = (manifests / "image/Dockerfile").read_text()
    env = dict(line.split("=", 1) for line in (manifests / "base/settings.env").read_text().splitlines()[1:])
    assert "ARG BASE\nFROM ${BASE}\nCOPY . /models/\n" in dockerfile
    assert f"ENV {env_var('repository')}={env[env_var('repository')]}\n" in dockerfile
    assert "POETRY_EXTRAS=onnx" in dockerfile  # the runtime model's extra, which the base image must hold
    assert f"-t {IMAGE} " in dockerfile


def test_k8s_repository_writes_checks_and_refuses_what_it_cannot_write(repository: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "k8s"
    args = ["k8s", "--repository", str(repository), "--image", IMAGE, "--out", str(out), "--max-loaded-models", "2"]
    written = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert written.exit_code == 0, written.output
    assert (out / "image/Dockerfile").is_file()
    assert runner.invoke(app, [*args, "--check"]).exit_code == 0
    (out / "base/settings.env").write_text("# edited\n")
    stale = runner.invoke(app, [*args, "--check"], env={"COLUMNS": "200"})
    assert stale.exit_code == 1
    assert f"run `grpc-model k8s --repository {repository}`" in stale.output

    no_image = runner.invoke(app, ["k8s", "--repository", str(repository), "--out", str(out)])
    assert no_image.exit_code == 2
    assert "--repository needs --image" in no_image.output
    no_repository = runner.invoke(app, ["k8s", "--max-loaded-models", "2", "--out", str(out)])
    assert no_repository.exit_code == 2
    assert "add --repository" in no_repository.output

    broken = write_repository(tmp_path / "broken", {"greeter": MODELS["greeter"]})
    (broken / "empty").mkdir()
    refused = runner.invoke(app, ["k8s", "--repository", str(broken), "--image", IMAGE, "--out", str(tmp_path / "b")])
    assert refused.exit_code == 1
    assert "empty/: no asset_bundle/<x.y.z>/model.yaml" in refused.output
    assert not (tmp_path / "b").exists()
