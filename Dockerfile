# The model's release image. Build: docker build -t my-model .
# Run:   docker run --rm --name my-model -p 127.0.0.1:45000:45000 my-model   (stop: docker stop -t 30 my-model)
#
# The image holds one model version: the newest asset_bundle/<x.y.z>/, or the one named with
# --build-arg MODEL_VERSION=x.y.z. Nothing here changes when you release a version.

# Stage 1: the locked runtime dependencies, installed into /venv by poetry.
FROM python:3.11-slim AS dependencies
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/poetry && /opt/poetry/bin/pip install poetry==2.5.1 && python -m venv --without-pip /venv
WORKDIR /build
COPY pyproject.toml poetry.lock ./
RUN VIRTUAL_ENV=/venv PATH=/venv/bin:$PATH /opt/poetry/bin/poetry sync --only main --no-root --no-interaction
# The served bundle, validated, alone in /bundle: a broken model.yaml or test case fails the build.
COPY grpc_model ./grpc_model
COPY model_lib ./model_lib
COPY asset_bundle ./asset_bundle
ARG MODEL_VERSION=""
RUN export GRPC_MODEL_MODEL_VERSION="$MODEL_VERSION" && /venv/bin/python -m grpc_model validate && \
    version=$(/venv/bin/python -m grpc_model version) && mkdir /bundle && cp -r "asset_bundle/$version" /bundle/

# Stage 2: the server, the model and one asset bundle; no poetry, no tests.
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 model
COPY --from=dependencies /venv /venv
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    GRPC_MODEL_LOAD_MODEL_AT_STARTUP=true
WORKDIR /app
COPY grpc_model ./grpc_model
COPY model_lib ./model_lib
COPY --from=dependencies /bundle ./asset_bundle/
USER model
EXPOSE 45000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD python -m grpc_model.src.model_client --health --host 127.0.0.1 --port "${PSC_MODEL_PORT:-45000}" --timeout 4
CMD ["python", "-m", "grpc_model.src.model_server"]
