#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, only those missing:
# a C++ toolchain and CMake/Ninja for the core, and the aarch64 cross compiler
# plus qemu-user to run the NEON kernels' tests on an x86-64 host.
set -euo pipefail
need=()
for pkg in g++ cmake ninja-build g++-aarch64-linux-gnu qemu-user; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi
