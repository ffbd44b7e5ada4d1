"""`grpc-model k8s`: manifests valid offline, consistent with each other, the image and model.yaml.

They are written here from the framework's own test model (the greeter) and from a GPU variant of it, never read
from deploy/kubernetes/: those follow the author's model, and `grpc-model k8s --check` is their test.

No cluster runs here: core objects are validated against the Kubernetes API schemas (kubernetes-validate,
strict: unknown fields are errors), custom resources against the schemas their projects publish
(kubernetes_schemas/), and every overlay is built with `kubectl kustomize`. test_kube_play.py runs the
Deployment under podman.
"""

import gzip
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from grpc_model.src.cli import app
from grpc_model.src.cli.deployment.kubernetes import PRE_STOP_SECONDS, Target, default_image
from grpc_model.src.cli.deployment.kubernetes_layout import render, write
from grpc_model.src.metadata import AssetBundle, load_bundle
from grpc_model.src.metadata.units import parse_size
from grpc_model.src.settings import ENV_PREFIX, PROJECT_ROOT, Settings, env_var
from grpc_model.tests.conftest import GREETER, TEST_VERSION, write_greeter_bundle

KUSTOMIZATIONS = ["base", "overlays/hpa", "overlays/keda", "overlays/kserve"]
KUBECTL = shutil.which("kubectl")
# gRPC probes are GA from 1.27; the newest schemas kubernetes-validate ships are checked too.
KUBERNETES_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
SCHEMAS = Path(__file__).parent / "kubernetes_schemas"
CUSTOM = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects_v1alpha1.json.gz",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors_v1.json.gz",
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_inferenceservices_v1beta1.json.gz",
}
Manifest = dict[str, Any]


def gpu_model(root: Path) -> Path:
    """The greeter's bundle asking for 2 GPUs, half a CPU, 1.5 GiB and 90 s per call."""
    spec = yaml.safe_load((GREETER / "model.yaml").read_text())
    spec["resources"] = {"memory": {"size": "1.5G"}, "cpu": {"count": 0.5}, "gpu": {"count": 2}}
    spec["timeout"]["run"] = "90s"
    (root / TEST_VERSION).mkdir(parents=True)
    (root / TEST_VERSION / "model.yaml").write_text(yaml.safe_dump(spec))
    return root


@pytest.fixture(scope="module")
def gpu(tmp_path_factory: pytest.TempPathFactory) -> AssetBundle:
    return load_bundle(gpu_model(tmp_path_factory.mktemp("bundle")))


@pytest.fixture(scope="module")
def gpu_manifests(tmp_path_factory: pytest.TempPathFactory, gpu: AssetBundle) -> Path:
    out = tmp_path_factory.mktemp("k8s")
    write(out, render(Target((gpu,), Settings(), default_image(gpu))))
    return out


@pytest.fixture(scope="module")
def greeter(tmp_path_factory: pytest.TempPathFactory) -> AssetBundle:
    return load_bundle(write_greeter_bundle(tmp_path_factory.mktemp("greeter")))


@pytest.fixture(scope="module")
def greeter_manifests(tmp_path_factory: pytest.TempPathFactory, greeter: AssetBundle) -> Path:
    out = tmp_path_factory.mktemp("k8s")
    write(out, render(Target((greeter,), Settings(), default_image(greeter))))
    return out


@pytest.fixture(params=["greeter", "gpu"])
def written(request: pytest.FixtureRequest) -> tuple[Path, AssetBundle]:
    """The manifests `grpc-model k8s` writes for a CPU model and for a GPU model, with their bundle."""
    return request.getfixturevalue(f"{request.param}_manifests"), request.getfixturevalue(request.param)


@pytest.fixture
def manifests(written: tuple[Path, AssetBundle]) -> Path:
    return written[0]


def build(directory: Path, kustomization: str) -> list[Manifest]:
    """The objects an overlay applies, as `kubectl kustomize` builds them."""
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: building the overlays (kubectl kustomize) needs it")
    return list(yaml.safe_load_all(_kustomize(str(directory / kustomization))))


def files_of(directory: Path, kustomization: str) -> list[Manifest]:
    """The objects in an overlay's own files, as written (the ConfigMap exists only once kustomize builds it)."""
    paths = sorted(path for path in (directory / kustomization).glob("*.yaml") if path.name != "kustomization.yaml")
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text())]


@cache
def _kustomize(path: str) -> str:
    assert KUBECTL is not None
    return subprocess.run([KUBECTL, "kustomize", path], capture_output=True, text=True, check=True, timeout=60).stdout


