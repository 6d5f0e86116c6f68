#!/usr/bin/env bash
# The measured comparison on this machine: SVAMP, offline teacher (Qwen2.5-Coder-0.5B)
# and student (SmolLM2-135M), fixed seed, the same test questions for every arm:
#   base student, one-shot (UNDO's iteration 0), one-shot with matched steps, UNDO per iteration,
# with paired bootstrap 95% intervals. Runs end to end; safe to run in the background:
#   nohup bash bench/quality.sh > bench/out/quality.log 2>&1 &
# Re-running resumes every run (teacher calls are cached). Sizes: QUALITY_TRAIN etc.
set -euo pipefail
cd "$(dirname "$0")/.."
UNDO=${UNDO:-.venv/bin/undo}
OUT=${QUALITY_OUT:-bench/out}
TRAIN=${QUALITY_TRAIN:-30}
VAL=${QUALITY_VAL:-10}
TEST=${QUALITY_TEST:-60}
ITERS=${QUALITY_ITERS:-1}
export HF_HUB_OFFLINE=1
COMMON=(configs/demo.yaml "task.source=../shared/data/svamp" "output.dir=$OUT" seed=0
        "splits.train=$TRAIN" "splits.val=$VAL" "splits.test=$TEST"
        teacher.max_attempts=1 teacher.max_tokens=320 student.max_new_tokens=192
        train.epochs=3 train.lr=1e-3 train.batch_size=4 loop.val_errors_shown=4)
start=$(date +%s)
# patience high: measure every iteration up to ITERS instead of stopping early
$UNDO run "${COMMON[@]}" name=q-undo "loop.max_iterations=$ITERS" loop.patience=99
$UNDO run "${COMMON[@]}" name=q-oneshot-matched loop.method=oneshot loop.eval_base=false \
  "train.match_steps_of=$OUT/q-undo"
arms=("$OUT/q-undo@0" "$OUT/q-undo@base" "$OUT/q-oneshot-matched")
for k in $(seq 1 "$ITERS"); do
  [ -f "$OUT/q-undo/iter_$k/metrics.json" ] && arms+=("$OUT/q-undo@$k")
done
$UNDO compare "${arms[@]}" | tee "$OUT/quality_compare.txt"
echo "sizes: train=$TRAIN val=$VAL test=$TEST iterations=0..$ITERS; wall $(( $(date +%s) - start )) s" \
  | tee -a "$OUT/quality_compare.txt"
