#!/usr/bin/env bash
# GPU check for training: runs a fixed number of training steps (224 x 224, batch 4) of the
# reference U-Net and of the ProLearn segmenter (train stage defaults) on every GPU-capable
# TensorFlow.js backend it can start and prints steps/s, the backend and the adapter name, or the
# exact error.
#
# The device machines have no internet and may have no Node, so the check travels as one folder:
#   1. here (needs node_modules):   bash bench/train-gpu.sh pack
#      -> .gpu-pack/ (ignored through .git/info/exclude, ~45 MiB): an esbuild bundle of
#         bench/train-gpu-entry.mjs with tfjs-core, tfjs-backend-webgpu and our kernels; the
#         `webgpu` package's Linux x64 Dawn binary; this Node binary (xz) in case the device has none;
#         the Vulkan/EGL loader .debs when apt can fetch them.
#      plus the PyTorch reference U-Net (../shared/reference/unet_torch.py), timed on the GPU too.
#   2. here, no GPU needed:          bash bench/train-gpu.sh rehearse
#      runs the packed check at 64 x 64 on Dawn's null adapter (the whole WebGPU API, no results),
#      so a broken bundle or a missing kernel shows up before device time is spent.
#   3. on the device (device tool):  run(command="bash bench/train-gpu.sh run", carry=[".gpu-pack"], timeout_s=480)
# Environment for `run`: STEPS (default 10), SIZE (224), BATCH (4), ROW_TIMEOUT (150 s per row),
# BACKENDS ("webgpu tensorflow cpu"), MODELS ("reference segmenter stock-reference"), TORCH (1: time
# PyTorch too), NODE_FLAGS (extra node flags, e.g. "--cpu-prof --cpu-prof-dir=$OUT"). The webgpu rows also profile one step's kernels (GPU time per
# kernel where the adapter has timestamp queries), and a "webgpu (stock)" row times the reference
# U-Net with tfjs-backend-webgpu's own filter gradient instead of ours.
set -uo pipefail
cd "$(dirname "$0")/.."
PACK=.gpu-pack
mode="${1:-}"

pack() {
  set -e
  rm -rf "$PACK" && mkdir -p "$PACK/node_modules/webgpu/dist/linux-x64" "$PACK/gl"
  grep -qxF "/$PACK/" .git/info/exclude 2>/dev/null || echo "/$PACK/" >> .git/info/exclude
  # --ignore-annotations: tfjs packages mark their registering entry points side-effect free.
  node_modules/.bin/esbuild bench/train-gpu-entry.mjs --bundle --platform=node --format=esm --target=node20 --ignore-annotations \
    --external:webgpu --external:@tensorflow/tfjs-node --external:@tensorflow/tfjs-node-gpu \
    --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" \
    --log-level=warning --outfile="$PACK/train-gpu.mjs"
  cp node_modules/webgpu/package.json node_modules/webgpu/index.js "$PACK/node_modules/webgpu/"
  cp node_modules/webgpu/dist/linux-x64/dawn.node "$PACK/node_modules/webgpu/dist/linux-x64/"
  local reference="${PROLEARN_SHARED:-../shared}/reference/unet_torch.py"
  if [ -f "$reference" ]; then cp "$reference" "$PACK/"; else echo "note: $reference not found; the check will run without the PyTorch GPU row"; fi
  xz -T0 -6 -c "$(readlink -f "$(command -v node)")" > "$PACK/node.xz"
  # Vulkan/EGL loaders in case the device image lacks them (see the device tool's README).
  if command -v apt-get >/dev/null; then
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    mkdir -p /tmp/amd64/partial
    (apt-get $o update -qq >/dev/null 2>&1 && cd "$PACK/gl" && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 >/dev/null 2>&1) || echo "note: could not fetch the Vulkan loader .debs; the device must provide libvulkan"
  fi
  du -sh "$PACK"
}

