#!/usr/bin/env bash
# Installs what bloopcl needs to build, test and run on Debian 12 (or a close Ubuntu):
# the OpenCL ICD loader and headers, PoCL (an OpenCL CPU device, so every machine has one),
# Oclgrind (a simulated GPU that checks every memory access: tools/oclgrind-check.sh and the
# gpu_policy test), CLBlast, Criterion, meson and ninja, and cmake (tools/consumer-check.sh
# builds the example as a CMake project would), clang and its runtimes (libFuzzer, for
# tools/fuzz.sh), Open MPI (bloopcl-mpi, its tests under mpirun), and Python's venv module and
# headers (the quickstart's venv, in which `pip install .` builds the bloopcl package's
# extension; numpy, PyOpenCL, tinygrad and pytest come from PyPI into that venv, pinned in
# tools/python/requirements.txt). Skips apt when everything is already there.
set -euo pipefail
packages=(build-essential pkg-config python3 python3-venv python3-dev meson ninja-build cmake
          clang libclang-rt-dev
          ocl-icd-opencl-dev opencl-c-headers pocl-opencl-icd oclgrind clinfo
          libclblast-dev libcriterion-dev zlib1g-dev dataset-fashion-mnist gnuplot-nox
          openmpi-bin libopenmpi-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ] && [ -z "${CI:-}" ]; then
  echo "install-deps: all packages present"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update
$sudo apt-get install -y --no-install-recommends "${packages[@]}"
