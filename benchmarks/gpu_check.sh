#!/usr/bin/env bash
# The checks that need a GPU, in one run of under 5 minutes on one H200 (16 CPU cores, no
# internet), everything it measures written under one folder:
#
#   env/             versions, nvidia-smi, the device's properties
#   aot/             every Triton specialisation the later steps launch, compiled ahead of time
#                    for this device's architecture, in parallel (triton_aot.py --scope gpu-check);
#                    the summary then counts the kernels Triton still compiled at run time in
#                    each step: 0 means the ahead-of-time list is exactly what launches
#   accuracy/        Triton (and the PyTorch path on CUDA) against a dense float64 reference:
#                    the largest error of every statistic (benchmarks/triton_accuracy.py)
#   bandwidth/       achieved bandwidth and scores per second against the device's copy bandwidth
#                    and SDPA (benchmarks/triton_bandwidth.py)
#   head_scan_4k/    benchmarks/head_scan.py --device cuda at 4k tokens: interp, SDPA forward,
#                    HF eager and TransformerLens
#   head_scan_long/  the same at 16k and 32k tokens: interp and SDPA (eager attention patterns of
#                    every layer and TransformerLens's cache do not fit there)
#   scan/            the default SmolLM2 head scan on the GPU (interp heads smollm2-135m --device cuda)
#   summary.md       each step's status, time and files
#
#   bash benchmarks/gpu_check.sh [--out DIR]    # default DIR: gpu_check_out
#   bash benchmarks/gpu_check.sh --dry-run      # on the CPU: every step at tiny sizes (Triton's
#                                               # interpreter), then the files a real run writes
#
# Each step has a time limit (the limits add up to under 5 minutes); a step that fails or runs
# out of time is reported and the next one runs. The exit code is the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=gpu_check_out
DRY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1

REAL_OUT="$OUT"
if [ "$DRY" = 1 ]; then
    OUT="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_dry.XXXXXX")"
    export TRITON_INTERPRET=1
    DEVICE=cpu
else
    DEVICE=cuda
fi
mkdir -p "$OUT"
SUMMARY="$OUT/summary.md"
START=$(date +%s)
FAILED=0
declare -a PLANNED=()
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-$HOME/.triton/cache}"
ncache() { find "$TRITON_CACHE_DIR" -name '__grp__*.json' 2>/dev/null | wc -l; }
printf '# GPU check\n\n| step | status | seconds | Triton compiles at run time | files |\n|---|---|---|---|---|\n' > "$SUMMARY"

# step NAME LIMIT_SECONDS "FILES THE REAL RUN WRITES" -- COMMAND...
step() {
    local name="$1" limit="$2" files="$3"
    shift 4
    for f in $files; do PLANNED+=("$REAL_OUT/$f"); done
    mkdir -p "$OUT/$name"
    local t0 rc status c0
    t0=$(date +%s)
    c0=$(ncache)
    echo "== $name (limit ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name/log.txt" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124|137) status="timed out after ${limit} s"; FAILED=$((FAILED + 1)) ;;
        *) status="failed (exit $rc; see $name/log.txt)"; FAILED=$((FAILED + 1)) ;;
    esac
    local dt=$(( $(date +%s) - t0 ))
    local written
    written=$(cd "$OUT" && find "$name" -type f | sort | tr '\n' ' ')
    local compiled=$(( $(ncache) - c0 ))
    [ "$name" = aot ] && compiled="$compiled (the ahead-of-time compiles)"
    printf '| %s | %s | %s | %s | %s |\n' "$name" "$status" "$dt" "$compiled" "$written" >> "$SUMMARY"
    echo "   $status in ${dt} s"
    tail -n 3 "$OUT/$name/log.txt" | sed 's/^/   | /'
}
PLANNED+=("$REAL_OUT/summary.md")

if [ "$DRY" = 1 ]; then
    T=(env 120 aot 600 accuracy 900 bandwidth 600 hs4k 600 hslong 600 scan 600)
    ACC_ARGS=(--device cpu --tiny); BW_ARGS=(--smoke --repeats 1)
    HS4K=(--lengths 64 --repeats 1 --limit-gib 8); HSLONG=(--lengths 96,128 --repeats 1 --limit-gib 8)
    SCAN_ARGS=(--lengths 8 --samples 2 --text-tokens 32 --text-samples 1 --retrieval-lengths 300
               --retrieval-depths 0.5 --no-causal-checks)
    AOT_ARGS=(--scope gpu-check --targets 90 --jobs 2)
