"""The import graph: front ends (servicer, v2, web) -> registry -> data plane -> runtime -> wrapper; the wiring joins
them."""

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
        ("grpc_model.src.web", "grpc_model.src.servicer"),  # front ends are siblings: HTTP knows no gRPC
        ("grpc_model.src.web", "grpc_model.src.server"),
        ("grpc_model.src.web", "grpc"),
        ("grpc_model.src.runtime", "grpc_model.src.web"),
        ("grpc_model.src.metadata", "grpc_model.src.web"),
        ("grpc_model.src.observability", "grpc"),  # called from every layer, so it leans on none
        ("grpc_model.src.observability", "grpc_model"),
        ("grpc_model.src.security", "grpc_model.src.servicer"),  # security serves the wiring and the clients
        ("grpc_model.src.security", "grpc_model.src.server"),
        ("grpc_model.src.security", "grpc_model.src.cli"),
        ("grpc_model.src.security", "grpc_model.src.runtime"),
        ("grpc_model.src.observability", "grpc_model.src.runtime"),  # every layer reports into it, so it sits below
        ("grpc_model.src.observability", "grpc_model.src.servicer"),
        ("grpc_model.src.observability", "grpc_model.src.server"),
        ("grpc_model.src.runtimes", "grpc"),  # the runtimes are wrappers the framework ships: below the runtime...
        ("grpc_model.src.runtimes", "grpc_model.src.inference"),
        ("grpc_model.src.runtimes", "grpc_model.src.servicer"),
        ("grpc_model.src.runtimes", "grpc_model.src.server"),
        ("grpc_model.src.runtimes", "grpc_model.src.v2"),
        ("grpc_model.src.runtimes", "grpc_model.src.web"),
        ("grpc_model.src.runtimes", "grpc_model.src.cli"),
        ("grpc_model.src.runtime", "grpc_model.src.runtimes"),  # ...which loads them by path, as a user's wrapper
        ("grpc_model.src.metadata", "grpc_model.src.runtimes"),
        ("grpc_model.src.v2", "grpc_model.src.runtimes"),  # front ends see a runtime's tensors via the data plane
        ("grpc_model.src.web", "grpc_model.src.runtimes"),
        ("grpc_model.src.ray_serve", "grpc_model.src.runtimes"),
        ("grpc_model.src.repository", "grpc"),  # front ends -> registry -> data plane -> runtime
        ("grpc_model.src.repository", "grpc_model.src.servicer"),
        ("grpc_model.src.repository", "grpc_model.src.server"),
        ("grpc_model.src.repository", "grpc_model.src.v2"),
        ("grpc_model.src.repository", "grpc_model.src.web"),
        ("grpc_model.src.repository", "grpc_model.src.ray_serve"),
        ("grpc_model.src.repository", "grpc_model.src.cli"),
        ("grpc_model.src.runtime", "grpc_model.src.repository"),
        ("grpc_model.src.runtimes", "grpc_model.src.repository"),
        ("grpc_model.src.metadata", "grpc_model.src.repository"),
        ("grpc_model.src.observability", "grpc_model.src.repository"),
        ("grpc_model.src.security", "grpc_model.src.repository"),
    ],
)
def test_layers_do_not_import_upwards(package: str, forbidden: str) -> None:
    found = [
        name for name in imported(modules(package), forbidden) if name == forbidden or name.startswith(forbidden + ".")
    ]
    assert found == []


def test_the_model_sees_only_the_public_contract() -> None:
    # The user's room knows the framework only by its public wrapper module, which ships in the package: a model
    # project that depends on the package sees nothing else, and the template's model must run there too.
    assert set(imported(modules("model_lib"), "grpc_model")) <= {"grpc_model.wrapper"}


def test_the_framework_never_imports_the_authors_package() -> None:
    # The wheel ships no model_lib: an import of it works in the template and breaks in every installed project.
    # (Generated text that names it, such as init's unit-test template, is a string, not an import.)
    assert imported(modules("grpc_model"), "model_lib") == []


def test_the_public_contract_imports_nothing_of_the_framework() -> None:
    assert imported([PROJECT_ROOT / "grpc_model" / "wrapper.py"], "grpc_model") == []


