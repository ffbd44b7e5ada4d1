"""What users run first: the README's serve command, and the Dockerfile's rules as text (they hold even where no
container engine runs; test_integration.py checks the built image where one does)."""

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from grpc_model.src.metadata import load_bundle, load_test_cases
from grpc_model.src.settings import PROJECT_ROOT, Settings, env_var
from grpc_model.tests.conftest import PATIENCE_SECONDS, USER_MODEL_CLASS, ServerProcess, start

DOCKERFILE = (PROJECT_ROOT / "Dockerfile").read_text()


def test_the_readme_serve_command_serves_your_model(processes: list[ServerProcess]) -> None:
    assert "scripts/dev.sh serve" in (PROJECT_ROOT / "README.md").read_text()
    bundle = load_bundle(PROJECT_ROOT / "asset_bundle")
    cases = load_test_cases(bundle)  # none yet: test_functional.py says to add some
    server = start(
        processes,
        command=["bash", str(PROJECT_ROOT / "scripts/dev.sh"), "serve"],
        env={env_var("model_class"): USER_MODEL_CLASS, env_var("asset_bundle_dir"): str(bundle.path.parent)},
    )
    # dev.sh installs before it serves (poetry check and sync): over 20 s on a loaded 2-vCPU machine.
    with server.client(seconds=3 * PATIENCE_SECONDS) as client:
        assert client.status().model_info.model_name == bundle.spec.name
        if cases:
            assert client.run([cases[0].inputs]).outputs[0].success
        client.shutdown()
    assert server.wait() == 0


def test_the_image_serves_what_model_lib_and_the_bundles_select() -> None:
    # No model class or version in the Dockerfile: naming a class or releasing a version changes no framework file.
    # The served module is a build argument (for examples/), by default the one the server itself defaults to.
    assert re.findall(r"^ARG MODEL_CLASS.*$", DOCKERFILE, re.MULTILINE) == [
        f"ARG MODEL_CLASS={Settings.model_fields['model_class'].default}"
    ]
    assert ":" not in Settings.model_fields["model_class"].default  # a module: its one model class is served
    assert re.findall(r"^ARG MODEL_VERSION.*$", DOCKERFILE, re.MULTILINE) == ['ARG MODEL_VERSION=""']  # the newest
    assert Settings.model_fields["model_class"].default == "model_lib.src.model"


def test_the_image_runs_as_a_non_root_user() -> None:
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.MULTILINE)
    assert users
    assert users[-1] not in ("root", "0")


def test_the_image_holds_only_the_served_bundle_version() -> None:
    final_stage = DOCKERFILE.rsplit("\nFROM ", 1)[1]
    copies = re.findall(r"^COPY (?:--from=\S+ )?(\S+) (\S+)", final_stage, re.MULTILINE)
    assert ("/bundle", "./asset_bundle/") in copies  # the one version the build stage chose and validated
    assert not [source for source, _ in copies if source.startswith("asset_bundle")]  # never the whole directory


def test_a_new_bundle_or_model_rebuilds_only_the_images_last_layers() -> None:
    """The build cache keeps every layer before the first that changed: releasing a version (or each broken image
    test_integration.py builds) reruns no bytecode compilation, and a new model only the framework's and its own."""
    final_stage = DOCKERFILE.rsplit("\nFROM ", 1)[1]
    before_project, _ = final_stage.split("\nCOPY ", 1)
    assert "compileall.compile_dir(sysconfig.get_path('stdlib')" in before_project
    after_bundle = final_stage.split("\nCOPY --from=dependencies /bundle ./asset_bundle/\n", 1)[1]
    assert not re.findall(r"^(?:RUN|COPY) .*$", after_bundle, re.MULTILINE)


