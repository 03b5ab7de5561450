#!/usr/bin/env bash
# The project's whole test suite (the README's second command; .ci/run runs it):
#   1. system packages (compilers, CMake, aarch64 cross toolchain, qemu-user)
#   2. the package with its test extras, built from this checkout (and fairseq for interop tests,
#      torchaudio's pure-PyTorch functions as the resampler tests' reference)
#   3. C++ tests natively (reference, portable and AVX2 kernels) through CTest, then the Java API's
#      tests on the host JVM over the JNI library (cpp_runtime/jni)
#   4. C++ tests under AddressSanitizer + UndefinedBehaviorSanitizer, with LeakSanitizer (checked to
#      be active); the Translator-shared-by-threads test under ThreadSanitizer; a short libFuzzer run
#      of every fuzz target (cpp_runtime/fuzz, clang)
#   5. C++ tests cross-built for aarch64 and run under qemu (NEON kernels), the aarch64 JNI library
#      (built only), and an end-to-end translation under qemu compared with the x86-64 build's
#   6. the Python tests, against the installed package
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

bash scripts/install_system_deps.sh
python3 -m pip install -q "$ROOT[test]"
# fairseq is only needed by the interop tests; if its build fails here, say so loudly
# (those tests then skip) rather than losing the whole run.
bash scripts/install_fairseq.sh || echo "WARNING: fairseq could not be installed: tests/test_fairseq_interop.py will be SKIPPED" >&2
# torchaudio (its pure-PyTorch functions) is only the resampler tests' reference; same policy.
bash scripts/install_torchaudio_transforms.sh || echo "WARNING: torchaudio could not be installed: the resampler's torchaudio comparisons will be SKIPPED" >&2

echo "== C++ tests (native)"
cmake -S . -B build/cpp-native -G Ninja -DCMAKE_BUILD_TYPE=Release -DONDEVICE_BUILD_JNI=ON >/dev/null
cmake --build build/cpp-native
ctest --test-dir build/cpp-native --output-on-failure -V -E ondevice_jni_java

echo "== Java API over JNI (host JVM)"
ctest --test-dir build/cpp-native --output-on-failure -V --no-tests=error -R ondevice_jni_java

echo "== C++ tests (ASan + UBSan)"
cmake -S . -B build/cpp-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" >/dev/null
cmake --build build/cpp-asan
# LeakSanitizer runs at the exit of every ASan binary on Linux, but silently not everywhere (e.g.
# under ptrace): a probe that leaks must fail here before the suite's clean exit means "no leaks".
printf '#include <cstdlib>\nint main() { void* volatile p = std::malloc(64); p = nullptr; return p != nullptr; }\n' \
  >build/cpp-asan/lsan_probe.cc
c++ -fsanitize=address build/cpp-asan/lsan_probe.cc -o build/cpp-asan/lsan_probe
if ASAN_OPTIONS=detect_leaks=1 build/cpp-asan/lsan_probe 2>/dev/null; then
  echo "LeakSanitizer is not active: a leaking probe exited cleanly" >&2
  exit 1
fi
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build/cpp-asan --output-on-failure

echo "== C++ thread safety (ThreadSanitizer): one Translator shared by threads"
cmake -S . -B build/cpp-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DONDEVICE_BUILD_JNI=OFF \
  -DCMAKE_CXX_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" >/dev/null
cmake --build build/cpp-tsan --target ondevice_tests
tsan_out=$(TSAN_OPTIONS=halt_on_error=1 build/cpp-tsan/cpp_runtime/ondevice_tests \
  translator_memory_stays_flat_and_threads_agree 2>&1) || { echo "$tsan_out"; exit 1; }
echo "$tsan_out"
grep -q "^1 passed, 0 failed" <<<"$tsan_out" || { echo "the ThreadSanitizer test did not run" >&2; exit 1; }

echo "== Fuzzing (libFuzzer + ASan/UBSan, ${ONDEVICE_FUZZ_SECONDS:-20} s per target)"
# Short runs from seeds made from the shipped model files; cpp_runtime/fuzz/REPORT.md has the long
# ones. A crash fails CI; its input is under build/cpp-fuzz/fuzz-work/artifacts/<target>/.
mkdir -p build/cpp-fuzz
if printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' |
  clang++ -x c++ -fsanitize=fuzzer,address,undefined - -o build/cpp-fuzz/libfuzzer_probe 2>/dev/null; then
  cmake -S . -B build/cpp-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
    -DONDEVICE_BUILD_FUZZERS=ON -DONDEVICE_BUILD_TESTS=OFF -DONDEVICE_BUILD_JNI=OFF >/dev/null
  cmake --build build/cpp-fuzz
  bash cpp_runtime/fuzz/run_fuzzers.sh build/cpp-fuzz -max_total_time="${ONDEVICE_FUZZ_SECONDS:-20}"
else
  echo "SKIPPED fuzzing: clang++ with libFuzzer is not available (Debian: apt-get install clang libclang-rt-dev)" >&2
fi

echo "== C++ tests (aarch64 NEON, under qemu)"
cmake -S . -B build/cpp-aarch64 -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$ROOT/cpp_runtime/cmake/aarch64-linux-gnu.cmake" >/dev/null
cmake --build build/cpp-aarch64
ctest --test-dir build/cpp-aarch64 --output-on-failure -V

echo "== aarch64 end-to-end translation (qemu, NEON) vs x86-64"
bash tests/aarch64_translate_check.sh build/cpp-native build/cpp-aarch64

echo "== Python tests"
# Run from tests/ so the source tree's ondevice/ (without the compiled core) does not
# shadow the installed package.
cd "$ROOT/tests"
python3 -m pytest -q -p no:cacheprovider "$@"