def importers_of(module: str) -> list[str]:
    """The framework's source files that import `module`."""
    return sorted(
        path.relative_to(PROJECT_ROOT).as_posix() for path in SOURCE.rglob("*.py") if module in imports_of(path)
    )


def test_only_the_wiring_imports_the_servicer() -> None:
    assert importers_of("grpc_model.src.servicer") == ["grpc_model/src/server.py"]


def test_only_the_wiring_imports_the_http_front_end() -> None:
    importers = {
        path.relative_to(PROJECT_ROOT).as_posix()
        for path in SOURCE.rglob("*.py")
        if "web" not in path.relative_to(SOURCE).parts
        and any(name.split(".")[:3] == ["grpc_model", "src", "web"] for name in imports_of(path))
    }
    assert importers == {"grpc_model/src/server.py"}


def test_front_ends_do_not_import_each_other() -> None:
    """The Ray Serve adapter and the grpc.aio servicer share the data plane and the protocol's answers only."""
    ray_serve = modules("grpc_model.src.ray_serve")
    assert imported(ray_serve, "grpc_model.src.serv") == []  # neither the servicer nor the wiring
    assert imported([SOURCE / "servicer.py", SOURCE / "server.py"], "grpc_model.src.ray_serve") == []


def test_only_the_command_line_and_ray_itself_import_the_ray_adapter() -> None:
    """Ray is an optional group: nothing on the default path may import it."""
    assert importers_of("grpc_model.src.ray_serve") == ["grpc_model/src/cli/deployment/commands.py"]
    outside = [path for path in SOURCE.rglob("*.py") if "ray_serve" not in path.parts]
    assert [name for name in imported(outside, "ray") if name == "ray" or name.startswith("ray.")] == []


def test_only_the_entry_point_and_tests_import_the_wiring() -> None:
    assert importers_of("grpc_model.src.server") == ["grpc_model/src/model_server.py"]


def test_the_data_plane_knows_no_transport() -> None:
    """Every protocol front end calls inference.py, so it must not lean towards any one of them."""
    assert sorted(name for name in imports_of(SOURCE / "inference.py") if name.split(".")[0] == "grpc") == []
    assert "grpc_model.src.servicer" not in imports_of(SOURCE / "inference.py")
    limits = SOURCE / "security" / "limits.py"  # the budget, which the data plane holds requests against
    assert sorted(name for name in imports_of(limits) if name.split(".")[0] == "grpc") == []
    web_stack = {"fastapi", "starlette", "uvicorn", "grpc_model"}
    assert {name for name in imports_of(SOURCE / "inference.py") if name.split(".")[0] in web_stack} <= {
        "grpc_model.src.metadata",
        "grpc_model.src.observability",
        "grpc_model.src.observability.metrics",
        "grpc_model.src.runtime",
        "grpc_model.src.runtimes",
        "grpc_model.src.security.limits",
        "grpc_model.src.settings",
        "grpc_model.src.validation",
    }


def test_only_the_runtimes_import_their_libraries() -> None:
    """Each library is an optional group: nothing else may import one, nor numpy (the default install has none)."""
    libraries = ("numpy", "sklearn", "joblib", "xgboost", "lightgbm", "onnxruntime", "pandas")
    outside = [path for path in SOURCE.rglob("*.py") if "runtimes" not in path.parts]
    assert [name for name in imported(outside, "") if name.split(".")[0] in libraries] == []
    assert "grpc_model.src.runtimes.tabular" not in imports_of(SOURCE / "runtimes" / "__init__.py")


def test_servicer_imports_no_runtime() -> None:
    assert "grpc_model.src.runtimes" not in imports_of(SOURCE / "servicer.py")


def test_only_observability_imports_opentelemetry() -> None:
    """The `tracing` group is optional: the rest of the framework reaches it only through observability/tracing.py."""
    outside = [
        path.relative_to(PROJECT_ROOT).as_posix()
        for path in SOURCE.rglob("*.py")
        if "observability" not in path.parts and any(name.startswith("opentelemetry") for name in imports_of(path))
    ]
    assert outside == []


V2_MAY_IMPORT = (
    "grpc_model.src.v2",
    "grpc_model.src.repository.registry",
    "grpc_model.src.quoting",
    "grpc_model.src.inference",
    "grpc_model.src.metadata",
    "grpc_model.src.runtime",
    "grpc_model.src.grpc_methods",
    "grpc_model.src.observability",
    "grpc_model.src.auto_generated.v2",
)


