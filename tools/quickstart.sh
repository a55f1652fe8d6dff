#!/usr/bin/env bash
# One command for a fresh machine: install the dependencies, build bloopcl, make the Python
# venv (build/venv, or $BLOOPCL_VENV: the pinned tools/python/requirements.txt, then the bloopcl
# package itself by `pip install .`, which the `python` meson test runs pytest against), then
# run the main job on the default device (BLOOPCL_DEVICE, else the first GPU, else PoCL's CPU
# device): list the devices, check the device against the CPU reference, train the demo
# problem, train the Fashion-MNIST MLP with every method in quick mode (CSV and Pareto plot in
# build/), and train it again from Python, with tinygrad on CL and bloopcl combining tinygrad's
# gradients in place (Bloop against Mixed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
[ -f build/build.ninja ] || meson setup build
meson compile -C build
venv=${BLOOPCL_VENV:-build/venv}
[ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tools/python/requirements.txt
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check .
echo "quickstart: bloopcl $("$venv/bin/python" -c 'import bloopcl; print(bloopcl.__version__)') installed in $venv"
./build/tools/bloopcl-compare --list
./build/tools/bloopcl-compare --quick
./build/tools/bloopcl-demo
./build/tools/bloopcl-train --quick --csv build/train_quick.csv
gnuplot -e "csv='build/train_quick.csv'; png='build/train_quick.png'" tools/plot_pareto.gp
echo "quickstart: Pareto plot of the quick run in build/train_quick.png"
DEV=CL "$venv/bin/python" tools/python/examples/train_fashion_mnist.py
