#!/usr/bin/env bash
# One command for a fresh machine: install the dependencies, build bloopcl, then run the main
# job on the default device (BLOOPCL_DEVICE, else the first GPU, else PoCL's CPU device):
# list the devices, check the device against the CPU reference, and train the demo problem.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
[ -f build/build.ninja ] || meson setup build
meson compile -C build
./build/tools/bloopcl-compare --list
./build/tools/bloopcl-compare --quick
./build/tools/bloopcl-demo
