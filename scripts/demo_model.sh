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
ENCOUNTERS=${ENCOUNTERS:-48}
SEED=${SEED:-1}
EPOCHS=${EPOCHS:-6}                    # the paper: 500 (out of reach on a 2-core CPU)
PATIENCE=${PATIENCE:-3}                # early stopping, epochs without a better validation result
MAX_SEGMENTS=${MAX_SEGMENTS-600}       # random subsample for training; empty: all segments
EVAL_EPOCHS=${EVAL_EPOCHS:-3}
EVAL_MAX_SEGMENTS=${EVAL_MAX_SEGMENTS-240}
TEST_ENCOUNTERS=${TEST_ENCOUNTERS:-24}    # a held-out synthetic set with its own seed
TEST_SEED=${TEST_SEED:-2}
MODEL=${MODEL:-model/assets/demo-model.safetensors}
REPORT=${REPORT:-docs/reports/synthetic}

data="$WORK/synth-${ENCOUNTERS}-s${SEED}"
if [[ ! -f "$data/manifest.csv" ]]; then
    echo "== synth: $ENCOUNTERS encounters, seed $SEED -> $data"
    "$PANDAPULSE" synth "$data" --encounters "$ENCOUNTERS" --seed "$SEED"
fi

echo "== train -> $MODEL"
"$PANDAPULSE" train "$data" --out "$MODEL" --epochs "$EPOCHS" --patience "$PATIENCE" \
    ${MAX_SEGMENTS:+--max-segments "$MAX_SEGMENTS"} --seed 0 --no-progress

echo "== evaluate -> $REPORT"
"$PANDAPULSE" evaluate "$data" --out "$REPORT" --epochs "$EVAL_EPOCHS" \
    ${EVAL_MAX_SEGMENTS:+--max-segments "$EVAL_MAX_SEGMENTS"} --ablation-modes encounter \
    --title "Synthetic giant panda encounters ($ENCOUNTERS encounters, seed $SEED): success vs failure" \
    --no-progress

test_data="$WORK/synth-${TEST_ENCOUNTERS}-s${TEST_SEED}"
if [[ ! -f "$test_data/manifest.csv" ]]; then
    echo "== synth (held-out test set): $TEST_ENCOUNTERS encounters, seed $TEST_SEED -> $test_data"
    "$PANDAPULSE" synth "$test_data" --encounters "$TEST_ENCOUNTERS" --seed "$TEST_SEED"
fi
echo "== held-out test of $MODEL -> $REPORT/test.md"
"$PANDAPULSE" evaluate "$test_data" --out "$REPORT" --checkpoint "$MODEL"

echo "== done: $MODEL, $REPORT/report.md, $REPORT/test.md"
