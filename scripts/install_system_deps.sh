#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, only those missing:
# a C++ toolchain and CMake/Ninja for the core, and the aarch64 cross compiler
# plus qemu-user to run the NEON kernels' tests on an x86-64 host, and a JDK (javac, java,
# jni.h) for the JNI library and its Java tests (cpp_runtime/jni) unless one is on PATH.
# espeak-ng, flite, festival (+ its three English voices) and sox (+ its format handlers) render
# the SLU corpus (`ondevice data slu`).
# clang and its runtime libraries (libFuzzer, sanitizers) build the fuzz targets (cpp_runtime/fuzz).
set -euo pipefail
need=()
for pkg in g++ cmake ninja-build g++-aarch64-linux-gnu qemu-user espeak-ng flite festival festvox-kallpc16k \
    festvox-kdlpc16k festvox-us-slt-hts sox libsox-fmt-all clang libclang-rt-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ! command -v javac >/dev/null || ! command -v java >/dev/null; then
  need+=(openjdk-17-jdk-headless)
fi
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  # Slim Debian images lack this directory and the JDK's postinst then fails.
  $SUDO mkdir -p /usr/share/man/man1
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi
