"""`scripts/integration_test.sh` as CI and users run it, and the engine script it relies on.

`scripts/dev.sh test` sets INTEGRATION_MODE=docker when a container engine answers or could be
set up, so there these tests build and run the real image; elsewhere the local-process path runs.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from subprocess import PIPE

import pytest

from grpc_model.src.metadata import load_bundle, load_test_cases
from grpc_model.src.settings import PROJECT_ROOT, env_var
from grpc_model.tests.conftest import TESTS, USER_MODEL_CLASS, copy_project

MODE = os.environ.get("INTEGRATION_MODE")
needs_engine = pytest.mark.skipif(
    MODE != "docker", reason="no container engine (scripts/dev.sh test provisions one where it can)"
)


STARTUP_SECONDS = 120  # the script's default: a bound on the server's start, generous on a loaded machine


def run_integration_script(project: Path, mode: str, model_class: str = USER_MODEL_CLASS) -> tuple[int, str, str]:
    with socket.socket() as probe:  # the script takes a concrete port, as users give it one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "PSC_MODEL_PORT": str(port),
        "STARTUP_SECONDS": str(STARTUP_SECONDS),
        "PYTHON": sys.executable,
        env_var("model_class"): model_class,  # the local path serves your model, as the image does
    }
    command = ["bash", str(project / "scripts/integration_test.sh")]
    with subprocess.Popen(  # from any directory
        command, cwd="/", env={**env, "INTEGRATION_MODE": mode}, stdout=PIPE, stderr=PIPE, text=True
    ) as script:
        try:
            stdout, stderr = script.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            script.terminate()  # not kill: its exit trap removes the containers it started
            stdout, stderr = script.communicate(timeout=120)
            pytest.fail(f"the integration script timed out:\n{stdout}{stderr}")
    return script.returncode, stdout, stderr


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def containers_and_images() -> str:
    """What the integration script names after itself; it must leave none of it behind."""
    containers = docker("ps", "--all", "--filter", "name=grpc-model-it-", "--quiet")
    return containers + docker("images", "--filter", "reference=grpc-model-it-*", "--quiet")


@pytest.mark.parametrize("mode", ["local", "docker"] if MODE == "docker" else ["local"])
def test_integration_script_passes(mode: str, request: pytest.FixtureRequest) -> None:
    if not load_test_cases(load_bundle(PROJECT_ROOT / "asset_bundle")):  # a model just started with init
        pytest.skip("the served bundle has no test cases yet (grpc-model test requires some)")
    if mode == "docker":  # the local path never calls the engine: it leaves it to the image tests meanwhile
        request.getfixturevalue("container_engine")
    before = containers_and_images() if mode == "docker" else ""
    returncode, stdout, stderr = run_integration_script(PROJECT_ROOT, mode)
    assert returncode == 0, stdout + stderr
    assert f"[integration] passed ({mode})" in stdout
    summaries = re.findall(r"^(\d+) of (\d+) test cases passed$", stdout, re.MULTILINE)
    assert len(summaries) == 2  # batch sizes 1 and 8
    assert all(passed == total and int(total) > 0 for passed, total in summaries)
    if mode == "docker":
        assert "image checks passed" in stdout
        assert "HEALTHCHECK command passed" in stdout
        assert re.search(r"docker stop \(SIGTERM\): exit 0 in \d+\.\d s", stdout)
        assert containers_and_images() == before
        layers = re.search(r"^\[integration\] build cache: (\S*)$", stdout, re.MULTILINE)
        assert layers is not None
        if layers[1]:  # where the engine records the layer under the image (podman, Docker's classic builder)
            docker("image", "inspect", layers[1])  # kept: the next build takes every stage from the cache


ONE_BUNDLE = "COPY --from=dependencies /bundle ./asset_bundle/"


# One image that breaks every rule checked from inside its container (one answer names them all, so one build checks
# each), and one that keeps them but whose server exits before it serves: (Dockerfile changes, errors to report).
BREAKS_EVERY_RULE = (
    [
        (ONE_BUNDLE, "COPY asset_bundle ./asset_bundle/"),
        ("USER model", "RUN mkdir model_lib/tests && ln -s /bin/true /usr/local/bin/gcc\nUSER root"),
    ],
    ["breaks 4 of its rules", "the container runs as root", "asset bundles", "holds tests", "holds build tools"],
)
SERVER_DIES = (
    [("USER model", f"ENV {env_var('model_class')}={TESTS}:Nope\nUSER model")],
    ["exited before it served"],
)


@needs_engine
@pytest.mark.usefixtures("container_engine")
@pytest.mark.parametrize(("changes", "errors"), [BREAKS_EVERY_RULE, SERVER_DIES], ids=["every-rule", "server-dies"])
def test_integration_script_rejects_an_image_that_breaks_the_rules(
    tmp_path: Path, changes: list[tuple[str, str]], errors: list[str]
) -> None:
    project = copy_project(tmp_path / "project")
    older = project / "asset_bundle/0.0.1"  # an older version the image must leave out
    shutil.copytree(load_bundle(project / "asset_bundle").path, older)
    (older / "model.yaml").write_text(
        re.sub(r"(?m)^version: .*$", "version: 0.0.1", (older / "model.yaml").read_text())
    )
    dockerfile = project / "Dockerfile"
    for change in changes:
        assert change[0] in dockerfile.read_text()
        dockerfile.write_text(dockerfile.read_text().replace(*change))
    before = containers_and_images()
    returncode, stdout, stderr = run_integration_script(project, "docker")
    assert returncode != 0
    for error in errors:
        assert error in stderr
    assert "[integration] passed" not in stdout
    assert containers_and_images() == before


def run_engine_script(fakes: Path, tools: dict[str, int]) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Runs scripts/container_engine.sh with `tools` replaced by fakes that exit with the given code."""
    calls = fakes / "calls"
    calls.touch()
    for tool, exit_code in tools.items():
        (fakes / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\nexit {exit_code}\n')
        (fakes / tool).chmod(0o755)
    result = subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts/container_engine.sh")],
        env={**os.environ, "PATH": f"{fakes}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, calls.read_text().splitlines()


def test_integration_script_stops_waiting_when_the_server_dies() -> None:
    started = time.monotonic()
    returncode, stdout, stderr = run_integration_script(PROJECT_ROOT, "local", model_class=f"{TESTS}:Nope")
    assert returncode != 0
    assert "has no class 'Nope'" in stderr
    assert "the server exited before it served" in stderr
    assert "[integration] passed" not in stdout
    assert time.monotonic() - started < STARTUP_SECONDS / 2  # well before the start-up limit it was given


def test_container_engine_script_leaves_a_working_docker_alone(tmp_path: Path) -> None:
    result, calls = run_engine_script(tmp_path, {"docker": 0, "apt-get": 0, "podman": 0})
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # nothing to export: the caller's docker already works
    assert calls == ["docker info"]


def test_container_engine_script_says_why_it_cannot_set_up_podman(tmp_path: Path) -> None:
    (tmp_path / "id").write_text("#!/bin/sh\necho 1000\n")  # not root
    (tmp_path / "id").chmod(0o755)
    result, calls = run_engine_script(tmp_path, {"docker": 1, "apt-get": 0, "podman": 0})
    assert result.returncode == 3
    assert "podman can only be set up here as root on Debian/Ubuntu" in result.stderr
    assert result.stdout == ""
    assert calls == ["docker info"]  # nothing installed, nothing started
