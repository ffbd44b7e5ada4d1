"""One served version: the package, the bundle, model.yaml, pyproject.toml and the Dockerfile agree."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import grpc_model
from grpc_model.src.metadata import load_bundle, load_test_cases
from grpc_model.src.settings import PROJECT_ROOT

VERSIONED_FILES = ["grpc_model/__init__.py", "pyproject.toml", "Dockerfile"]


def test_every_place_names_the_served_version() -> None:
    version = grpc_model.__version__
    assert load_bundle(PROJECT_ROOT / "asset_bundle", version).version == version
    assert re.search(rf'^version = "{re.escape(version)}"$', (PROJECT_ROOT / "pyproject.toml").read_text(), re.M)
    assert re.search(rf"^ARG MODEL_VERSION={re.escape(version)}$", (PROJECT_ROOT / "Dockerfile").read_text(), re.M)


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    for name in VERSIONED_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / name, tmp_path / name)
    shutil.copytree(PROJECT_ROOT / "asset_bundle", tmp_path / "asset_bundle")
    return tmp_path


def new_version(root: Path, version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "scripts/new_version.py"), version, "--root", str(root)],
        capture_output=True,
        text=True,
    )


NEXT = f"{int(grpc_model.__version__.split('.')[0]) + 1}.0.0"  # a version no project has yet


def test_new_version_moves_every_place(project_copy: Path) -> None:
    old = grpc_model.__version__
    result = new_version(project_copy, NEXT)

    assert result.returncode == 0, result.stderr
    bundle = load_bundle(project_copy / "asset_bundle", NEXT)  # also checks model.yaml's version
    assert len(load_test_cases(bundle)) == len(load_test_cases(load_bundle(PROJECT_ROOT / "asset_bundle", old)))
    assert f'__version__ = "{NEXT}"' in (project_copy / "grpc_model/__init__.py").read_text()
    assert f'version = "{NEXT}"' in (project_copy / "pyproject.toml").read_text()
    assert f"ARG MODEL_VERSION={NEXT}" in (project_copy / "Dockerfile").read_text()
    assert (project_copy / "asset_bundle" / old / "model.yaml").read_text() == (
        PROJECT_ROOT / "asset_bundle" / old / "model.yaml"
    ).read_text()
    old_lines = (PROJECT_ROOT / "asset_bundle" / old / "model.yaml").read_text().splitlines()
    new_lines = (project_copy / "asset_bundle" / NEXT / "model.yaml").read_text().splitlines()
    assert [line for line in old_lines if line.lstrip().startswith("#")] == [
        line for line in new_lines if line.lstrip().startswith("#")
    ]  # comments kept


@pytest.mark.parametrize(
    ("version", "message"), [("1.0", "not a version of three"), (grpc_model.__version__, "already exists")]
)
def test_new_version_refuses_bad_versions(project_copy: Path, version: str, message: str) -> None:
    result = new_version(project_copy, version)
    assert result.returncode != 0
    assert message in result.stderr
    assert f'__version__ = "{NEXT}"' not in (project_copy / "grpc_model/__init__.py").read_text()
