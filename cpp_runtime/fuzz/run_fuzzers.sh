#!/usr/bin/env bash
# Runs the libFuzzer targets of a fuzz build (cpp_runtime/fuzz/CMakeLists.txt) from
# seed corpora made by make_seeds.sh, one target after another, and prints one
# summary line per target: executions, wall and CPU seconds (user+sys of the
# fuzzer), cov and ft of libFuzzer's last status line, crash inputs written.
# FUZZ_TIMEOUT (default 10 s per input; 0 = none, for machines that pause
# processes: libFuzzer counts a paused input's wall time), FUZZ_FLAGS (more
# libFuzzer flags, e.g. -max_len=65536; the last of a flag wins) and FUZZ_WORK
# (the work directory) adjust a run.
#
#   bash cpp_runtime/fuzz/run_fuzzers.sh BUILD_DIR (-runs=N | -max_total_time=S) [TARGET...]
#
# BUILD_DIR: a CMake build configured with clang and -DONDEVICE_BUILD_FUZZERS=ON.
# Work files go under BUILD_DIR/fuzz-work/ (or $FUZZ_WORK): seeds/<target> (made
# afresh each time), corpus/<target> (what the fuzzer adds, kept between runs),
# <target>.log and artifacts/<target> (crash inputs).
# Exit status: 1 if any target crashed (its input is saved as
# artifacts/<target>/crash-*: add it to cpp_runtime/fuzz/regressions/<target>/
# with the fix), else 0.
set -uo pipefail
BUILD=${1:?usage: run_fuzzers.sh BUILD_DIR (-runs=N | -max_total_time=S) [TARGET...]}
LIMIT=${2:?usage: run_fuzzers.sh BUILD_DIR (-runs=N | -max_total_time=S) [TARGET...]}
shift 2
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(json bitplane tokenizer_encode tokenizer_model onnx_model)
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${FUZZ_WORK:-$BUILD/fuzz-work}
BIN=$BUILD/cpp_runtime/fuzz
mkdir -p "$WORK"
rm -rf "$WORK/seeds"  # always from the files as they are now
bash "$HERE/make_seeds.sh" "$WORK/seeds" >/dev/null

max_len() {
  case $1 in
    json) echo 65536 ;;            # the packed manifest is 56 KB
    tokenizer_encode) echo 4096 ;;
    tokenizer_model) echo 393216 ;;  # the shipped spm.model is 380 KB
    *) echo 131072 ;;              # graphs 52/72 KB, .bcq seeds up to 74 KB
  esac
}

status=0
printf '%-18s %10s %8s %8s %7s %7s %s\n' target execs seconds cpu_s cov ft crashes
for t in "${TARGETS[@]}"; do
  exe=$BIN/fuzz_$t
  [ -x "$exe" ] || { echo "run_fuzzers: $exe not built" >&2; status=1; continue; }
  mkdir -p "$WORK/corpus/$t" "$WORK/artifacts/$t"
  log=$WORK/$t.log
  before=$(ls "$WORK/artifacts/$t" | wc -l)
  start=$(date +%s)
  # shellcheck disable=SC2086  # FUZZ_FLAGS: extra libFuzzer flags, word-split on purpose
  cpu=$({
    TIMEFORMAT='%0U+%0S'
    time "$exe" "$LIMIT" -max_len="$(max_len "$t")" -timeout="${FUZZ_TIMEOUT:-10}" -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$WORK/artifacts/$t/" ${FUZZ_FLAGS:-} \
      "$WORK/corpus/$t" "$WORK/seeds/$t" >"$log" 2>&1
  } 2>&1)
  rc=$?
  cpu=$((${cpu:-0}))
  secs=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | grep -E 'cov: ' | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  crashes=$(($(ls "$WORK/artifacts/$t" | wc -l) - before))
  printf '%-18s %10s %8s %8s %7s %7s %s\n' "$t" "${execs:-?}" "$secs" "$cpu" "${cov:-?}" "${ft:-?}" "$crashes"
  if [ $rc -ne 0 ] || [ "$crashes" -ne 0 ]; then
    status=1
    echo "run_fuzzers: fuzz_$t failed (exit $rc); the end of $log:" >&2
    grep -E 'ERROR|SUMMARY|==[0-9]+==|terminate|runtime error|Test unit written' "$log" | head -20 >&2
  fi
done
exit $status
