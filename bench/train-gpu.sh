#!/usr/bin/env bash
# GPU check for training: runs a fixed number of reference U-Net training steps (224 x 224,
# batch 4) on every GPU-capable TensorFlow.js backend it can start and prints steps/s, the
# backend and the adapter name, or the exact error.
#
# The device machines have no internet and may have no Node, so the check travels as one folder:
#   1. here (needs node_modules):   bash bench/train-gpu.sh pack
#      -> .gpu-pack/ (ignored through .git/info/exclude, ~45 MiB): an esbuild bundle of
#         bench/train-gpu-entry.mjs with tfjs-core, tfjs-backend-webgpu and our kernels; the
#         `webgpu` package's Linux x64 Dawn binary; this Node binary (xz) in case the device has none;
#         the Vulkan/EGL loader .debs when apt can fetch them.
#   2. on the device (device tool):  run(command="bash bench/train-gpu.sh run", carry=[".gpu-pack"], timeout_s=480)
# Environment for `run`: STEPS (default 10), SIZE (224), BATCH (4).
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
  xz -T0 -6 -c "$(readlink -f "$(command -v node)")" > "$PACK/node.xz"
  # Vulkan/EGL loaders in case the device image lacks them (see the device tool's README).
  if command -v apt-get >/dev/null; then
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    mkdir -p /tmp/amd64/partial
    (apt-get $o update -qq >/dev/null 2>&1 && cd "$PACK/gl" && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 >/dev/null 2>&1) || echo "note: could not fetch the Vulkan loader .debs; the device must provide libvulkan"
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
  if ! ldconfig -p | grep -q libvulkan.so.1; then
    echo "libvulkan missing: unpacking carried loaders"; for f in "$PACK"/gl/*.deb; do [ -f "$f" ] && dpkg -x "$f" /; done; ldconfig
  fi
  for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
    if [ -f "$icd" ]; then export VK_DRIVER_FILES="$icd"; echo "Vulkan ICD: $icd"; break; fi
  done
  [ -n "${VK_DRIVER_FILES:-}" ] || echo "no NVIDIA Vulkan ICD json found in the usual places"
  export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
  local status=0
  for backend in webgpu tensorflow cpu; do
    local n="$steps"; [ "$backend" = cpu ] && n=2   # the cpu row is a same-machine baseline
    echo "== $backend: $n steps at ${size}x${size}, batch $batch"
    local start; start=$(date +%s)
    if (cd "$PACK" && timeout 240 "$node" train-gpu.mjs --backend "$backend" --size "$size" --batch "$batch" --steps "$n") 2>&1 | tee /tmp/gpu-check-$backend.log | grep -v '^\s*$'; then :; else status=1; fi
    echo "   ($(( $(date +%s) - start )) s wall)"
    [ -n "${OUT:-}" ] && cp /tmp/gpu-check-$backend.log "$OUT/" 2>/dev/null
  done
  return $status
}

case "$mode" in
  pack) pack ;;
  run) run ;;
  *) echo "usage: bash bench/train-gpu.sh pack|run (see the comment at the top)"; exit 2 ;;
esac
