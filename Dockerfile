# syntax=docker/dockerfile:1
# TokenFactory operator image (see docs/deploy.md):
#   docker build -t REGISTRY/tokenfactory-operator:0.1.0 .
# Two stages: the first builds a virtual environment with the operator package and its runtime
# dependencies only (kopf, lightkube, pydantic, prometheus-client, httpx, PyYAML: no extras, so no
# simulator/demo/benchmark dependencies such as matplotlib, rich or cryptography), the
# second copies only that environment onto a clean base and runs as a non-root user (65532), with
# bytecode precompiled so the container works on a read-only root filesystem.
# The base is pinned by tag; pin it by digest too (python:3.11-slim@sha256:...) for reproducible builds.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/tokenfactory
COPY pyproject.toml README.md ./
COPY operator/tokenfactory ./operator/tokenfactory
RUN /opt/tokenfactory/bin/pip install --no-compile . \
 && /opt/tokenfactory/bin/python -m compileall -q -j 0 /opt/tokenfactory/lib \
 && /opt/tokenfactory/bin/tokenfactory --version \
 && /opt/tokenfactory/bin/tokenfactory run --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="tokenfactory-operator" \
      org.opencontainers.image.description="TokenFactory: vLLM on GPU node pools with live cost per million tokens" \
      org.opencontainers.image.licenses="Apache-2.0"
# A passwd entry for uid 65532: kopf derives its identity from the user name (getpass.getuser()).
RUN groupadd --system --gid 65532 tokenfactory \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin tokenfactory
COPY --from=build /opt/tokenfactory /opt/tokenfactory
ENV PATH=/opt/tokenfactory/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    USER=tokenfactory
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["tokenfactory"]
CMD ["run", "--metrics-port", "8080", "--health-port", "8081", "--log-format", "json"]
