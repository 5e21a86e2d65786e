#!/usr/bin/env bash
# Fetches Mesa's software Vulkan driver (lavapipe) from Debian bookworm-backports into
# .cache/vulkan/, so the webgpu training path can be checked for correct numbers on a machine
# without a GPU (test/train/webgpu-software.test.ts). Dawn refuses bookworm's own lavapipe
# (Mesa 22.3 lacks shaderUniform*ArrayDynamicIndexing); the backports one (Mesa 25) works.
# Nothing is installed system-wide: the package is unpacked into the cache and an ICD manifest
# with an absolute library path is written next to it. Prints that manifest's path.
#
# Needs apt-get and access to deb.debian.org. The driver's own libraries (libllvm15, libdrm2,
# libxcb-*, libwayland-client0, libvulkan1) come from bookworm: .ci/run installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="$PWD/.cache/vulkan"
manifest="$dest/lvp_icd.json"
if [ -f "$manifest" ] && [ -f "$dest/root/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so" ]; then echo "$manifest"; exit 0; fi
[ "$(dpkg --print-architecture 2>/dev/null || true)" = amd64 ] || { echo "software-vulkan: only amd64 Debian is handled here" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$dest"
echo "deb http://deb.debian.org/debian bookworm-backports main" > "$work/sources.list"
apt_options=(-o "Dir::State::Lists=$work/lists" -o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null" -o "APT::Sandbox::User=root")
apt-get "${apt_options[@]}" update -qq >&2
(cd "$work" && apt-get "${apt_options[@]}" download -qq mesa-vulkan-drivers/bookworm-backports >&2)
rm -rf "$dest/root" && dpkg -x "$work"/mesa-vulkan-drivers_*.deb "$dest/root"
library="$dest/root/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so"
[ -f "$library" ] || { echo "software-vulkan: $library missing from the package" >&2; exit 1; }
find "$dest/root" -type f ! -path "$library" -delete   # the other drivers (radeon, intel, ...) are not needed
version="$(dpkg-deb -f "$work"/mesa-vulkan-drivers_*.deb Version)"
cat > "$manifest" <<EOF
{ "file_format_version": "1.0.0", "ICD": { "library_path": "$library", "api_version": "1.3.0" }, "comment": "mesa-vulkan-drivers $version (bookworm-backports), lavapipe only" }
EOF
echo "$manifest"
