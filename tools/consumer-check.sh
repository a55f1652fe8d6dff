#!/usr/bin/env bash
# Builds tools/examples/bloop_steps.c the three ways a consumer would, against bloopcl
# installed with `meson install --destdir` from BUILD_DIR (default build), and runs each
# binary on the default device: pkg-config, meson's dependency('bloopcl'), CMake's
# find_package(bloopcl). Exits non-zero on any failure; one line per consumer build.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
meson install -C "$build" --destdir "$root/stage" > "$root/install.log"

prefix=$(meson introspect "$build" --buildoptions |
         python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"))')
libdir=$(meson introspect "$build" --buildoptions |
         python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "libdir"))')
staged=$root/stage$prefix
case $libdir in /*) staged_lib=$root/stage$libdir ;; *) staged_lib=$staged/$libdir ;; esac
# pkg-config's .pc names the real prefix; the sysroot variable maps it into the staging tree.
export PKG_CONFIG_PATH=$staged_lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$root/stage
export LD_LIBRARY_PATH=$staged_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
example=tools/examples

run() {  # run NAME BINARY: the example must pass its closed-form check
    local line
    line=$("$2") || { echo "consumer-check: $1: the example failed: $line"; exit 1; }
    echo "consumer-check: $1: ok: $line"
}

cc -std=c11 -Wall -Wextra -Werror "$example/bloop_steps.c" -o "$root/by-pkg-config" \
    $(pkg-config --cflags --libs bloopcl) -lm
run pkg-config "$root/by-pkg-config"

meson setup "$root/meson-build" "$example" > "$root/meson.log" ||
    { cat "$root/meson.log"; exit 1; }
meson compile -C "$root/meson-build" > "$root/meson-compile.log" ||
    { cat "$root/meson-compile.log"; exit 1; }
run "meson dependency('bloopcl')" "$root/meson-build/bloop_steps"

cmake -S "$example" -B "$root/cmake-build" -DCMAKE_PREFIX_PATH="$staged" > "$root/cmake.log" ||
    { cat "$root/cmake.log"; exit 1; }
cmake --build "$root/cmake-build" > "$root/cmake-build.log" ||
    { cat "$root/cmake-build.log"; exit 1; }
run "cmake find_package(bloopcl)" "$root/cmake-build/bloop_steps"
