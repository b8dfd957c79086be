#!/usr/bin/env bash
# The GPU checks, as one prepared run on a machine with an NVIDIA GPU (BENCHMARKS.md, "GPU
# (CUDA)", says what it measured and where):
#   1. bench/gpu_bench.py: the demo model on CUDA in fp32, bf16 and fp16, answers and speed;
#   2. the paper's full schedule (recipe paper: 500 epochs, 5 grouped folds) on CatMeows with
#      CUDA, written to docs/reports/cats-paper-cuda beside the CPU report;
#   3. bench/latency_bench.py with the service's inference on CUDA: live capacity and the
#      one-hour /predict.
# Each step has its own time limit and log, and one that fails does not stop the others.
#
# The machine may lack the project's packages and data: bring them in the working tree first
# (the device tool carries the checkout, not ../shared), all optional:
#   .whl/          wheels of the missing packages, installed to /tmp/site unless NO_WHEELS is
#                  set (python3 -m pip
#                  download --python-version 3.12 ...: see the device tool's README)
#   .gpu/cats/     a copy of ../shared/data/cats
#   .gpu/heldout.pkl.gz   python bench/gpu_bench.py --export-datasets .gpu/heldout.pkl.gz
# Usage: OUT=/some/dir bash bench/gpu_run.sh   (SMOKE=1 DEVICE=cpu: a minute-long trial on a CPU)
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-build/gpu-out}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
CATS=${CATS:-.gpu/cats}
[ -d "$CATS" ] || CATS=../shared/data/cats
HELDOUT=${HELDOUT:-.gpu/heldout.pkl.gz}
SMOKE=${SMOKE:-}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if [ -z "${NO_WHEELS:-}" ] && compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi

step() {  # step NAME SECONDS COMMAND...: run it under a limit, log to $OUT/NAME.log
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    echo "== $name (limit $limit s) at $(date -u +%T)"
    timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    echo "   rc $rc after $((SECONDS - start)) s; log tail:"
    tail -n "${TAIL:-25}" "$OUT/$name.log" | sed 's/^/   | /'
}

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    lscpu | grep -E 'Model name|^CPU\(s\)'
    "$PY" -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())'
} 2>&1 | tee "$OUT/machine.log"

if [ -n "$SMOKE" ]; then
    step gpu_bench 120 "$PY" bench/gpu_bench.py --datasets "$HELDOUT" --rounds 2 --no-write
    step paper_cats 300 "$PY" -m service.cli evaluate "$CATS" --quick --device "$DEVICE" \
        --cache-dir /tmp/pp-cats-cache --out "$OUT/cats-smoke" --no-progress
    step live 300 "$PY" bench/latency_bench.py --no-latency --sources 2 --window 5 --no-predict \
        --no-write
    exit 0
fi

# Within DEADLINE seconds of the start (the device tool allows 600 per command): the short
# measurement first, then the paper's schedule, then the live service with what is left.
DEADLINE=${DEADLINE:-575}
step gpu_bench "${GPU_BENCH_S:-90}" "$PY" bench/gpu_bench.py --datasets "$HELDOUT" --rounds 10
step paper_cats "${PAPER_S:-270}" "$PY" -m service.cli evaluate "$CATS" --recipe paper \
    --device "$DEVICE" --split-modes encounter --no-ablation --no-progress \
    --cache-dir /tmp/pp-cats-cache --out docs/reports/cats-paper-cuda \
    --title "CatMeows (14 cats): isolation vs food or brushing; the paper's schedule on CUDA"
step live $((DEADLINE - SECONDS - 10)) "$PY" bench/latency_bench.py --no-latency \
    --sources "${SOURCES:-64,128}" --window "${WINDOW:-15}"
tar czf "$OUT/results.tgz" BENCHMARKS.md $(ls -d docs/reports/cats-paper-cuda 2>/dev/null)
echo "== done at $(date -u +%T)"
