#!/usr/bin/env bash
# Rebuild the committed demo model and its evaluation report from nothing:
#   pandapulse synth -> pandapulse train -> pandapulse evaluate
# Trained on synthetic encounters only: a demonstration model, never for real decisions.
# The settings are the committed model's (docs/model-card.md); override them through the
# environment, e.g. EPOCHS=500 MAX_SEGMENTS= on a GPU machine for the paper's schedule.
set -euo pipefail
cd "$(dirname "$0")/.."

PANDAPULSE=${PANDAPULSE:-.venv/bin/pandapulse}
WORK=${WORK:-build/demo-data}          # synthetic recordings and feature cache (not committed)
ENCOUNTERS=${ENCOUNTERS:-640}
SEED=${SEED:-1}
GROUP=${GROUP:-pair}                   # held-out validation and CV folds by pair: unseen animals
RECIPE=${RECIPE:-default}              # model/train.py; RECIPE=paper EPOCHS=500 for the paper's
EPOCHS=${EPOCHS:-12}
PATIENCE=${PATIENCE-4}                 # early stopping, epochs without a better validation AUC
MAX_SEGMENTS=${MAX_SEGMENTS-}          # random subsample for training; empty: all segments
EVAL_EPOCHS=${EVAL_EPOCHS:-12}
EVAL_MAX_SEGMENTS=${EVAL_MAX_SEGMENTS-2000}
TEST_ENCOUNTERS=${TEST_ENCOUNTERS:-200}    # a held-out synthetic set with its own seed
TEST_SEED=${TEST_SEED:-4}
MODEL=${MODEL:-model/assets/demo-model.safetensors}
REPORT=${REPORT:-docs/reports/synthetic}
WORKERS=${WORKERS:-$(nproc)}       # synthesis processes (the output does not depend on them)
SKIP_CV=${SKIP_CV:-}                   # non-empty: train and test only, no cross validation

data="$WORK/synth-${ENCOUNTERS}-s${SEED}"
if [[ ! -f "$data/manifest.csv" ]]; then
    echo "== synth: $ENCOUNTERS encounters, seed $SEED -> $data"
    "$PANDAPULSE" synth "$data" --encounters "$ENCOUNTERS" --seed "$SEED" --workers "$WORKERS"
fi

echo "== train -> $MODEL"
"$PANDAPULSE" train "$data" --out "$MODEL" --recipe "$RECIPE" --epochs "$EPOCHS" \
    ${PATIENCE:+--patience "$PATIENCE"} ${MAX_SEGMENTS:+--max-segments "$MAX_SEGMENTS"} \
    --group-col "$GROUP" --seed 0 --no-progress

if [[ -z "$SKIP_CV" ]]; then
    echo "== evaluate -> $REPORT"
    "$PANDAPULSE" evaluate "$data" --out "$REPORT" --recipe "$RECIPE" --epochs "$EVAL_EPOCHS" \
        ${PATIENCE:+--patience "$PATIENCE"} ${EVAL_MAX_SEGMENTS:+--max-segments "$EVAL_MAX_SEGMENTS"} \
        --group-col "$GROUP" --split-modes encounter --no-ablation \
        --title "Synthetic giant panda encounters ($ENCOUNTERS encounters, seed $SEED): success vs failure" \
        --no-progress
fi

test_data="$WORK/synth-${TEST_ENCOUNTERS}-s${TEST_SEED}"
if [[ ! -f "$test_data/manifest.csv" ]]; then
    echo "== synth (held-out test set): $TEST_ENCOUNTERS encounters, seed $TEST_SEED -> $test_data"
    "$PANDAPULSE" synth "$test_data" --encounters "$TEST_ENCOUNTERS" --seed "$TEST_SEED" --workers "$WORKERS"
fi
echo "== held-out test of $MODEL -> $REPORT/test.md"
"$PANDAPULSE" evaluate "$test_data" --out "$REPORT" --checkpoint "$MODEL" --baselines-from "$data"

echo "== done: $MODEL, $REPORT/report.md, $REPORT/test.md"
