# syntax=docker/dockerfile:1.7
# QIPO policy server images (docs/architecture.md, "Data walk"). Targets:
#   serve      (default) CPU serving image: service/ + onnxruntime, no torch, non-root, HEALTHCHECK
#   serve-gpu  CUDA runtime + cuDNN base with onnxruntime-gpu (`.[gpu]`), same entrypoint
#   publisher  the serving image plus the demo artifact, for compose's one-shot "publish if empty" job
#   demo-model build-only stage: trains and exports the small Pendulum demo policy with torch (CPU)
# Dependency layers depend on pyproject.toml only, so editing code does not reinstall packages.
#   docker build -t qipo-serve .                      docker build --target serve-gpu -t qipo-serve:gpu .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------- CPU: dependencies, then the package
FROM ${PYTHON_IMAGE} AS cpu-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Install the dependencies of '.[cpu]' against empty package stubs: this layer is cached until
# pyproject.toml changes. README.md is optional here (setuptools only needs it when it exists).
COPY pyproject.toml README.md* ./
# Versions come from pyproject.toml's ranges (pin them there or pass a constraints file), not this file.
# hadolint ignore=DL3013
RUN mkdir -p service training \
    && touch service/__init__.py training/__init__.py \
    && pip install '.[cpu]' \
    && pip uninstall -y qipo-serve \
    && rm -rf service training build ./*.egg-info
COPY service/ service/
RUN pip install --no-deps . && rm -rf build ./*.egg-info

# ---------------------------------------------------------------- CPU serving image
FROM ${PYTHON_IMAGE} AS serve
LABEL org.opencontainers.image.title="qipo-serve" \
      org.opencontainers.image.description="QIPO flow-policy server (ONNX Runtime, CPU, no torch)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    QIPO_HOST=0.0.0.0 \
    QIPO_PORT=8000 \
    QIPO_CACHE_DIR=/var/cache/qipo \
    QIPO_REGISTRY=/var/lib/qipo/registry
RUN groupadd --system --gid 10001 qipo \
    && useradd --system --uid 10001 --gid qipo --home-dir /var/lib/qipo --create-home qipo \
    && mkdir -p /var/cache/qipo /var/lib/qipo/registry \
    && chown -R qipo:qipo /var/cache/qipo /var/lib/qipo
COPY --from=cpu-build /opt/venv /opt/venv
COPY deploy/healthcheck.py /usr/local/bin/qipo-healthcheck
USER 10001:10001
WORKDIR /var/lib/qipo
EXPOSE 8000
# Ready means a verified model is loaded (GET /readyz); see deploy/healthcheck.py.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/bin/qipo-healthcheck", "/readyz"]
ENTRYPOINT ["qipo"]
CMD ["serve"]

# ---------------------------------------------------------------- GPU: CUDA runtime + onnxruntime-gpu
FROM ${CUDA_IMAGE} AS gpu-base
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Ubuntu 24.04 ships Python 3.12 (the package needs >= 3.11); versions follow the CUDA base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

FROM gpu-base AS gpu-build
WORKDIR /src
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md* ./
# Versions come from pyproject.toml's ranges (pin them there or pass a constraints file), not this file.
# hadolint ignore=DL3013
RUN mkdir -p service training \
    && touch service/__init__.py training/__init__.py \
    && pip install '.[gpu]' \
    && pip uninstall -y qipo-serve \
    && rm -rf service training build ./*.egg-info
COPY service/ service/
RUN pip install --no-deps . && rm -rf build ./*.egg-info

FROM gpu-base AS serve-gpu
LABEL org.opencontainers.image.title="qipo-serve-gpu" \
      org.opencontainers.image.description="QIPO flow-policy server (ONNX Runtime CUDA provider)"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    QIPO_HOST=0.0.0.0 \
    QIPO_PORT=8000 \
    QIPO_CACHE_DIR=/var/cache/qipo \
    QIPO_REGISTRY=/var/lib/qipo/registry \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN groupadd --system --gid 10001 qipo \
    && useradd --system --uid 10001 --gid qipo --home-dir /var/lib/qipo --create-home qipo \
    && mkdir -p /var/cache/qipo /var/lib/qipo/registry \
    && chown -R qipo:qipo /var/cache/qipo /var/lib/qipo
COPY --from=gpu-build /opt/venv /opt/venv
COPY deploy/healthcheck.py /usr/local/bin/qipo-healthcheck
USER 10001:10001
WORKDIR /var/lib/qipo
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python3", "/usr/local/bin/qipo-healthcheck", "/readyz"]
ENTRYPOINT ["qipo"]
CMD ["serve"]

# ---------------------------------------------------------------- demo model (torch, build-only)
FROM ${PYTHON_IMAGE} AS demo-model
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# The CPU torch wheel: pass --build-arg PIP_EXTRA_INDEX_URL=<your CPU wheel index> to avoid a CUDA build.
ARG PIP_EXTRA_INDEX_URL=""
ARG TORCH_SPEC=torch==2.13.0
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md* ./
# Versions come from pyproject.toml's ranges (pin them there or pass a constraints file), not this file.
# hadolint ignore=DL3013
RUN mkdir -p service training \
    && touch service/__init__.py training/__init__.py \
    && pip install "${TORCH_SPEC}" \
    && pip install '.[cpu,train]' \
    && pip uninstall -y qipo-serve \
    && rm -rf service training build ./*.egg-info
COPY service/ service/
COPY training/ training/
COPY configs/ configs/
# The same recipe as `make demo` (scripts/demo.sh): BC warm-up, then QIPO-OT from it, then export.
RUN pip install --no-deps . \
    && qipo data make pendulum --out /build/data --kinds mixed \
    && qipo train /build/data/pendulum/mixed-v0 --out /build/runs/bc --config configs/pendulum-demo.json \
        --algo bc --eval-episodes 0 --threads 2 \
    && qipo train /build/data/pendulum/mixed-v0 --out /build/runs/qipo --config configs/pendulum-demo.json \
        --behavior-from /build/runs/bc --eval-episodes 10 --threads 2 \
    && qipo export /build/runs/qipo --out /demo --name pendulum-qipo

# ---------------------------------------------------------------- one-shot publisher (compose)
FROM serve AS publisher
COPY --from=demo-model --chown=10001:10001 /demo /opt/qipo/demo
COPY --chown=10001:10001 deploy/publish-if-empty.sh /usr/local/bin/publish-if-empty
HEALTHCHECK NONE
ENTRYPOINT ["sh", "/usr/local/bin/publish-if-empty"]
CMD ["/opt/qipo/demo"]

# The last stage is what a plain `docker build .` produces: the CPU serving image.
FROM serve