run() {
  local steps="${STEPS:-10}" size="${SIZE:-224}" batch="${BATCH:-4}"
  [ -f "$PACK/train-gpu.mjs" ] || { echo "error: $PACK/train-gpu.mjs missing: run 'bash bench/train-gpu.sh pack' here and carry $PACK"; exit 2; }
  local node=node
  if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)" -lt 20 ]; then
    xz -dc "$PACK/node.xz" > /tmp/node && chmod +x /tmp/node && node=/tmp/node
  fi
  echo "== machine"; uname -m; "$node" --version; nvidia-smi -L 2>&1 | head -4
  # NVIDIA's Vulkan driver (libGLX_nvidia) needs glvnd's dispatch library beside the loader.
  if ! ldconfig -p | grep -q libvulkan.so.1 || ! ldconfig -p | grep -q libGLdispatch.so.0; then
    echo "libvulkan or libGLdispatch missing: unpacking carried loaders"; for f in "$PACK"/gl/*.deb; do [ -f "$f" ] && dpkg -x "$f" /; done; ldconfig
  fi
  for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
    if [ -f "$icd" ]; then export VK_DRIVER_FILES="$icd"; echo "Vulkan ICD: $icd"; break; fi
  done
  [ -n "${VK_DRIVER_FILES:-}" ] || echo "no NVIDIA Vulkan ICD json found in the usual places"
  export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
  local status=0
  for backend in ${BACKENDS:-webgpu tensorflow cpu}; do
    for model in ${MODELS:-reference segmenter stock-reference}; do
      local extra=() name="$model"
      if [ "$model" = stock-reference ]; then
        [ "$backend" = webgpu ] || continue
        model=reference; extra=(--stock-kernels)
      fi
      # The cpu rows are a same-machine baseline: few steps (a segmenter step is ~16 s there at 224).
      local n="$steps" warmup=2; [ "$backend" = cpu ] && { n=2; warmup=1; [ "$model" = segmenter ] && n=1; }
      [ "$backend" = webgpu ] && extra+=(--profile)
      echo "== $backend, $name: $n steps at ${size}x${size}, batch $batch"
      local start; start=$(date +%s)
      if (cd "$PACK" && timeout "${ROW_TIMEOUT:-150}" "$node" ${NODE_FLAGS:-} train-gpu.mjs --backend "$backend" --model "$model" --size "$size" --batch "$batch" --steps "$n" --warmup "$warmup" "${extra[@]}") 2>&1 | tee /tmp/gpu-check-$backend-$name.log | grep -v '^\s*$'; then :; else status=1; fi
      echo "   ($(( $(date +%s) - start )) s wall)"
      [ -n "${OUT:-}" ] && cp /tmp/gpu-check-$backend-$name.log "$OUT/" 2>/dev/null
      # A backend that cannot start fails the same way for every model.
      grep -q '"error"' /tmp/gpu-check-$backend-$name.log && grep -q 'unavailable' /tmp/gpu-check-$backend-$name.log && break
    done
  done
  [ "${TORCH:-1}" = 1 ] && torch_reference "$steps" "$size" "$batch"
  return $status
}

# The same network in PyTorch on this machine's GPU (the device image has CUDA PyTorch), as the
# yardstick for the tfjs rows. The reference times with perf_counter and no synchronisation, which
# on CUDA would time kernel launches only; the wrapper makes each clock read wait for the GPU.
torch_reference() {
  local steps="$1" size="$2" batch="$3"
  echo "== pytorch (cuda): $steps steps at ${size}x${size}, batch $batch"
  [ -f "$PACK/unet_torch.py" ] || { echo "   skipped: $PACK/unet_torch.py was not packed"; return 0; }
  command -v python3 >/dev/null || { echo "   skipped: no python3 on this machine"; return 0; }
  timeout "${ROW_TIMEOUT:-150}" python3 - "$PACK/unet_torch.py" "$size" "$batch" "$steps" <<'PY' 2>&1 | tee /tmp/gpu-check-pytorch.log
import runpy, sys, time
try:
    import torch
except ImportError:
    print("   skipped: python3 has no torch"); sys.exit(0)
if not torch.cuda.is_available():
    print("   skipped: torch sees no CUDA device"); sys.exit(0)
print("device", torch.cuda.get_device_name(0), "torch", torch.__version__)
torch.set_default_device("cuda")
clock = time.perf_counter
def synchronised_clock():
    torch.cuda.synchronize()
    return clock()
time.perf_counter = synchronised_clock
script = sys.argv[1]
sys.argv = [script] + sys.argv[2:]
runpy.run_path(script, run_name="__main__")
PY
  [ -n "${OUT:-}" ] && cp /tmp/gpu-check-pytorch.log "$OUT/" 2>/dev/null
  return 0
}

case "$mode" in
  pack) pack ;;
  run) run ;;
  rehearse) PROLEARN_DAWN_TOGGLES=backend=null SIZE="${SIZE:-64}" STEPS="${STEPS:-2}" run ;;
  *) echo "usage: bash bench/train-gpu.sh pack|rehearse|run (see the comment at the top)"; exit 2 ;;
esac
