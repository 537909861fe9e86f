# QIPO policy server images (docs/architecture.md, docs/deploy.md). Targets:
#   serve      (default) the serving image: service/ + ONNX Runtime, no torch, non-root, HEALTHCHECK
#   publisher  the serving image plus the demo artifact, for compose's one-shot "publish if empty" job
#   torch      build-only stage: torch, the train extra and the package (below demo-model and train)
#   demo-model build-only stage: trains and exports the small Pendulum demo policy with torch (CPU)
#   train      `qipo train` under torchrun: the Kubernetes training job's image (deploy/k8s/train)
# The GPU image is the same `serve` target on a CUDA base with onnxruntime-gpu:
#   docker build -t qipo-serve .
#   docker build --target serve --build-arg BASE_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04 \
#       --build-arg QIPO_EXTRA=gpu -t qipo-serve:gpu .
# No `# syntax=` line: the frontend built into the engine is used, so nothing is fetched before the build,
# and every stage builds with BuildKit and with the classic builder (which builds all stages above the
# target, so the torch stage sits below `serve`: pass `--target serve` there to skip it).
# Dependency layers depend on pyproject.toml only, so editing code does not reinstall packages.
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- base: Python >= 3.11 and the service user
FROM ${BASE_IMAGE} AS base
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# python:* images have Python; CUDA images (Ubuntu 24.04: Python 3.12) get it from the distribution.
# hadolint ignore=DL3008
RUN if ! python3 -c 'import venv, sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --system --gid 10001 qipo \
    && useradd --system --uid 10001 --gid qipo --home-dir /var/lib/qipo --create-home qipo \
    && mkdir -p /var/cache/qipo /var/lib/qipo/registry \
    && chown -R qipo:qipo /var/cache/qipo /var/lib/qipo

# ---------------------------------------------------------------- dependencies, then the package
FROM base AS build
# cpu → onnxruntime, gpu → onnxruntime-gpu (the pyproject extras).
ARG QIPO_EXTRA=cpu
WORKDIR /src
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Install the extra's dependencies against empty package stubs (and an empty README): this layer is cached
# until pyproject.toml or the client distribution changes. qipo-client (the wire contract the server
# imports) is not on an index: it is installed from clients/python in the same command.
COPY pyproject.toml ./
COPY clients/python/ clients/python/
# Versions come from pyproject.toml's ranges (pin them there or pass a constraints file), not this file.
# hadolint ignore=DL3013
RUN mkdir -p service training \
    && touch service/__init__.py training/__init__.py README.md \
    && pip install ./clients/python ".[${QIPO_EXTRA}]" \
    && pip uninstall -y qipo-serve \
    && rm -rf service training build ./*.egg-info README.md
COPY pyproject.toml README.md* ./
COPY service/ service/
RUN pip install --no-deps . && rm -rf build ./*.egg-info

# ---------------------------------------------------------------- serving image
FROM base AS serve
ARG QIPO_EXTRA=cpu
LABEL org.opencontainers.image.title="qipo-serve" \
      org.opencontainers.image.description="QIPO flow-policy server (ONNX Runtime, ${QIPO_EXTRA}, no torch)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    QIPO_HOST=0.0.0.0 \
    QIPO_PORT=8000 \
    QIPO_CACHE_DIR=/var/cache/qipo \
    QIPO_REGISTRY=/var/lib/qipo/registry
COPY --from=build /opt/venv /opt/venv
COPY deploy/healthcheck.py /usr/local/bin/qipo-healthcheck
USER 10001:10001
WORKDIR /var/lib/qipo
EXPOSE 8000
# Healthy = a verified model is loaded (GET /readyz); see deploy/healthcheck.py.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/bin/qipo-healthcheck", "/readyz"]
ENTRYPOINT ["qipo"]
CMD ["serve"]

# ---------------------------------------------------------------- torch + training (build-only base)
# What the demo model and the training image share: torch, the train extra and the package.
FROM ${PYTHON_IMAGE} AS torch
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# The CPU torch wheel: pass --build-arg PIP_EXTRA_INDEX_URL=<your CPU wheel index> to avoid a CUDA build.
ARG PIP_EXTRA_INDEX_URL=""
ARG TORCH_SPEC=torch==2.13.0
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml ./
COPY clients/python/ clients/python/
# Versions come from pyproject.toml's ranges (pin them there or pass a constraints file), not this file.
# hadolint ignore=DL3013
RUN mkdir -p service training \
    && touch service/__init__.py training/__init__.py README.md \
    && pip install "${TORCH_SPEC}" \
    && pip install ./clients/python '.[cpu,train]' \
    && pip uninstall -y qipo-serve \
    && rm -rf service training build ./*.egg-info README.md
COPY service/ service/
COPY training/ training/
COPY configs/ configs/
# An empty README for the package metadata, so editing the real one does not retrain the demo.
RUN touch README.md && pip install --no-deps .

# ---------------------------------------------------------------- demo model (torch, build-only)
FROM torch AS demo-model
# The same recipe as `make demo` (scripts/demo.sh): BC warm-up, then QIPO-OT from it, then export.
# DEMO_TRAIN_FLAGS: extra `qipo train` flags for both runs, e.g. a smaller budget on a busy machine
# ("--behavior-steps 300 --critic-steps 200 --improve-steps 100": a weaker demo policy, same pipeline).
# Declared here, not above, so changing it re-runs only this step.
ARG DEMO_TRAIN_FLAGS=""
RUN qipo data make pendulum --out /build/data --kinds mixed \
    && qipo train /build/data/pendulum/mixed-v0 --out /build/runs/bc --config configs/pendulum-demo.json \
        --algo bc --eval-episodes 0 --threads 2 ${DEMO_TRAIN_FLAGS} \
    && qipo train /build/data/pendulum/mixed-v0 --out /build/runs/qipo --config configs/pendulum-demo.json \
        --behavior-from /build/runs/bc --eval-episodes 10 --threads 2 ${DEMO_TRAIN_FLAGS} \
    && qipo export /build/runs/qipo --out /demo --name pendulum-qipo

# ---------------------------------------------------------------- one-shot publisher (compose)
FROM serve AS publisher
COPY --from=demo-model --chown=10001:10001 /demo /opt/qipo/demo
COPY --chown=10001:10001 deploy/publish-if-empty.sh /usr/local/bin/publish-if-empty
HEALTHCHECK NONE
ENTRYPOINT ["sh", "/usr/local/bin/publish-if-empty"]
CMD ["/opt/qipo/demo"]

# ---------------------------------------------------------------- training image (torchrun jobs)
# `qipo train` under torchrun for deploy/k8s/train: the torch stage, the job's entry point
# (deploy/train-job.sh), non-root. CPU nodes: pass the CPU wheel index as PIP_EXTRA_INDEX_URL; GPU nodes: a
# CUDA build of torch (PyPI's default Linux wheel), NCCL included:
#   docker build --target train --build-arg PIP_EXTRA_INDEX_URL=<CPU wheel index> -t qipo-train:0.1.0 .
#   docker build --target train -t qipo-train:0.1.0-gpu .
FROM torch AS train
ENV PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 qipo \
    && useradd --system --uid 10001 --gid qipo --home-dir /var/lib/qipo --create-home qipo
COPY deploy/train-job.sh /usr/local/bin/qipo-train-job
USER 10001:10001
WORKDIR /var/lib/qipo
ENTRYPOINT ["sh", "/usr/local/bin/qipo-train-job"]

# The last stage is what a plain `docker build .` produces: the serving image.
FROM serve
