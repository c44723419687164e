#!/usr/bin/env bash
# Fuzz the data-plane core, two ways, from one corpus of kernel calls (src/xennet/fuzz/wire.py):
#   1. libFuzzer over the C kernels, built with AddressSanitizer and UndefinedBehaviorSanitizer;
#   2. atheris over both cores at once: the twin and the compiled core must agree (src/xennet/fuzz/core.py).
# Usage: scripts/fuzz-core.sh [-n C_EXECS] [-d DIFF_EXECS] [-s SEEDS_DIR] [-o OUT_DIR]
# SEEDS_DIR holds recorded real calls (XENNET_FUZZ_RECORD, see tests/core/fuzz/record.py); if it is
# empty they are recorded first.  A crash or a disagreement fails the run and leaves its input in
# OUT_DIR; replay it with `OUT_DIR/fuzz_kernels FILE` or `python3 -m xennet.fuzz.core FILE`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
c_execs=1000000
diff_execs=100000
seeds=""
out="$repo/build/fuzz"
while getopts "n:d:s:o:" opt; do
  case $opt in
    n) c_execs=$OPTARG ;;
    d) diff_execs=$OPTARG ;;
    s) seeds=$OPTARG ;;
    o) out=$OPTARG ;;
    *) echo "usage: $0 [-n C_EXECS] [-d DIFF_EXECS] [-s SEEDS_DIR] [-o OUT_DIR]" >&2; exit 2 ;;
  esac
done
seeds=${seeds:-$out/seeds}
mkdir -p "$out" "$seeds" "$out/corpus-c" "$out/corpus-diff"
out=$(cd "$out" && pwd); seeds=$(cd "$seeds" && pwd)  # the fuzzers run from $out
command -v clang >/dev/null || { echo "fuzz: clang is missing (scripts/apt-packages.txt)" >&2; exit 1; }
python3 -c "import atheris" || { echo "fuzz: atheris is missing (pip install -e .[test])" >&2; exit 1; }

if [ -z "$(ls -A "$seeds")" ]; then
  echo "fuzz: recording seed calls into $seeds"
  XENNET_PURE=1 XENNET_FUZZ_RECORD="$seeds" python3 -m pytest -q -p no:cacheprovider \
    tests/core tests/test_forwarding.py tests/test_hostile_backend.py tests/test_vif.py >/dev/null
fi
echo "fuzz: $(ls "$seeds" | wc -l) seed calls, $(ls tests/core/fuzz/regressions | wc -l) regressions"

native=src/xennet/core/native
mapfile -t sources < <(ls "$native"/*.c | grep -v '/module\.c$')
clang -g -O1 -std=c11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$native" src/xennet/fuzz/fuzz_kernels.c "${sources[@]}" -o "$out/fuzz_kernels"

flags=(-max_len=262144 -use_value_profile=1 -rss_limit_mb=4096 -print_final_stats=1 -seed=1)
run() {  # name, log, command...: the executions it ran, or the failure
  local name=$1 log=$2; shift 2
  local rc=0
  "$@" >"$log" 2>&1 || rc=$?
  local n
  n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ "$rc" -ne 0 ]; then
    grep -E "ERROR|SUMMARY|Error|error:|Assertion|runtime error" "$log" | head -20 >&2 || true
    echo "fuzz: $name FAILED after ${n:-?} executions (rc=$rc); input and log in $out" >&2
    exit 1
  fi
  echo "fuzz: $name: ${n:-?} executions, 0 crashes"
}
cd "$out"
run "compiled core under ASan+UBSan (libFuzzer)" "$out/c.log" \
  "$out/fuzz_kernels" -runs="$c_execs" "${flags[@]}" -artifact_prefix="$out/" \
  "$out/corpus-c" "$seeds" "$repo/tests/core/fuzz/regressions"
run "twin vs compiled core (atheris)" "$out/diff.log" \
  env PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}" python3 -m xennet.fuzz.core -runs="$diff_execs" "${flags[@]}" -artifact_prefix="$out/" \
  "$out/corpus-diff" "$seeds" "$repo/tests/core/fuzz/regressions"
grep "^diff_atheris:" "$out/diff.log" | tail -1 || echo "diff_atheris: under 10000 calls, none counted (the twin reports every 10000)"