else
    T=(env 30 aot 30 accuracy 45 bandwidth 30 hs4k 55 hslong 45 scan 60)
    ACC_ARGS=(--device cuda); BW_ARGS=(--repeats 5)
    HS4K=(--lengths 4096 --repeats 2 --timeout 50); HSLONG=(--lengths 16384,32768 --repeats 2 --timeout 45)
    SCAN_ARGS=()
    CAP=$("$PY" -c "import torch; c = torch.cuda.get_device_capability(); print(c[0] * 10 + c[1])" 2>/dev/null || echo 90)
    AOT_ARGS=(--scope gpu-check --targets "$CAP" --jobs 16)
fi
lim() { local i; for ((i = 0; i < ${#T[@]}; i += 2)); do [ "${T[$i]}" = "$1" ] && echo "${T[$((i + 1))]}"; done; }

step env "$(lim env)" "env/versions.txt env/log.txt" -- bash -c "
    { date -u; uname -a; nproc; nvidia-smi 2>&1 || echo 'nvidia-smi: not available';
      '$PY' -c 'import sys, torch, triton, transformers; import interp.kernels as k;
print(sys.version); print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available());
print(\"triton\", triton.__version__, \"transformers\", transformers.__version__);
print(torch.cuda.get_device_properties(0) if torch.cuda.is_available() else \"no CUDA device\")';
      '$PY' -c 'import interp; interp.load(\"smollm2-135m\"); print(\"smollm2-135m loads\")'; } > '$OUT/env/versions.txt' 2>&1
    grep -q 'smollm2-135m loads' '$OUT/env/versions.txt'"

step aot "$(lim aot)" "aot/triton_aot.md aot/triton_aot.json aot/log.txt" -- \
    "$PY" benchmarks/triton_aot.py "${AOT_ARGS[@]}" --out "$OUT/aot/triton_aot.md" --quiet

step accuracy "$(lim accuracy)" "accuracy/triton_accuracy.md accuracy/triton_accuracy.json accuracy/log.txt" -- \
    "$PY" benchmarks/triton_accuracy.py "${ACC_ARGS[@]}" --out "$OUT/accuracy"

step bandwidth "$(lim bandwidth)" "bandwidth/triton_bandwidth_cuda.md bandwidth/triton_bandwidth_cuda.json bandwidth/log.txt" -- \
    "$PY" benchmarks/triton_bandwidth.py "${BW_ARGS[@]}" --out "$OUT/bandwidth"

step head_scan_4k "$(lim hs4k)" "head_scan_4k/head_scan_cuda.md head_scan_4k/head_scan_cuda.json head_scan_4k/log.txt" -- \
    "$PY" benchmarks/head_scan.py --device "$DEVICE" "${HS4K[@]}" --methods sdpa,sdpa_stop,interp,hf_eager,tl \
    --out "$OUT/head_scan_4k"

step head_scan_long "$(lim hslong)" "head_scan_long/head_scan_cuda.md head_scan_long/head_scan_cuda.json head_scan_long/log.txt" -- \
    "$PY" benchmarks/head_scan.py --device "$DEVICE" "${HSLONG[@]}" --methods sdpa,sdpa_stop,interp \
    --out "$OUT/head_scan_long"

step scan "$(lim scan)" "scan/smollm2/report.html scan/smollm2/head_scores.parquet scan/smollm2/head_scores.json scan/log.txt" -- \
    "$PY" -c 'import sys; from interp.cli import main; sys.exit(main(sys.argv[1:]))' \
    heads smollm2-135m --device "$DEVICE" --out "$OUT/scan/smollm2" --quiet "${SCAN_ARGS[@]}"

TOTAL=$(( $(date +%s) - START ))
printf '\nTotal: %s s; %s step(s) failed.\n' "$TOTAL" "$FAILED" >> "$SUMMARY"
echo
cat "$SUMMARY"
if [ "$DRY" = 1 ]; then
    echo
    echo "Dry run: every step ran at tiny sizes on the CPU in $TOTAL s (its files: $OUT)."
    echo "A real run (bash benchmarks/gpu_check.sh --out $REAL_OUT) would write:"
    printf '  %s\n' "${PLANNED[@]}"
fi
exit "$FAILED"