def test_the_image_exposes_the_port_and_checks_grpc_health() -> None:
    assert re.search(r"^EXPOSE 45000$", DOCKERFILE, re.MULTILINE)
    assert re.search(r"^EXPOSE 8080$", DOCKERFILE, re.MULTILINE)  # HTTP, with the http extra (docs/http.md)
    assert re.search(r"^HEALTHCHECK .*\n?.*grpc_model\.src\.model_client --health", DOCKERFILE, re.MULTILINE)
    assert 'CMD ["python", "-m", "grpc_model.src.model_server"]' in DOCKERFILE


def test_the_build_context_leaves_out_tests_and_local_environments() -> None:
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored  # deny by default, then name what the image needs
    assert "**/tests/" in ignored
    assert not any(line.startswith("!") and (".venv" in line or ".tools" in line) for line in ignored)


def test_the_templates_own_pins_leave_an_authors_common_libraries_unbounded() -> None:
    """`poetry add numpy pandas scikit-learn` in the template resolves beside every extra and group the framework
    declares only if none bounds those libraries from above (the examples' `numpy <2.5` once made it fail). The
    project's own dependencies are left out: that is where `poetry add` writes the author's, with the author's
    bounds (`numpy (>=2.4.6,<3.0.0)`), and the framework's tests pass whatever the author adds."""
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    requirements = [
        Requirement(text) for extra in pyproject["project"]["optional-dependencies"].values() for text in extra
    ]
    common = ("numpy", "pandas", "scikit-learn", "torch")
    for group in pyproject["tool"]["poetry"]["group"].values():  # poetry's constraints: `>=2.1`, `^5.1`, a table
        for name, constraint in group["dependencies"].items():
            version = constraint if isinstance(constraint, str) else constraint.get("version", "*")
            if name in common:
                requirements.append(Requirement(name if version == "*" else f"{name}{version}"))
    named = [requirement for requirement in requirements if requirement.name in common]
    assert named  # the examples and the runtimes' extras name some
    for requirement in named:
        assert all(spec.operator in (">=", ">", "!=") for spec in requirement.specifier), str(requirement)


def test_poetry_add_of_an_authors_common_libraries_resolves_in_the_template(tmp_path: Path) -> None:
    """README step 3 in a fresh clone: `.tools/bin/poetry add numpy pandas scikit-learn`. numpy's newest release
    needs Python 3.12 and the template supports 3.11, which Poetry alone answers with a failed lock (it writes `^` of
    the newest release whatever that release's Python); the plugin scripts/dev.sh installs beside it
    (scripts/poetry_plugin/) takes the newest release every supported Python can install. Resolved against the
    package index, as `scripts/dev.sh install` is."""
    poetry = PROJECT_ROOT / ".tools/bin/poetry"
    if not poetry.is_file():
        pytest.skip("no .tools/bin/poetry: `scripts/dev.sh install` installs it with its plugin")
    for name in ("pyproject.toml", "poetry.lock", "README.md"):
        shutil.copy(PROJECT_ROOT / name, tmp_path / name)
    added = ("numpy", "pandas", "scikit-learn")
    done = subprocess.run(
        [str(poetry), "add", *added, "--lock", "--no-interaction"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "POETRY_VIRTUALENVS_CREATE": "false"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    pyproject = tomllib.loads((tmp_path / "pyproject.toml").read_text())
    requirements = {Requirement(text).name: Requirement(text) for text in pyproject["project"]["dependencies"]}
    oldest_python = pyproject["project"]["requires-python"].split(",")[0].removeprefix(">=")  # >=3.11,<4.0
    locked = tomllib.loads((tmp_path / "poetry.lock").read_text())["package"]
    for name in added:
        # Each added with a lower bound that the project's oldest Python can install, and locked for it.
        installable = [
            package
            for package in locked
            if package["name"] == name
            and requirements[name].specifier.contains(package["version"])
            and SpecifierSet(package["python-versions"]).contains(oldest_python)
        ]
        assert installable, f"{name}: {requirements[name]} has no locked release for Python {oldest_python}"
