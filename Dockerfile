# The model's release image. Build: docker build -t my-model .
# Run:   docker run --rm --name my-model -p 127.0.0.1:45000:45000 my-model   (stop: docker stop -t 30 my-model)
#
# The served version: `scripts/new_version.py` keeps this in step with grpc_model/__init__.py.
ARG MODEL_VERSION=0.1.0

# Stage 1: the locked runtime dependencies, installed into /venv by poetry.
FROM python:3.11-slim AS dependencies
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/poetry && /opt/poetry/bin/pip install poetry==2.5.1 && python -m venv --without-pip /venv
WORKDIR /build
COPY pyproject.toml poetry.lock ./
RUN VIRTUAL_ENV=/venv PATH=/venv/bin:$PATH /opt/poetry/bin/poetry sync --only main --no-root --no-interaction

# Stage 2: the server, the model and one asset bundle; no poetry, no tests.
FROM python:3.11-slim
ARG MODEL_VERSION
RUN useradd --create-home --uid 10001 model
COPY --from=dependencies /venv /venv
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    GRPC_MODEL_LOAD_MODEL_AT_STARTUP=true
WORKDIR /app
COPY grpc_model ./grpc_model
COPY model_lib ./model_lib
COPY asset_bundle/${MODEL_VERSION} ./asset_bundle/${MODEL_VERSION}/
USER model
EXPOSE 45000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD python -m grpc_model.src.model_client --health --host 127.0.0.1 --port "${PSC_MODEL_PORT:-45000}" --timeout 4
CMD ["python", "-m", "grpc_model.src.model_server"]
