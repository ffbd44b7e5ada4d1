"""scripts/dev.sh's optional groups and extras: a command adds those it needs and never uninstalls another's.

Run in a copy of the project with a stand-in poetry that records its calls, so nothing is installed.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grpc_model.src.settings import PROJECT_ROOT
from grpc_model.tests.conftest import PATIENCE_SECONDS, copy_project

FAKE_POETRY = """#!/bin/sh
echo "$*" >>"$(dirname "$0")/calls"
if [ "$1" = --version ]; then echo "Poetry (version 2.5.1)"; fi
exit 0
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy with a stand-in poetry and its plugin, a stand-in grpc-model, and the groups `scripts/dev.sh test`
    installed."""
    project = copy_project(tmp_path / "project")
    for path, text in ((".tools/bin/poetry", FAKE_POETRY), (".venv/bin/grpc-model", "#!/bin/sh\necho ran $*\n")):
        (project / path).parent.mkdir(parents=True, exist_ok=True)
        (project / path).write_text(text)
        (project / path).chmod(0o755)
    (project / ".venv/.optional-groups").write_text("http,tracing,ray\n")
    # As if the plugin scripts/dev.sh installs beside poetry were installed already.
    site_packages = project / f".tools/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
    site_packages.mkdir(parents=True)
    shutil.copy(project / "scripts/poetry_plugin/grpc_model_poetry_plugin.py", site_packages)
    return project


def run(project: Path, *command: str) -> str:
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def synced(project: Path) -> list[str]:
    calls = (project / ".tools/bin/calls").read_text().splitlines()
    return [call for call in calls if call.startswith("sync")]


def test_the_digits_example_adds_its_groups_to_those_installed(project: Path) -> None:
    assert run(project, "bash", "examples/digits/run.sh", "version") == "ran version\n"
    # The package's extras go to poetry as extras, the examples' groups as groups.
    assert synced(project) == ["sync --quiet --with examples,examples-train --extras http tracing ray"]
    assert (project / ".venv/.optional-groups").read_text() == "http,tracing,ray,examples,examples-train\n"


def test_a_plain_command_keeps_the_groups_and_with_replaces_them(project: Path) -> None:
    run(project, "bash", "scripts/dev.sh", "version")
    run(project, "bash", "scripts/dev.sh", "install", "--add", "ray,bench")
    run(project, "bash", "scripts/dev.sh", "install", "--with", "")
    assert synced(project) == [
        "sync --quiet --extras http tracing ray",
        "sync --quiet --with bench --extras http tracing ray",
        "sync --quiet",
    ]
    assert not (project / ".venv/.optional-groups").exists()


def test_the_engine_script_stops_the_service_it_started_and_nothing_else(tmp_path: Path) -> None:
    """`scripts/dev.sh test` ends with `container_engine.sh --stop` when it started podman's service."""
    stop = ["bash", str(PROJECT_ROOT / "scripts/container_engine.sh"), "--stop"]
    env = {**os.environ, "GRPC_MODEL_ENGINE_CACHE": str(tmp_path)}
    with (
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "system", "service"]) as service,
        subprocess.Popen(["sleep", "600"]) as other,
    ):
        try:
            (tmp_path / "service.pid").write_text(f"{other.pid}\n")  # not the service: left alone
            subprocess.run(stop, env=env, check=True, timeout=60, capture_output=True)
            assert other.poll() is None
            (tmp_path / "service.pid").write_text(f"{service.pid}\n")
            subprocess.run(stop, env=env, check=True, timeout=60, capture_output=True)
            assert service.wait(timeout=PATIENCE_SECONDS) != 0  # ended by its signal
            assert not (tmp_path / "service.pid").exists()
        finally:
            service.kill()
            other.kill()


def test_the_test_command_writes_bytecode_and_keeps_mypys_cache_outside_the_checkout(
    project: Path, tmp_path: Path
) -> None:
    """Where PYTHONDONTWRITEBYTECODE is set, every process of the suite compiled all it imported again, and a fresh
    clone's mypy checked every library from nothing: the two slowest parts of a fresh clone's run (docs/testing.md)."""
    for tool in ("ruff", "mypy", "shellcheck", "pytest"):
        (project / ".venv/bin" / tool).write_text(
            '#!/bin/sh\necho "$(basename "$0") ${PYTHONDONTWRITEBYTECODE-unset} ${MYPY_CACHE_DIR-unset}" >>'
            f" {tmp_path / 'ran'}\n"
        )
        (project / ".venv/bin" / tool).chmod(0o755)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/apt-get").write_text("#!/bin/sh\nexit 1\n")  # never installs a browser from a test
    (tmp_path / "bin/apt-get").chmod(0o755)
    env = {name: value for name, value in os.environ.items() if name != "MYPY_CACHE_DIR"}
    env.update(PYTHON=sys.executable, INTEGRATION_MODE="local", PYTHONDONTWRITEBYTECODE="1")
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), PATH=f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}")
    command = ["bash", "scripts/dev.sh", "test"]
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    mypy_cache = tmp_path / "cache/grpc-model/mypy"
    assert (tmp_path / "ran").read_text().splitlines() == [
        f"{tool} unset {mypy_cache}" for tool in ("ruff", "ruff", "mypy", "shellcheck", "pytest")
    ]
