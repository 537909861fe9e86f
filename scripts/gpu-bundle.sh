#!/usr/bin/env bash
# Build .gpubundle/ for scripts/gpu-check.sh on a CUDA machine that reaches no package registry: the
# onnxruntime-gpu wheel (CUDA 13) and the serving dependencies such an image lacks, for CPython $PYVER on
# x86-64, in one tar split into parts of $PART (so each part fits a size-limited copy) + bundle.sha256.
# The CUDA provider library (~280 MB) travels xz-compressed (~130 MB); gpu-check.sh unpacks it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
PART=${PART:-53M}
ORT=${ORT:-onnxruntime-gpu==1.31.1}
# What the serving install needs beyond a CUDA/PyTorch image (numpy, httpx, typer, rich, msgpack, tqdm,
# prometheus-client, uvloop and h5py are there); versions as pinned by this repo's own environment.
WHEELS=(fastapi opentelemetry-api starlette pydantic pydantic_core pydantic-settings python-dotenv
  typing-inspection annotated-types uvicorn httptools orjson redis tenacity swagger-ui-bundle-v2 gymnasium
  farama-notifications)
PIN=$(.venv/bin/pip freeze 2>/dev/null || true)
spec() { # name==version from the local venv, else the bare name
  local line
  line=$(grep -i -E "^${1//[-_]/[-_]}==" <<<"$PIN" | head -1 || true)
  echo "${line:-$1}"
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
get=(python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64)
"${get[@]}" -d "$work/ort" "$ORT"
specs=()
for w in "${WHEELS[@]}"; do specs+=("$(spec "$w")"); done
"${get[@]}" -d "$work/bundle/wheels" "${specs[@]}"
mkdir -p "$work/x"
(cd "$work/x" && unzip -q "$work"/ort/*.whl)
so=onnxruntime/capi/libonnxruntime_providers_cuda.so
tar -C "$work/x" --exclude="$so" --exclude='onnxruntime/capi/libonnxruntime_providers_tensorrt.so' \
  -cJf "$work/bundle/ort-rest.tar.xz" .
echo "compressing the CUDA provider (a few minutes)"
xz -T0 -6 -c "$work/x/$so" >"$work/bundle/ort-cuda.so.xz"
tar -C "$work/bundle" -cf "$work/bundle.tar" .
rm -rf .gpubundle
mkdir -p .gpubundle
split -b "$PART" -d -a 2 "$work/bundle.tar" .gpubundle/part-
(cd "$work" && sha256sum bundle.tar) >.gpubundle/bundle.sha256
# the training check's data as .npz (reading it needs no minari, which such an image lacks)
.venv/bin/qipo data make pendulum --out "$work/data" --kinds mixed
.venv/bin/python -c "import sys; from pathlib import Path; from training.data.dataset import load_dataset, save_npz
save_npz(load_dataset(sys.argv[1]), Path(sys.argv[2]))" "$work/data/pendulum/mixed-v0" .gpubundle/pendulum-mixed.npz
ls -la .gpubundle
