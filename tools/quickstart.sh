#!/usr/bin/env bash
# One command for a fresh machine: install the dependencies, build bloopcl, then run the main
# job on the default device (BLOOPCL_DEVICE, else the first GPU, else PoCL's CPU device):
# list the devices, check the device against the CPU reference, train the demo problem, and
# train the Fashion-MNIST MLP with every method in quick mode (CSV and Pareto plot in build/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
[ -f build/build.ninja ] || meson setup build
meson compile -C build
./build/tools/bloopcl-compare --list
./build/tools/bloopcl-compare --quick
./build/tools/bloopcl-demo
./build/tools/bloopcl-train --quick --csv build/train_quick.csv
gnuplot -e "csv='build/train_quick.csv'; png='build/train_quick.png'" tools/plot_pareto.gp
echo "quickstart: Pareto plot of the quick run in build/train_quick.png"
