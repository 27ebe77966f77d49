#!/usr/bin/env bash
# Continue the distilled student (session 7's recipe) on a lent GPU: one call of the device tool.
#   IN/init  a checkpoint to continue (bf16 pack is fine: load_checkpoint upcasts)
#   IN/data  {cf,conala,nl2bash}/{train,dev}.jsonl  (the teacher-distilled programs; dev: the original rows)
# Packs the result in bf16 and splits it into pieces under 16 MB (the device tool's per-file limit) in OUT;
# join them with `cat OUT/model.part.* > model.safetensors`. Then fit the length head on the CPU.
# REPEAT (e.g. conala=2,cf=4) is passed to --repeat. T_SAMPLING=high (default) clips t as session 8 did
# (80% of rows from t ≥ 0.7·T, drawn towards high noise); T_SAMPLING=uniform draws t uniformly, so the
# low-noise steps, 70% of a 1200-step loop, get 70% of the training rows instead of 9%.
# Unless EVAL=0, the result is judged in the same call at 1200 steps on every dev split (Bash: its first
# BASH_LIMIT rows, 200; Python: PY_LIMIT, all when empty), with each sampler of CLAMPS ("none": the reference
# sampler, the default; "none decode" adds the rounded one, OUT/eval_LANG_CLAMP.json); TRAJ=1 (default) also
# traces CF's x̂0 along the loop (`codefusion bench trajectory`): session 13's CPU students parsed at 20
# steps and broke at 1200. ROLLOUT_SHARE / ROLLOUT_STEPS pass --rollout-share / --rollout-steps (engine/train/rollout.py).
set -euo pipefail
IN=${1:?input folder}; OUT=${2:?output folder}; MINUTES=${3:-6}; BATCH=${BATCH:-256}; LR=${LR:-8e-4}
DEVICE=${DEVICE:-cuda}; MAX_STEPS=${MAX_STEPS:-}; REPEAT=${REPEAT:-}; EVAL=${EVAL:-1}; T_SAMPLING=${T_SAMPLING:-high}
BASH_LIMIT=${BASH_LIMIT:-200}; PY_LIMIT=${PY_LIMIT:-}; TRAJ=${TRAJ:-1}; EVAL_STEPS=${EVAL_STEPS:-1200}
CLAMPS=${CLAMPS:-none}; ROLLOUT_SHARE=${ROLLOUT_SHARE:-}; ROLLOUT_STEPS=${ROLLOUT_STEPS:-}
case "$T_SAMPLING" in
  high) t_args="--t-sampling high --t-min 0.7 --t-min-share 0.8" ;;
  uniform) t_args="--t-sampling uniform" ;;
  *) echo "error: T_SAMPLING must be high or uniform, got '$T_SAMPLING'" >&2; exit 2 ;;
esac
work=$(mktemp -d)
python3 -m codefusion.cli train --task finetune --init "$IN/init" --freeze-encoder --data "$IN/data" --out "$work/st" \
  --minutes "$MINUTES" ${MAX_STEPS:+--max-steps $MAX_STEPS} ${REPEAT:+--repeat $REPEAT} --batch-size "$BATCH" --lr "$LR" --warmup 100 \
  $t_args ${ROLLOUT_SHARE:+--rollout-share $ROLLOUT_SHARE} ${ROLLOUT_STEPS:+--rollout-steps $ROLLOUT_STEPS} \
  --dev-every 100000 --dev-rows 0 --seed 12 --device "$DEVICE" \
  --save-minutes 2 2>&1 | tr '\r' '\n' | grep -v 'it/s\|s/it' | tail -15
python3 -m codefusion.cli pack --model "$work/st" --out "$work/pk" --dtype bfloat16
mkdir -p "$OUT"
split -b 15000000 "$work/pk/model.safetensors" "$OUT/model.part."
cp "$work/pk/config.json" "$work/st/train_log.jsonl" "$OUT/"
if [[ "$EVAL" != 0 ]]; then
  for clamp in $CLAMPS; do
    for spec in "cf cf" "python conala ${PY_LIMIT:+--limit $PY_LIMIT}" "bash nl2bash --limit $BASH_LIMIT"; do
      set -- $spec; lang=$1; ds=$2; shift 2
      python3 -m codefusion.cli eval --model "$work/st" --data "$IN/data/$ds/dev.jsonl" --lang "$lang" "$@" \
        --steps "$EVAL_STEPS" --clamp "$clamp" --backend torch --dtype bfloat16 --device "$DEVICE" --seed 0 --json \
        > "$OUT/eval_${lang}_${clamp}.json"
    done
  done
  if [[ "$TRAJ" != 0 ]]; then
    python3 -m codefusion.cli bench trajectory --model "$work/st" --baseline-model "$IN/init" --data "$IN/data/cf/dev.jsonl" \
      --lang cf --steps "$EVAL_STEPS" --device "$DEVICE" --out "$OUT" --json > /dev/null
  fi
fi
ls -la "$OUT"
