#!/usr/bin/env bash
# End-to-end translation on aarch64: the aarch64 build of ondevice_translate_cli
# runs under qemu-user (NEON kernels) on held-out sentences and must print
# exactly what the native x86-64 build prints (AVX2 kernels where the CPU has
# them), byte for byte; both must also equal the Python API's translations
# recorded in cpp_runtime/jni/test/expected_en_de.tsv.
#
#   tests/aarch64_translate_check.sh [NATIVE_BUILD_DIR] [AARCH64_BUILD_DIR] [N_SENTENCES]
#
# Defaults: build/cpp-native, build/cpp-aarch64 (tests/run_all.sh's build
# directories), 20 sentences (the first lines of models/nmt-en-de/eval/ci_ui.en),
# beam 4. Needs qemu-aarch64 and the aarch64 glibc in /usr/aarch64-linux-gnu
# (scripts/install_system_deps.sh installs both). About 30 s under qemu.
set -euo pipefail
cd "$(dirname "$0")/.."
native_dir=${1:-build/cpp-native}
arm_dir=${2:-build/cpp-aarch64}
n=${3:-20}
model=models/nmt-en-de-bcq/onnx
native_cli=$native_dir/cpp_runtime/ondevice_translate_cli
arm_cli=$arm_dir/cpp_runtime/ondevice_translate_cli
for f in "$native_cli" "$arm_cli"; do
  [ -x "$f" ] || { echo "aarch64_translate_check: $f not built" >&2; exit 1; }
done
command -v qemu-aarch64 >/dev/null || { echo "aarch64_translate_check: qemu-aarch64 not installed" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -n "$n" models/nmt-en-de/eval/ci_ui.en > "$tmp/src.en"

"$native_cli" "$model" --beam 4 < "$tmp/src.en" > "$tmp/x86.de"
# ONDEVICE_KERNEL pins the NEON kernel (an error if the build lacks it).
start=$SECONDS
ONDEVICE_KERNEL=lut_neon qemu-aarch64 -L /usr/aarch64-linux-gnu "$arm_cli" "$model" --beam 4 < "$tmp/src.en" > "$tmp/arm.de"
echo "aarch64 (qemu, NEON): $(wc -l < "$tmp/arm.de") sentences in $((SECONDS - start)) s"

if ! cmp -s "$tmp/x86.de" "$tmp/arm.de"; then
  echo "FAIL: the aarch64 translations differ from the x86-64 ones:" >&2
  diff "$tmp/x86.de" "$tmp/arm.de" >&2 || true
  exit 1
fi
[ "$(wc -l < "$tmp/x86.de")" -eq "$n" ] || { echo "FAIL: expected $n output lines" >&2; exit 1; }

# The Python API's translations of the same lines (beam 4), where recorded.
expected=cpp_runtime/jni/test/expected_en_de.tsv
awk -F'\t' '$1 == 4 { print $2 "\t" $3 }' "$expected" > "$tmp/py.tsv"
paste "$tmp/src.en" "$tmp/x86.de" > "$tmp/ours.tsv"
awk -F'\t' 'NR == FNR { py[$1] = $2; next } ($1 in py) { n++; if (py[$1] != $2) { bad++; print "FAIL: " $1 ": python <" py[$1] "> native <" $2 ">" } }
            END { printf "compared with the Python API: %d sentences, %d differ\n", n, bad; exit bad > 0 }' \
  "$tmp/py.tsv" "$tmp/ours.tsv"
echo "OK: $n held-out sentences translate identically on x86-64 and aarch64 (qemu)"