def test_the_v2_front_end_leans_on_the_data_plane_only() -> None:
    """No sibling front end (the ModzyModel servicer, the web page, ...) and not the wiring: the V2 service and
    routes reach the model through the registry and inference.py alone."""
    framework = imported(modules("grpc_model.src.v2"), "grpc_model")
    assert [name for name in framework if not name.startswith(V2_MAY_IMPORT)] == []


def test_front_ends_reach_models_through_the_registry() -> None:
    """Front ends -> registry -> data plane -> runtime: the gRPC front ends resolve a call's model in the registry
    (which the wiring builds), and the data plane knows nothing of the models beside its own."""
    for front_end in (SOURCE / "servicer.py", SOURCE / "v2" / "protocol.py"):
        assert imported([front_end], "grpc_model.src.repository") == ["grpc_model.src.repository.registry"]
    assert imported([SOURCE / "inference.py", SOURCE / "validation.py"], "grpc_model.src.repository") == []
    assert importers_of("grpc_model.src.repository.endpoints") == ["grpc_model/src/server.py"]


def test_only_the_wiring_and_the_v2_package_import_the_v2_front_end() -> None:
    importers = {
        path.relative_to(PROJECT_ROOT).as_posix()
        for path in SOURCE.rglob("*.py")
        if any(name.startswith("grpc_model.src.v2") for name in imports_of(path))
    }
    assert {path for path in importers if not path.startswith("grpc_model/src/v2/")} == {"grpc_model/src/server.py"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each module of the framework's source -> the framework's modules it imports. Every import counts, those
    inside functions and under TYPE_CHECKING too: a cycle there is still two modules that each need the other.
    `from package import name` is an import of package.name when that is a module, else of the package."""
    paths = {module_name(path): path for path in SOURCE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = {f"{node.module}.{alias.name}" for alias in node.names}
                targets.update(names & paths.keys() or {node.module})
        graph[module] = targets & paths.keys()
    return graph


def cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A shortest chain of imports from `start` back to itself, or None."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        reached = []
        for module in frontier:
            for target in sorted(graph[module]):
                if target == start:
                    chain = [module]
                    while chain[-1] != start:
                        chain.append(parents[chain[-1]])
                    return [*reversed(chain), start]
                if target not in parents:
                    parents[target] = module
                    reached.append(target)
        frontier = reached
    return None


def test_no_module_imports_itself_back() -> None:
    """A cycle makes the import order matter and keeps two modules from being understood (or moved) apart."""
    graph = import_graph()
    cycles = [cycle_through(graph, module) for module in sorted(graph)]
    assert sorted({" -> ".join(cycle) for cycle in cycles if cycle is not None and cycle[0] == min(cycle)}) == []


CLI = "grpc_model.src.cli"
CLI_ROOMS = ("author", "scoring", "deployment", "calls")  # a package each, by what their commands are for
CLI_SHARED = (f"{CLI}.output", f"{CLI}.client_options")  # what every room's commands share


def cli_room(module: str) -> str | None:
    """The room of a module of the command line (`author` for grpc_model.src.cli.author.scaffold), else None."""
    parts = module.split(".")
    return parts[3] if module.startswith(CLI + ".") and len(parts) > 3 and parts[3] in CLI_ROOMS else None


def test_the_command_line_rooms_import_only_their_own_room_and_the_shared_modules() -> None:
    """app.py registers every room's commands; a room never reaches into another, so each can change alone."""
    graph = import_graph()
    assert {module.split(".")[3] for module in graph if module.startswith(CLI + ".") and module.count(".") > 3} == set(
        CLI_ROOMS
    )
    crossings = []
    for module, targets in sorted(graph.items()):
        if module in (CLI, f"{CLI}.app") or not module.startswith(CLI + "."):
            continue
        room = cli_room(module)
        if room is None and module not in CLI_SHARED:
            crossings.append(f"{module} is neither in a room nor shared")
        crossings += [
            f"{module} -> {target}"
            for target in sorted(targets)
            if (target == CLI or target.startswith(CLI + "."))
            and target not in CLI_SHARED
            and (room is None or cli_room(target) != room)
        ]
    assert crossings == []
