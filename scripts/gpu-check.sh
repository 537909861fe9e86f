#!/usr/bin/env bash
# GPU check on a CUDA machine: ONNX Runtime's CUDA provider + IO binding behind /act (real uvicorn), the
# sampler's actions/s up to batch 4096, and a short `qipo train --device cuda`. Writes gpu-check.{json,md}
# under $OUT (default build/gpu-check); a few minutes in all. docs/gpu.md says how to read it.
#
# Needs python3 with a CUDA torch. The serving dependencies and onnxruntime-gpu come either from the
# environment (`pip install -e '.[gpu,train]'`) or, on a machine without a package registry, from an offline
# bundle in .gpubundle/: parts of one tar holding onnxruntime-gpu (its CUDA provider as xz) and the wheels,
# with bundle.sha256 beside them (`scripts/gpu-bundle.sh` builds it). Installs go to $GPU_SITE only.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu-check}
PY=${PYTHON:-python3}
SITE=${GPU_SITE:-/tmp/qipo-gpu-site}
BUNDLE=.gpubundle
mkdir -p "$OUT"

if [ -f "$BUNDLE/bundle.sha256" ]; then
  echo "== offline bundle: $(ls "$BUNDLE"/part-* | wc -l) parts"
  unpack=$(mktemp -d)
  cat "$BUNDLE"/part-* >"$unpack/bundle.tar"
  if ! (cd "$unpack" && sha256sum -c --quiet "$OLDPWD/$BUNDLE/bundle.sha256"); then
    echo "gpu-check: the bundle's parts do not add up to bundle.sha256 (a part missing?); rebuild with" \
      "scripts/gpu-bundle.sh and carry every part" >&2
    exit 2
  fi
  tar -x -C "$unpack" -f "$unpack/bundle.tar"
  mkdir -p "$SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$unpack"/wheels/*.whl \
    $(ls "$BUNDLE"/extra/*.whl 2>/dev/null || true)
  tar -xJ -C "$SITE" -f "$unpack/ort-rest.tar.xz"
  "$PY" -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
    "$unpack/ort-cuda.so.xz" "$SITE/onnxruntime/capi/libonnxruntime_providers_cuda.so"
  rm -rf "$unpack"
  # this repo (service, training, the `qipo` entry points), built from the working tree
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --upgrade --target "$SITE" .
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  QIPO="$PY $SITE/bin/qipo"
  # an .npz needs no minari: `qipo data make pendulum` here, then training.data.dataset.save_npz
  [ -f "$BUNDLE/pendulum-mixed.npz" ] && GPU_CHECK_ARGS="--dataset $BUNDLE/pendulum-mixed.npz ${GPU_CHECK_ARGS:-}"
else
  QIPO=${QIPO:-qipo}
fi

# CUDA/cuDNN from the nvidia-* wheels torch came with, for onnxruntime's CUDA provider
NV=$("$PY" -c "import site, glob, os; print(':'.join(sorted({os.path.dirname(p) for d in site.getsitepackages() \
for p in glob.glob(os.path.join(d, 'nvidia', '**', 'lib*.so*'), recursive=True)})))")
export LD_LIBRARY_PATH="$NV${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$OUT/nvidia-smi.csv"
"$PY" -c "import onnxruntime as o, torch; print('onnxruntime', o.__version__, o.get_available_providers());
print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
"$PY" scripts/gpu_check.py --out "$OUT" --qipo "$QIPO" ${GPU_CHECK_ARGS:-}

# Optional (GPU_TOY=1): the 2-D toy benchmark at a larger network and budget, on the GPU, into $OUT/toy.
# GPU_TOY_ARGS overrides the size (default: --size large, the size of docs/bench/toy-8k).
if [ "${GPU_TOY:-0}" = 1 ]; then
  $QIPO toy bench --out "$OUT/toy" --device cuda --threads 4 \
    ${GPU_TOY_ARGS:---size large}
fi
