# The model's release image. Build: grpc-model build   (or: docker build -t my-model .)
# Run:   docker run --rm --name my-model -p 127.0.0.1:45000:45000 my-model   (stop: docker stop -t 30 my-model)
#
# The image holds one model version: the newest asset_bundle/<x.y.z>/, or the one named with
# --build-arg MODEL_VERSION=x.y.z. Nothing here changes when you release a version.
#
# Another model kept in its own directory (examples/digits/: a package and an asset_bundle/)
# builds from this same file with build arguments, e.g. the digits example:
#   docker build --build-arg MODEL_DIR=examples/digits --build-arg POETRY_GROUPS=examples \
#                --build-arg MODEL_CLASS=digits_model.model -t digits .
# With the defaults the image is the one described above: model_lib/, asset_bundle/, main dependencies only.
# HTTP (the browser page, the multipart endpoint, OpenAPI on port 8080; docs/http.md) needs the `http` extra:
#   docker build --build-arg POETRY_EXTRAS=http -t my-model .     (digits: add --build-arg POETRY_EXTRAS=http)
# Without it the image serves gRPC only. POETRY_EXTRAS takes the package's extras (http, tracing, ray, ...),
# POETRY_GROUPS the repository's dependency groups (examples).

# Stage 1: the locked runtime dependencies, installed into /venv by poetry.
FROM python:3.11-slim AS dependencies
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/poetry && /opt/poetry/bin/pip install poetry==2.5.1 && \
    python -m venv --without-pip /venv
WORKDIR /build
COPY pyproject.toml poetry.lock ./
# Optional dependency groups (e.g. examples) and extras (e.g. http,tracing) the model needs besides the main ones.
ARG POETRY_GROUPS=""
ARG POETRY_EXTRAS=""
# --compile: the server runs with PYTHONDONTWRITEBYTECODE and may not write /venv, so without bytecode made here every
# start compiled every module it imports again (1.3 s more CPU before health says SERVING, docs/benchmarks.md).
RUN VIRTUAL_ENV=/venv PATH=/venv/bin:$PATH /opt/poetry/bin/poetry sync --only "main${POETRY_GROUPS:+,$POETRY_GROUPS}" \
    --extras "$(echo "$POETRY_EXTRAS" | tr , ' ')" --no-root --no-interaction --compile
# The served bundle, validated, alone in /bundle: a broken model.yaml or test case fails the build.
COPY grpc_model ./grpc_model
COPY model_lib ./model_lib
COPY asset_bundle ./asset_bundle
COPY examples ./examples
# MODEL_DIR's asset_bundle/ is served; unless it is the project itself, its Python packages
# (directories with an __init__.py) go into the image beside the framework.
ARG MODEL_DIR=.
ARG MODEL_VERSION=""
# A bundle whose model.yaml names a runtime (docs/runtimes.md) gets that runtime's extra (sklearn, xgboost,
# lightgbm or onnx) added to POETRY_EXTRAS', and nothing else.
RUN export GRPC_MODEL_MODEL_VERSION="$MODEL_VERSION" GRPC_MODEL_ASSET_BUNDLE_DIR="$MODEL_DIR/asset_bundle" && \
    /venv/bin/python -m grpc_model validate && version=$(/venv/bin/python -m grpc_model version) && \
    runtime_extra=$(/venv/bin/python -m grpc_model.src.runtimes) && \
    if [ -n "$runtime_extra" ]; then VIRTUAL_ENV=/venv PATH=/venv/bin:$PATH /opt/poetry/bin/poetry sync \
        --only "main${POETRY_GROUPS:+,$POETRY_GROUPS}" --extras "$(echo "$POETRY_EXTRAS" | tr , ' ') $runtime_extra" \
        --no-root --no-interaction --compile; fi && \
    mkdir /bundle /packages && cp -r "$MODEL_DIR/asset_bundle/$version" /bundle/ && \
    if [ "$MODEL_DIR" != . ]; then for init in "$MODEL_DIR"/*/__init__.py; do cp -r "${init%/__init__.py}" /packages/; done; fi

# Stage 2: the server, the model and one asset bundle; no poetry, no tests.
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 model
# The standard library's bytecode, for the reason given at --compile above. A file that does not compile (a test's of
# the standard library...) is left as it is: bytecode only saves start-up time. First, as it depends on nothing of the
# project: every later build, whatever changed, takes this layer from the build cache.
RUN python -c "import compileall, sysconfig; compileall.compile_dir(sysconfig.get_path('stdlib'), quiet=2)"
COPY --from=dependencies /venv /venv
# The served module: by default model_lib.src.model, whose one model class is found by the server.
ARG MODEL_CLASS=model_lib.src.model
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    GRPC_MODEL_LOAD_MODEL_AT_STARTUP=true GRPC_MODEL_MODEL_CLASS=$MODEL_CLASS
WORKDIR /app
COPY grpc_model ./grpc_model
COPY model_lib ./model_lib
COPY --from=dependencies /packages ./
# The framework's and the model's bytecode; before the bundle, so a new bundle version (or model.yaml) rebuilds only
# the layers from here on.
RUN python -c "import compileall; compileall.compile_dir('/app', quiet=2)"
COPY --from=dependencies /bundle ./asset_bundle/
USER model
EXPOSE 45000
# HTTP, served when the image has the `http` group (see the top of this file)
EXPOSE 8080
EXPOSE 9090
# --local: the server these GRPC_MODEL_ variables describe: its plaintext health_port if set, else
# its port, with TLS from GRPC_MODEL_CLIENT_TLS_* when the port speaks TLS (docs/operations.md).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD python -m grpc_model.src.model_client --health --local --timeout 4
CMD ["python", "-m", "grpc_model.src.model_server"]
