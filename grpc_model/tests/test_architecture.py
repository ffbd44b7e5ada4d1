"""The import graph: servicer -> runtime -> wrapper, and nothing imports the servicer but the wiring."""

import ast
from pathlib import Path

import pytest

from grpc_model.src.settings import PROJECT_ROOT

SOURCE = PROJECT_ROOT / "grpc_model" / "src"


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def modules(package: str) -> list[Path]:
    return sorted((PROJECT_ROOT / package.replace(".", "/")).rglob("*.py"))


def imported(paths: list[Path], prefix: str) -> list[str]:
    return sorted({name for path in paths for name in imports_of(path) if name.startswith(prefix)})


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("grpc_model.src.runtime", "grpc"),  # the runtime knows nothing about the transport...
        ("grpc_model.src.runtime", "grpc_model.src.servicer"),
        ("grpc_model.src.runtime", "grpc_model.src.server"),
        ("grpc_model.src.metadata", "grpc_model.src.runtime"),
        ("grpc_model.src.metadata", "grpc"),
        ("grpc_model.src.runtime", "grpc_model.src.cli"),  # the command line sits on top of everything
        ("grpc_model.src.metadata", "grpc_model.src.cli"),
        ("grpc_model.src.security", "grpc_model.src.servicer"),  # security serves the wiring and the clients
        ("grpc_model.src.security", "grpc_model.src.server"),
        ("grpc_model.src.security", "grpc_model.src.cli"),
        ("grpc_model.src.security", "grpc_model.src.runtime"),
        ("model_lib", "grpc_model"),  # ...and the user's room nothing about the framework
    ],
)
def test_layers_do_not_import_upwards(package: str, forbidden: str) -> None:
    found = [
        name for name in imported(modules(package), forbidden) if name == forbidden or name.startswith(forbidden + ".")
    ]
    assert found == []


def importers_of(module: str) -> list[str]:
    """The framework's source files that import `module`."""
    return sorted(
        path.relative_to(PROJECT_ROOT).as_posix() for path in SOURCE.rglob("*.py") if module in imports_of(path)
    )


def test_only_the_wiring_imports_the_servicer() -> None:
    assert importers_of("grpc_model.src.servicer") == ["grpc_model/src/server.py"]


def test_only_the_entry_point_and_tests_import_the_wiring() -> None:
    assert importers_of("grpc_model.src.server") == ["grpc_model/src/model_server.py"]


def test_the_data_plane_knows_no_transport() -> None:
    """Every protocol front end calls inference.py, so it must not lean towards any one of them."""
    assert sorted(name for name in imports_of(SOURCE / "inference.py") if name.split(".")[0] == "grpc") == []
    assert "grpc_model.src.servicer" not in imports_of(SOURCE / "inference.py")
    limits = SOURCE / "security" / "limits.py"  # the budget, which the data plane holds requests against
    assert sorted(name for name in imports_of(limits) if name.split(".")[0] == "grpc") == []