def one(objects: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def strict(schema: Any) -> Any:
    """A CRD schema as the API server applies it with `--validate=strict`: an unknown field is an error."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in result
        and "additionalProperties" not in result
        and not any(
            result.get(key) for key in ("x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource")
        )
    ):
        result["additionalProperties"] = False
    return result


@cache
def custom_validator(file: str) -> Any:
    schema = strict(json.loads(gzip.decompress((SCHEMAS / file).read_bytes())))
    validator = jsonschema.validators.validator_for(schema)
    return validator(schema)


def validate(manifest: Manifest) -> None:
    custom = CUSTOM.get((manifest["apiVersion"], manifest["kind"]))
    if custom is not None:
        custom_validator(custom).validate(manifest)
        return
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_object_of_every_overlay_validates(manifests: Path, kustomization: str) -> None:
    for manifest in files_of(manifests, kustomization):
        validate(manifest)
    if KUBECTL is not None:  # and what kustomize makes of them: the generated ConfigMap, the patches
        for manifest in build(manifests, kustomization):
            validate(manifest)


def test_a_field_the_schemas_do_not_know_is_an_error(manifests: Path) -> None:
    scaled = one(files_of(manifests, "overlays/keda"), "ScaledObject")
    scaled["spec"]["minReplicas"] = 1  # KEDA's field is minReplicaCount
    with pytest.raises(jsonschema.ValidationError, match="minReplicas"):
        validate(scaled)
    deployment = one(files_of(manifests, "base"), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["service_name"] = ""
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


def test_every_overlay_builds_with_kustomize(manifests: Path) -> None:
    kinds = {name: sorted(o["kind"] for o in build(manifests, name)) for name in KUSTOMIZATIONS}
    base = ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "Service"]
    assert kinds["base"] == base
    assert kinds["overlays/hpa"] == sorted([*base, "HorizontalPodAutoscaler"])
    assert kinds["overlays/keda"] == sorted([*base, "ScaledObject", "ServiceMonitor"])
    assert kinds["overlays/kserve"] == ["InferenceService"]
    for autoscaled in ("overlays/hpa", "overlays/keda"):  # the autoscaler owns the replica count
        assert "replicas" not in one(build(manifests, autoscaled), "Deployment")["spec"]


def test_the_parts_agree_with_each_other(manifests: Path) -> None:
    objects = build(manifests, "overlays/keda")
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    (container,) = pod["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    settings_map = one(objects, "ConfigMap")
    env = settings_map["data"]
    assert container["envFrom"] == [{"configMapRef": {"name": settings_map["metadata"]["name"]}}]
    settings = Settings(**{name.removeprefix(ENV_PREFIX).lower(): value for name, value in env.items()})
    assert ports["grpc"] == settings.port
    assert ports["metrics"] == settings.metrics_port == 9090
    assert "http" not in ports
    assert settings.http == "off"  # an image with the `http` group opens no port the manifests do not declare
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": ports["grpc"]}  # the health service's whole-server status
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    services = [o for o in objects if o["kind"] == "Service"]
    assert sorted(bool(s["spec"].get("clusterIP") == "None") for s in services) == [False, True]
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items()
        grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
        assert grpc_port["appProtocol"] == "kubernetes.io/h2c"
        assert all(p["targetPort"] in ports for p in service["spec"]["ports"])
    assert one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    monitor = one(objects, "ServiceMonitor")
    monitored = [
        s for s in services if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert any(p["name"] == "metrics" for s in monitored for p in s["spec"]["ports"])
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    scaled = one(objects, "ScaledObject")
    hpa = one(build(manifests, "overlays/hpa"), "HorizontalPodAutoscaler")
    for scaler in (scaled, hpa):
        assert scaler["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment["metadata"]["name"],
        }
    assert "grpc_model_queued_items" in scaled["spec"]["triggers"][0]["metadata"]["query"]
    isvc = one(build(manifests, "overlays/kserve"), "InferenceService")
    (predictor,) = isvc["spec"]["predictor"]["containers"]
    assert predictor["ports"] == [{"name": "h2c", "containerPort": settings.port, "protocol": "TCP"}]
    assert {e["name"]: e["value"] for e in predictor["env"]} == env
    assert predictor["resources"] == container["resources"]
    assert predictor["image"] == container["image"]


def test_a_draining_pod_finishes_its_calls_before_it_is_killed(written: tuple[Path, AssetBundle]) -> None:
    manifests, bundle = written
    objects = build(manifests, "base")
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = one(objects, "ConfigMap")["data"]
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = float(env[env_var("shutdown_grace_seconds")])
    assert pre_stop == PRE_STOP_SECONDS
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain  # SIGKILL never cuts the drain short
    assert drain >= (bundle.spec.timeout.run_seconds or 0)  # nor a call that takes the whole timeout.run
    assert env[env_var("shutdown")] == "disabled"  # only Kubernetes stops pods
    assert env[env_var("load_model_at_startup")] == "true"  # ready means loaded


def test_the_pod_runs_as_the_image_does(manifests: Path) -> None:
    pod = one(build(manifests, "base"), "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    uid = re.search(r"useradd .*--uid (\d+)", dockerfile)
    assert uid is not None
    assert pod["securityContext"]["runAsUser"] == int(uid[1])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])


def test_resources_come_from_model_yaml(gpu_manifests: Path) -> None:
    (container,) = one(build(gpu_manifests, "base"), "Deployment")["spec"]["template"]["spec"]["containers"]
    memory = parse_size("1.5G")
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": f"{memory // 1024**2}Mi", "nvidia.com/gpu": 2},
        "limits": {"memory": f"{memory // 1024**2}Mi", "nvidia.com/gpu": 2},
    }
    pod = one(build(gpu_manifests, "base"), "Deployment")["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    env = one(build(gpu_manifests, "base"), "ConfigMap")["data"]
    assert env[env_var("shutdown_grace_seconds")] == "90"  # timeout.run: a call may take that long


def test_a_cpu_only_model_asks_for_no_gpu(greeter: AssetBundle, greeter_manifests: Path) -> None:
    assert greeter.spec.resources.gpu.count == 0
    (container,) = one(build(greeter_manifests, "base"), "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])


def test_k8s_writes_the_files_and_check_names_a_stale_one(
    tmp_path: Path, greeter: AssetBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(env_var("asset_bundle_dir"), str(greeter.path.parent))
    runner = CliRunner()
    out = tmp_path / "k8s"
    written = runner.invoke(app, ["k8s", "--out", str(out), "--image", "example.org/m:1", "--replicas", "3"])
    assert written.exit_code == 0, written.output
    deployment = yaml.safe_load((out / "base/deployment.yaml").read_text())
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "example.org/m:1"
    check = ["k8s", "--out", str(out), "--image", "example.org/m:1", "--replicas", "3", "--check"]
    assert runner.invoke(app, check).exit_code == 0
    (out / "base/pdb.yaml").write_text("# edited by hand\n")
    stale = runner.invoke(app, check, env={"COLUMNS": "200"})
    assert stale.exit_code == 1
    assert "stale:" in stale.output
    assert "pdb.yaml" in stale.output
    assert "run `grpc-model k8s`" in stale.output


def test_ports_follow_the_settings_and_probes_use_the_plaintext_health_port(greeter: AssetBundle) -> None:
    """A TLS server's probes go to health_port (kubelet's gRPC probes speak no TLS); HTTP is declared when on."""
    settings = Settings(health_port=8086, metrics_port=9100, http="on", tls_cert="/tls/cert.pem", tls_key="/tls/k.pem")
    files = render(Target((greeter,), settings, "example.org/m:1"))
    (container,) = yaml.safe_load(files["base/deployment.yaml"])["spec"]["template"]["spec"]["containers"]
    lines = [line.split("=", 1) for line in files["base/settings.env"].splitlines() if not line.startswith("#")]
    env: dict[str, Any] = {name.removeprefix(ENV_PREFIX).lower(): value for name, value in lines}
    service_ports = {p["name"]: p["port"] for p in yaml.safe_load(files["base/service.yaml"])["spec"]["ports"]}

    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"grpc": 45000, "metrics": 9100, "health": 8086, "http": 8080}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": 8086}
    served = Settings(**env)
    assert (served.metrics_port, served.health_port, served.http, served.http_port) == (9100, 8086, "on", 8080)
    assert service_ports == {"grpc": 45000, "metrics": 9100, "http": 8080}

    quiet = render(Target((greeter,), Settings(metrics=False), "example.org/m:1"))
    (container,) = yaml.safe_load(quiet["base/deployment.yaml"])["spec"]["template"]["spec"]["containers"]
    assert [port["name"] for port in container["ports"]] == ["grpc"]
    assert "GRPC_MODEL_METRICS=false" in quiet["base/settings.env"]
