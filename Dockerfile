# syntax=docker/dockerfile:1
# llmd-operator image: the operator only (no torch).
#   docker build -t ghcr.io/llm-d/llmd-operator:0.1.0 --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
# The profiler image that spec.profiling's Job runs: the same image with the `profile` extra (PyPI's torch
# wheels carry their CUDA libraries; the node's NVIDIA driver comes in through the device plugin):
#   docker build -t ghcr.io/llm-d/llmd-operator-profiler:0.1.0 --build-arg EXTRAS=profile .

# ---- build: a wheel of the package, installed with its runtime dependencies into /opt/llmd ----
FROM python:3.11-slim-bookworm AS build
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml ./
COPY operator/ ./operator/
# tests/unit/test_dockerfile.py runs these same steps in a clean virtual environment.
# DL3013 (pin versions): what is installed is the wheel built one line above, with its pinned ranges.
# hadolint ignore=DL3013
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/llmd \
 && wheel="$(ls /wheels/*.whl)" \
 && pip --python /opt/llmd/bin/python install --no-cache-dir "${wheel}${EXTRAS:+[$EXTRAS]}" \
 && /opt/llmd/bin/llmd-operator --help >/dev/null

# ---- runtime: slim Python, the virtual environment, a non-root user ----
FROM python:3.11-slim-bookworm
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="llmd-operator" \
      org.opencontainers.image.description="Kubernetes operator that serves LLMs on GPU nodes at the least cost that holds their latency SLOs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/llm-d/llmd-operator" \
      org.opencontainers.image.url="https://github.com/llm-d/llmd-operator" \
      org.opencontainers.image.documentation="https://github.com/llm-d/llmd-operator/blob/main/docs/install.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="llm-d"
# A named user for uid 65532 (Python's getpass and Kopf look the user up).
RUN groupadd --gid 65532 llmd \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin llmd
COPY --from=build /opt/llmd /opt/llmd
ENV PATH=/opt/llmd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
WORKDIR /tmp
# 8080: Prometheus /metrics; 8081: /healthz (liveness and readiness).
EXPOSE 8080 8081
ENTRYPOINT ["llmd-operator", "run"]
