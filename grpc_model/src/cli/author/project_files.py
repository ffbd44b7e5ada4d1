"""The text of the files `grpc-model new` writes around the model: the project's build, image, CI and README.

The model's own files (wrapper skeleton, unit test, asset bundle) come from the same templates as `grpc-model
init`'s; these are the ones a project needs only when it lives outside the template repository.
"""

POETRY_VERSION = "2.5.1"  # the version scripts/dev.sh pins for the template repository


def pyproject(project_name: str, description: str, requirement: str, wheel: str | None) -> str:
    source = (
        f"""
# Until grpc-model is on your package index, the project takes it from the wheel in wheels/ (commit it: the image
# builds from it). Once it is published, delete these two lines and run `poetry lock`.
[tool.poetry.dependencies]
grpc-model = {{ path = "wheels/{wheel}" }}
"""
        if wheel
        else ""
    )
    return f"""[project]
name = "{project_name}"
version = "0.1.0"
description = "{description}"
requires-python = ">=3.11,<4.0"
# The framework, within one release series (a minor release before 1.0, a major one after, may change the wrapper
# contract or model.yaml: docs/package.md). Add your model's own dependencies with `poetry add <package>`.
dependencies = ["{requirement}"]

[tool.poetry]
package-mode = false  # the model is served from this directory, not installed
{source}
# What `grpc-model test` runs the unit tests with; never in the image.
[tool.poetry.group.dev.dependencies]
pytest = ">=8.0"

[tool.pytest.ini_options]
testpaths = ["model_lib/tests"]
addopts = "-ra --strict-markers"

# PyPI through its simple index (PEP 503/658): works behind mirrors that do not serve the JSON API.
[[tool.poetry.source]]
name = "pypi-simple"
url = "https://pypi.org/simple/"
priority = "primary"
"""


def dockerfile() -> str:
    return f"""# The model's release image: `grpc-model build` (or: docker build -t my-model .).
# Run: docker run --rm --name my-model -p 127.0.0.1:45000:45000 my-model   (stop: docker stop -t 30 my-model)
#
# The image holds one model version: the newest asset_bundle/<x.y.z>/, or the one named with
# --build-arg MODEL_VERSION=x.y.z. Nothing here changes when you release a version. The framework's extras
# in pyproject.toml's dependency (a runtime's library, `http` for the page and REST beside gRPC) are locked
# with it, so the image installs them: nothing to change here either.

# Stage 1: the locked dependencies (the framework among them), installed into /venv by poetry; the served
# bundle, validated, alone in /bundle: a broken model.yaml or test case fails the build.
FROM python:3.11-slim AS dependencies
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/poetry && /opt/poetry/bin/pip install poetry=={POETRY_VERSION} && \\
    python -m venv --without-pip /venv
WORKDIR /build
COPY pyproject.toml poetry.lock ./
COPY wheels ./wheels
# --compile: the server runs with PYTHONDONTWRITEBYTECODE, so bytecode not made here is made again at every start.
RUN VIRTUAL_ENV=/venv PATH=/venv/bin:$PATH /opt/poetry/bin/poetry sync --only main --no-root --no-interaction --compile
COPY model_lib ./model_lib
COPY asset_bundle ./asset_bundle
ARG MODEL_VERSION=""
RUN export GRPC_MODEL_MODEL_VERSION="$MODEL_VERSION" && \\
    /venv/bin/python -m grpc_model validate && version=$(/venv/bin/python -m grpc_model version) && \\
    mkdir /bundle && cp -r "asset_bundle/$version" /bundle/

# Stage 2: the server, the model and one asset bundle; no poetry, no tests.
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 model
COPY --from=dependencies /venv /venv
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 GRPC_MODEL_LOAD_MODEL_AT_STARTUP=true
WORKDIR /app
COPY model_lib ./model_lib
COPY --from=dependencies /bundle ./asset_bundle/
USER model
EXPOSE 45000
EXPOSE 8080
EXPOSE 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \\
    CMD python -m grpc_model.src.model_client --health --local --timeout 4
CMD ["python", "-m", "grpc_model.src.model_server"]
"""


DOCKERIGNORE = """# Only what the image needs; never the tests or local environments.
*
!pyproject.toml
!poetry.lock
!wheels/
!model_lib/
!asset_bundle/
**/tests/
**/__pycache__/
**/*.py[cod]
"""

POETRY_TOML = """# The project's environment is .venv/ here, where the README's commands find it.
[virtualenvs]
in-project = true
"""

GITIGNORE = """.venv/
__pycache__/
*.py[cod]
.pytest_cache/
.mypy_cache/
.ruff_cache/
dist/
"""

CI_RUN = """#!/usr/bin/env bash
# CI: the model's environment from the lock, then every check of `grpc-model test` (unit tests, the bundle, every
# test case through the wrapper), then the image where a container engine answers or can be set up.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export POETRY_VIRTUALENVS_IN_PROJECT=true POETRY_NO_INTERACTION=1
poetry check --lock
poetry sync
.venv/bin/grpc-model test --junit results.xml
.venv/bin/grpc-model test --image
"""

WHEELS_NOTE = """# wheels/

Wheels the project installs from a file rather than a package index (pyproject.toml names them). The image's
build copies this folder, so keep it, even empty.
"""


def readme(name: str, version: str, first_input: str) -> str:
    return f"""# {name}

A model served over gRPC (the ModzyModel protocol, V2 beside it) by the `grpc-model` framework, which this
project depends on as a package. Your files: `model_lib/` (the wrapper in `model_lib/src/model.py`, its tests
in `model_lib/tests/`) and `asset_bundle/{version}/` (`model.yaml` and the functional test cases).

```bash
poetry install                   # .venv/ with the locked framework and pytest
source .venv/bin/activate        # or call .venv/bin/grpc-model
grpc-model validate              # model.yaml and the test cases
grpc-model test                  # unit tests, then every test case through the wrapper
grpc-model serve                 # port 45000; in another terminal:
grpc-model status                # Status and health
grpc-model call --input {first_input}=FILE
grpc-model test --server localhost:45000
grpc-model test --image          # builds the Dockerfile, runs it, runs every test case against it
grpc-model build                 # the release image, tagged <name>:<version>
grpc-model new-version 0.2.0     # the next release's bundle
grpc-model k8s                   # Kubernetes manifests in deploy/kubernetes/
```

Add a dependency with `poetry add <package>` (it changes `pyproject.toml` and `poetry.lock`). CI runs `.ci/run`.
A plain Poetry takes a package's newest release whatever Python it needs: if the lock then fails with "numpy requires
Python >=3.12", give a lower bound that your Python can install (`poetry add "numpy>=2.1"`). The template repository's
Poetry (`.tools/bin/poetry`) has a plugin that picks such a release: `poetry self add` its `scripts/poetry_plugin`.
A feature of the framework (`http`, `tracing`, `ray`, a runtime's `sklearn`, `xgboost`, `lightgbm`, `onnx`) is
an extra: name it in the `grpc-model` dependency in `pyproject.toml`, e.g. `"grpc-model[http] (>=...)"`, then
`poetry lock && poetry install`; the image gets it too.
Upgrading the framework: widen the `grpc-model` range in `pyproject.toml` (or replace the wheel in `wheels/`),
then `poetry lock` and `grpc-model test`.
"""
