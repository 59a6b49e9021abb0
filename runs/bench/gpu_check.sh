#!/bin/bash
# One GPU check (issues 16 and 19): the `cuda` tests and every row of issue 19's speed table, each
# section under its own time limit and error trap, so that one failure never loses the rest; at most
# about 10 minutes on one H200. Prints one table: figure, GPU value, CPU value (see
# runs/bench/gpu_check_cpu.json, measured beforehand with the same rows on one CPU core) and the GPU/CPU speed-up.
#
#   bash runs/bench/gpu_check.sh [OUTDIR]      # from the repository root; no `pip install -e` needed
#
# OUTDIR (default $OUT, else runs/out/gpu_check) receives table.txt, rows.jsonl and logs.txt.
# DEVICE=cpu runs the rows on the CPU instead (a smoke test of this script), BUDGET=S changes the budget.
set -u
cd "$(dirname "$0")/../.."
OUT_DIR=${1:-${OUT:-runs/out/gpu_check}}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 CUBLAS_WORKSPACE_CONFIG=:4096:8 OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
PY=${PYTHON:-python3}
ROWS="$OUT_DIR/rows.jsonl"; LOG="$OUT_DIR/logs.txt"; TABLE="$OUT_DIR/table.txt"
: > "$ROWS"; : > "$LOG"
START=$(date +%s); BUDGET=${BUDGET:-570}      # seconds for all sections together (H200, 2026-12-04: the cuda tests take ~330 s)

section() {  # section NAME LIMIT_S COMMAND...: run with a limit (cut to the budget left), log, never abort
    local name=$1 limit=$2; shift 2
    local left=$((BUDGET - ($(date +%s) - START)))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -le 5 ]; then   # empty output, so that row() records no stale lines of the section before
        : > "$OUT_DIR/.section.out"; echo "== $name: skipped, budget spent" | tee -a "$LOG"; return 124; fi
    local t0=$(date +%s) rc
    echo "== $name (limit ${limit} s): $*" >> "$LOG"
    timeout -k 5 "$limit" "$@" > "$OUT_DIR/.section.out" 2>&1; rc=$?
    cat "$OUT_DIR/.section.out" >> "$LOG"
    echo "== $name: rc=$rc after $(($(date +%s) - t0)) s" | tee -a "$LOG"
    return $rc
}

row() {  # row NAME LIMIT_S: one section of runs/bench/gpu_rows.py; its JSON lines go to rows.jsonl
    local name=$1 rc
    section "$name" "$2" "$PY" runs/bench/gpu_rows.py "$name" --device "${DEVICE:-cuda}"; rc=$?
    grep '^{' "$OUT_DIR/.section.out" >> "$ROWS" 2>/dev/null
    [ "$rc" -ne 0 ] && echo "{\"key\": \"$name\", \"error\": \"rc $rc (124: time limit); see logs.txt\"}" >> "$ROWS"
    return 0
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
} > "$OUT_DIR/.section.out" 2>&1
cat "$OUT_DIR/.section.out" | tee -a "$LOG"

# issue 19's unmet flow targets first (new in this run; ~335 s at most, mostly compilation): the step
# profile, training with accel.compile off / nets / flow, proposals in float64 and float32, ESS of bf16
# against fp32 training
if [ "${DEVICE:-cuda}" = cpu ]; then SMALL="--L 8 --batch 16 --proposals 16"; else SMALL=""; fi
section flow_profile 45 "$PY" runs/bench/flow_step_profile.py --device "${DEVICE:-cuda}" --time-limit 40 $SMALL
row flow_train_eager 40
row flow_train_nets 60
row flow_train_flow 100
row flow_proposals 50
row flow_ess 40

PER_TEST=$("$PY" -c "import pytest_timeout" 2>/dev/null && echo "--timeout=60")   # no test may eat the rest
section cuda_tests 360 "$PY" -m pytest -v --tb=short -m cuda -p no:cacheprovider $PER_TEST tests/test_cuda.py; rc=$?
summary=$(tail -n 1 "$OUT_DIR/.section.out" | tr -d '"=' | sed 's/^ *//' | cut -c1-60)
passed=$(echo "$summary" | grep -o '[0-9]* passed' | grep -o '[0-9]*' || echo 0)
if [ "$rc" -eq 0 ]; then
    echo "{\"key\": \"cuda_tests\", \"what\": \"cuda tests: $summary\", \"value\": ${passed:-0}, \"unit\": \"passed\", \"setting\": \"pytest -m cuda\"}" >> "$ROWS"
else
    echo "{\"key\": \"cuda_tests\", \"error\": \"rc $rc: $summary\"}" >> "$ROWS"
fi
row phi4_hmc 50
row phi4_train 60
row phi4_sample 25
row su3_force 110
row gauge_proposals 80
row l32_card 25
rm -f "$OUT_DIR/.section.out"

"$PY" runs/bench/gpu_rows.py table "$ROWS" runs/bench/gpu_check_cpu.json > "$TABLE" 2>> "$LOG"
{ echo; echo "GPU check, $(date -u +%F), total $(($(date +%s) - START)) s"; head -n 2 "$LOG"; cat "$TABLE"; } | tee -a "$LOG"
