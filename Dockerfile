# syntax=docker/dockerfile:1
# The a2a-quiescence collector (sidecar and mesh collector). The image also
# carries the instrumentation and `opentelemetry-instrument`, so the Helm
# chart's example agent can run from it.
#
#   docker build -t a2a-quiescence:0.1.0 .
#   docker run --rm -p 4318:4318 -p 4317:4317 -p 9464:9464 a2a-quiescence:0.1.0
#
# The base is pinned to a patch release; pin it by digest as well
# (python:3.11.14-slim@sha256:...) where your registry policy asks for it.
ARG PYTHON_IMAGE=python:3.11.14-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the distribution is built from (no .venv, .git or .tools).
# README* may be absent: the glob keeps COPY from failing on it.
COPY pyproject.toml README* ./
COPY a2a_quiescence ./a2a_quiescence
COPY instrumentation ./instrumentation
COPY collector ./collector
COPY dashboards ./dashboards
RUN pip wheel --wheel-dir /wheels ".[collector]"

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
# `pip install .`, from the wheels built above; then drop them.
RUN pip install /wheels/*.whl && rm -rf /wheels \
    && groupadd --system --gid 10001 a2aq \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin a2aq
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /tmp
EXPOSE 4318 4317 9464
ENTRYPOINT ["a2a-quiescence", "collector"]
# In a container 127.0.0.1 is unreachable from outside: listen on every
# interface by default. The Helm chart passes its own arguments (the sidecar
# keeps OTLP on 127.0.0.1).
CMD ["--otlp-listen", "0.0.0.0:4318", "--otlp-grpc-listen", "0.0.0.0:4317", "--http-listen", "0.0.0.0:9464", "--allow-remote"]
