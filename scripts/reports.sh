#!/usr/bin/env bash
# Regenerate the committed cross-validation reports on the real proxies (docs/reports/cries,
# docs/reports/cats): CGANet (default recipe) against SVM and FLDA on the same grouped 5 folds.
# The synthetic report comes with the demo model (scripts/demo_model.sh).
# The budget fits the 2-core development machine (about 15 min per data set); override it
# through the environment, e.g. EPOCHS=500 PATIENCE= RECIPE=paper on a GPU machine.
# The committed cats report also has the paper's segment split and Table 2:
#   ONLY=cats SPLIT_MODES=encounter,segment ABLATION=encounter scripts/reports.sh   (about 60 min)
# A stopped run resumes: finished folds are kept in docs/reports/NAME/.folds/ (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."

PANDAPULSE=${PANDAPULSE:-.venv/bin/pandapulse}
SHARED=${SHARED:-../shared/data}
CACHE=${CACHE:-build/cache}            # feature caches (shared/ is read-only in CI)
RECIPE=${RECIPE:-default}
EPOCHS=${EPOCHS:-30}
PATIENCE=${PATIENCE-8}
FOLDS=${FOLDS:-5}
SPLIT_MODES=${SPLIT_MODES:-encounter}
ABLATION=${ABLATION:-}                 # split modes that get Table 2, e.g. encounter (slower)
ONLY=${ONLY:-cries cats}

if [ -n "$ABLATION" ]; then ablation=(--ablation-modes "$ABLATION"); else ablation=(--no-ablation); fi

for name in $ONLY; do
    case "$name" in
        cries) title="Infant cries (14 babies): pain vs discomfort" ;;
        cats) title="CatMeows (14 cats): isolation vs food or brushing" ;;
        *) echo "unknown report $name (cries, cats)" >&2; exit 2 ;;
    esac
    echo "== evaluate $name -> docs/reports/$name"
    "$PANDAPULSE" evaluate "$SHARED/$name" --out "docs/reports/$name" --cache-dir "$CACHE/$name" \
        --recipe "$RECIPE" --epochs "$EPOCHS" ${PATIENCE:+--patience "$PATIENCE"} \
        --folds "$FOLDS" --split-modes "$SPLIT_MODES" \
        "${ablation[@]}" \
        --title "$title" --no-progress
done
