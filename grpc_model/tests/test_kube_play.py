"""The Deployment `grpc-model k8s` writes for the served model run as real containers with `podman kube play`,
where podman runs. (Written afresh into a temporary folder: deploy/kubernetes/ may lag behind the model.)

No Kubernetes cluster runs here; podman runs the Deployment's pod from the same YAML: the image, the
settings ConfigMap, the non-root user, the read-only root filesystem with its /tmp volume. The
served model's test cases go through it with `grpc-model test --server`, and stopping the pod
(SIGTERM) must drain it to exit 0. What podman does not honour is in docs/deploy.md.
"""

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from grpc_model.src.cli.deployment.kubernetes import Target, default_image
from grpc_model.src.cli.deployment.kubernetes_layout import render, write
from grpc_model.src.client import ModelClient
from grpc_model.src.metadata import load_bundle, load_test_cases
from grpc_model.src.settings import PROJECT_ROOT, Settings
from grpc_model.tests.conftest import PATIENCE_SECONDS, USER_MODEL_CLASS, container_engine_turn
from grpc_model.tests.test_integration import MODE, STARTUP_SECONDS
from grpc_model.tests.test_kubernetes import KUBECTL

SOCKET = Path("/run/podman/podman.sock")  # where scripts/container_engine.sh starts podman's service
PODMAN = shutil.which("podman")
RUN_ID = f"grpc-model-kube-{os.getpid()}"

pytestmark = [
    pytest.mark.skipif(
        MODE != "docker", reason="no container engine (scripts/dev.sh test provisions one where it can)"
    ),
    pytest.mark.skipif(
        PODMAN is None or not SOCKET.is_socket(),
        reason="podman kube play needs podman and its service (scripts/container_engine.sh starts it where "
        "Docker is missing; with Docker alone there is no kube play)",
    ),
    pytest.mark.skipif(
        KUBECTL is None, reason="kubectl is not installed: building the base (kubectl kustomize) needs it"
    ),
]


def podman(*args: str, seconds: float = 120) -> str:
    """podman through the service, so its settings (runc, cgroupfs: scripts/containers.conf) apply."""
    assert PODMAN is not None
    command = [PODMAN, "--url", f"unix://{SOCKET}", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Dockerfile's image, built once for this module (the build cache makes it quick after the first); the
    engine is this module's alone meanwhile, as for every image test."""
    tag = f"localhost/{RUN_ID}:test"
    with container_engine_turn(tmp_path_factory):
        # The format `docker build` gets from podman's Docker API: the image test_integration.py built is in the build
        # cache under that format's layers, so this build takes every layer from there.
        podman("build", "--format", "docker", "--tag", tag, str(PROJECT_ROOT), seconds=900)
        yield tag
        podman("rmi", "--force", "--no-prune", tag)  # the layers under it stay, as the build cache


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def for_podman(objects: list[dict[str, Any]], image: str, ports: dict[str, int]) -> list[dict[str, Any]]:
    """The base as podman can run it on a shared host: one replica, this run's image, names of its own, and
    each container port published on a free loopback port (podman publishes an unmapped port on every
    interface, at the same number)."""
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    deployment["metadata"]["name"] = RUN_ID
    deployment["spec"]["replicas"] = 1
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    container["image"] = image
    for port in container["ports"]:
        port.update(hostPort=ports[port["name"]], hostIP="127.0.0.1")
    for volume in pod["volumes"]:  # podman makes a named volume of an emptyDir: one per run
        for mount in container["volumeMounts"]:
            if mount["name"] == volume["name"]:
                mount["name"] = f"{RUN_ID}-{volume['name']}"
        volume["name"] = f"{RUN_ID}-{volume['name']}"
    return [o for o in objects if o["kind"] in ("Deployment", "ConfigMap")]  # podman ignores the rest


def test_the_deployment_serves_the_test_cases_under_podman(image: str, tmp_path: Path) -> None:
    bundle = load_bundle(Settings().asset_bundle_dir)
    write(tmp_path / "k8s", render(Target((bundle,), Settings(), default_image(bundle))))
    built = subprocess.run(
        [str(KUBECTL), "kustomize", str(tmp_path / "k8s/base")], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    ports = {"grpc": free_port(), "metrics": free_port()}
    objects = for_podman(list(yaml.safe_load_all(built)), image, ports)
    manifest = tmp_path / "kube.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    pod, container = f"{RUN_ID}-pod-0", f"{RUN_ID}-pod-0-model"
    target = f"127.0.0.1:{ports['grpc']}"
    try:
        podman("kube", "play", str(manifest))
        with ModelClient(target, timeout=10) as client:
            answer = client.wait_for_health("SERVING", STARTUP_SECONDS)
            assert answer == "SERVING", podman("logs", "--tail", "30", container)
        assert podman("exec", container, "id", "-u").strip() == "10001"
        read_only = podman(
            "exec", container, "sh", "-c", "touch /probe 2>/dev/null || echo read-only; touch /tmp/probe"
        )
        assert read_only.strip() == "read-only"  # the root filesystem refuses writes; /tmp takes them
        if load_test_cases(bundle):
            tested = subprocess.run(
                [sys.executable, "-m", "grpc_model", "test", "--server", target],
                cwd=PROJECT_ROOT,
                env={**os.environ, "GRPC_MODEL_MODEL_CLASS": USER_MODEL_CLASS, "COLUMNS": "200"},
                capture_output=True,
                text=True,
                timeout=10 * PATIENCE_SECONDS,
                check=False,
            )
            assert tested.returncode == 0, tested.stdout + tested.stderr
            assert f"PASS {target}: Status of {target}" in tested.stdout
        else:  # a model just started with `grpc-model init` has no test cases yet: its loaded Status stands in
            with ModelClient(target, timeout=PATIENCE_SECONDS) as client:
                assert client.status().status_code == 200
        podman("pod", "stop", "--time", "30", pod, seconds=60)  # SIGTERM: the server drains and exits 0
        assert podman("inspect", "--format", "{{.State.ExitCode}}", container).strip() == "0"
    finally:
        podman("kube", "down", str(manifest))
        deployment = next(o for o in objects if o["kind"] == "Deployment")
        for volume in deployment["spec"]["template"]["spec"]["volumes"]:
            podman("volume", "rm", "--force", volume["name"])
